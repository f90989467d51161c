"""The SOCKS5 face of the managed proxy (RFC 1928): no authentication, CONNECT to a name, an
IPv4 or an IPv6 address, one decision per connection, replies as codex 0.171's proxy gives
them (`02` for a refusal, the errno's code for a failed connect, the upstream socket's local
address on success). UDP ASSOCIATE, when `enableSocks5Udp` is set, is served by `socks5_udp`;
BIND, and UDP ASSOCIATE otherwise, are answered `07` (command not supported)."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import struct

from execserver.local.network import relay, socks5_udp
from execserver.local.network.credentials import CredentialBroker
from execserver.local.network.decisions import Attempt, Gatekeeper
from execserver.local.network.policy import METHOD_NOT_ALLOWED, normalize_host

VERSION = 5
NO_AUTH = 0
NO_ACCEPTABLE_METHOD = 0xFF
CMD_CONNECT = 1
CMD_UDP_ASSOCIATE = 3
ATYP_IPV4, ATYP_NAME, ATYP_IPV6 = 1, 3, 4

SUCCEEDED = 0
GENERAL_FAILURE = 1
NOT_ALLOWED_BY_RULESET = 2
NETWORK_UNREACHABLE = 3
HOST_UNREACHABLE = 4
CONNECTION_REFUSED = 5
TTL_EXPIRED = 6
COMMAND_NOT_SUPPORTED = 7
ADDRESS_TYPE_NOT_SUPPORTED = 8

_NO_ADDRESS = bytes([ATYP_IPV4, 0, 0, 0, 0, 0, 0])
_BY_ERRNO = {
    errno.ECONNREFUSED: CONNECTION_REFUSED,
    errno.EHOSTUNREACH: HOST_UNREACHABLE,
    errno.ENETUNREACH: NETWORK_UNREACHABLE,
    errno.ETIMEDOUT: TTL_EXPIRED,
}


class _Malformed(Exception):
    pass


def reply(code: int, bound: bytes = _NO_ADDRESS) -> bytes:
    return bytes([VERSION, code, 0]) + bound


def _bound(sockname: tuple[str, int] | None) -> bytes:
    if not sockname:
        return _NO_ADDRESS
    address = ipaddress.ip_address(sockname[0])
    kind = ATYP_IPV4 if address.version == 4 else ATYP_IPV6
    return bytes([kind]) + address.packed + struct.pack(">H", sockname[1])


async def _read_target(reader: asyncio.StreamReader) -> tuple[int, int, str, int]:
    """(command, address type, host, port) of the request; raises `_Malformed` or
    `IncompleteReadError`."""
    version, command, _reserved, kind = await reader.readexactly(4)
    if version != VERSION:
        raise _Malformed
    if kind == ATYP_IPV4:
        host = socket.inet_ntop(socket.AF_INET, await reader.readexactly(4))
    elif kind == ATYP_IPV6:
        host = socket.inet_ntop(socket.AF_INET6, await reader.readexactly(16))
    elif kind == ATYP_NAME:
        (length,) = await reader.readexactly(1)
        host = (await reader.readexactly(length)).decode("latin-1")
    else:
        raise ValueError(kind)
    (port,) = struct.unpack(">H", await reader.readexactly(2))
    return command, kind, host, port


async def serve(
    streams: relay.Streams,
    gate: Gatekeeper,
    client: str,
    _upstream: relay.UpstreamProxies | None,
    *,
    via: relay.HttpProxy | None = None,
    broker: CredentialBroker | None = None,
) -> None:
    """Serve one client connection: the handshake, the decision, then the relay (direct: the
    executor's HTTP proxies are for HTTP and CONNECT; through `via`, the mandatory TCP
    upstream of `--tcp-upstream-proxy`, when given). With a `broker`, a connection to a host
    its credentials are bound to is intercepted as TLS (mitm.py), as the reference does."""
    reader, writer = streams
    try:
        version, count = await reader.readexactly(2)
        methods = await reader.readexactly(count)
        if version != VERSION:
            return
        if NO_AUTH not in methods:
            writer.write(bytes([VERSION, NO_ACCEPTABLE_METHOD]))
            return
        writer.write(bytes([VERSION, NO_AUTH]))
        try:
            command, kind, host, port = await _read_target(reader)
        except ValueError:
            writer.write(reply(ADDRESS_TYPE_NOT_SUPPORTED))
            return
        if command == CMD_UDP_ASSOCIATE and gate.policy.socks5_udp:
            if kind == ATYP_NAME:  # the client's own address must be an address
                writer.write(reply(ADDRESS_TYPE_NOT_SUPPORTED))
            elif not await socks5_udp.associate(streams, gate, client, (host, port)):
                writer.write(reply(GENERAL_FAILURE))
            return
        if command != CMD_CONNECT:
            writer.write(reply(COMMAND_NOT_SUPPORTED))
            return
        attempt = Attempt("socks5_tcp", normalize_host(host), port, None, client)
        if gate.policy.limited:  # a raw stream would bypass the method rules
            gate.refuse_by_mode(attempt, METHOD_NOT_ALLOWED)
            writer.write(reply(NOT_ALLOWED_BY_RULESET))
            return
        verdict = await gate.check_destination(attempt)
        if not verdict.allowed:
            writer.write(reply(NOT_ALLOWED_BY_RULESET))
            return
        if broker is not None and broker.intercepts(host, port):
            from execserver.local.network import certs, mitm

            context = await mitm.server_context(certs.authority(), host)
            writer.write(reply(SUCCEEDED))
            # No await before this: the client's TLS handshake must reach the TLS layer.
            await mitm.intercept(
                streams,
                attempt,
                context=context,
                broker=broker,
                via=via,
                method_allowed=gate.policy.method_allowed,
            )
            return
        try:
            destination = await relay.open_upstream(host, port, via=via)
        except TimeoutError:
            writer.write(reply(TTL_EXPIRED))
            return
        except OSError as exc:
            writer.write(reply(_BY_ERRNO.get(exc.errno or 0, GENERAL_FAILURE)))
            return
        try:
            writer.write(reply(SUCCEEDED, _bound(destination[1].get_extra_info("sockname"))))
            await relay.splice(streams, destination)
        finally:
            await relay.close(destination[1])
    except (_Malformed, asyncio.IncompleteReadError, ConnectionError, OSError):
        pass
