"""SOCKS5 UDP ASSOCIATE for the managed proxy (RFC 1928 section 7), as codex 0.171's proxy
answers it (facts: docs/protocol.md, Managed network, SOCKS5 UDP).

The association's relay socket is bound on the address the control connection reached (so on
127.0.0.1, never an outside interface) and the reply names it `0.0.0.0:PORT`, as the reference
does. Only datagrams from exactly the address the request named are taken; a datagram with a
non-zero FRAG, a malformed header or a name as its destination is dropped unseen (the reference
relays no names: it has no resolver for them). Every other datagram is one decision, reported as
`network/policyDecision` with protocol `socks5_udp`; limited mode refuses every one. Answers
are checked against the same policy for their source and go back to the client with the header
naming it. A refusal ends the association. The association lives as long as its control
connection; the relay is bounded (`QUEUE_DATAGRAMS` waiting for a decision, and while a socket's
unsent bytes are over asyncio's high-water mark it takes no more); beyond, datagrams are
dropped, as UDP may.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
from dataclasses import dataclass
from typing import cast

from execserver.local.network import relay
from execserver.local.network.decisions import Attempt, Gatekeeper
from execserver.local.network.policy import METHOD_NOT_ALLOWED, normalize_host
from execserver.tasks import TaskOwner

ATYP_IPV4, ATYP_NAME, ATYP_IPV6 = 1, 3, 4
QUEUE_DATAGRAMS = 256
"""Datagrams (both ways) waiting for their decision; more are dropped."""
CONTROL_CHUNK = 4096

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class _Datagram:
    outbound: bool
    """From the client (True) or an answer from a destination (False)."""
    host: str
    port: int
    payload: bytes


class _Endpoint(asyncio.DatagramProtocol):
    """One UDP socket of the association, feeding `queue`."""

    def __init__(self, queue: asyncio.Queue[_Datagram], client: Address | None) -> None:
        self._queue = queue
        self._client = client
        """For the client-facing socket: the only source taken. None: a destination socket."""
        self.transport: asyncio.DatagramTransport | None = None
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if self._client is None:
            item: _Datagram | None = _Datagram(False, addr[0], addr[1], data)
        elif (addr[0], addr[1]) != self._client:
            return
        else:
            item = parse_request(data)
        if item is not None and not self._queue.full():
            self._queue.put_nowait(item)

    def error_received(self, exc: Exception) -> None:
        pass  # an ICMP error for an earlier datagram: UDP loses it

    def send(self, data: bytes, addr: Address) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing() and not self._paused:
            transport.sendto(data, addr)


def parse_request(data: bytes) -> _Datagram | None:
    """The destination and payload of a client's datagram; None for one to drop (a fragment, a
    name, a malformed header)."""
    if len(data) < 4 or data[2] != 0:  # RSV is not checked
        return None
    kind = data[3]
    if kind == ATYP_IPV4 and len(data) >= 10:
        host, rest = socket.inet_ntop(socket.AF_INET, data[4:8]), data[8:]
    elif kind == ATYP_IPV6 and len(data) >= 22:
        host, rest = socket.inet_ntop(socket.AF_INET6, data[4:20]), data[20:]
    else:
        return None
    (port,) = struct.unpack(">H", rest[:2])
    return _Datagram(True, host, port, rest[2:])


def answer_header(host: str, port: int) -> bytes:
    """RSV, FRAG 0 and the answer's source."""
    address = ipaddress.ip_address(host.split("%", 1)[0])
    kind = ATYP_IPV4 if address.version == 4 else ATYP_IPV6
    return b"\0\0\0" + bytes([kind]) + address.packed + struct.pack(">H", port)


class Association:
    """The relay sockets of one UDP ASSOCIATE and the task deciding on its datagrams."""

    def __init__(self, gate: Gatekeeper, client_label: str, client: Address) -> None:
        self._gate = gate
        self._label = client_label
        self._client = client
        self._queue: asyncio.Queue[_Datagram] = asyncio.Queue(QUEUE_DATAGRAMS)
        self._north = _Endpoint(self._queue, client)
        self._south: dict[int, _Endpoint] = {}
        self._loop = asyncio.get_running_loop()

    async def bind(self, local_ip: str) -> int:
        """Bind the client-facing socket on `local_ip`; its port. Raises `OSError`."""
        transport, _ = await self._loop.create_datagram_endpoint(
            lambda: self._north, local_addr=(local_ip, 0)
        )
        port: int = transport.get_extra_info("sockname")[1]
        return port

    async def _south_for(self, host: str) -> _Endpoint:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        endpoint = self._south.get(family)
        if endpoint is None:
            made = _Endpoint(self._queue, None)
            wildcard = "::" if family == socket.AF_INET6 else "0.0.0.0"
            await self._loop.create_datagram_endpoint(
                lambda: made, local_addr=(wildcard, 0), family=family
            )
            self._south[family] = endpoint = made
        return endpoint

    async def run(self) -> None:
        """Decide on and relay datagrams until one is refused (then return)."""
        gate = self._gate
        while True:
            item = await self._queue.get()
            attempt = Attempt("socks5_udp", normalize_host(item.host), item.port, None, self._label)
            if gate.policy.limited:
                gate.refuse_by_mode(attempt, METHOD_NOT_ALLOWED)
                return
            if not (await gate.check_destination(attempt)).allowed:
                return
            if item.outbound:
                try:
                    south = await self._south_for(item.host)
                except OSError:
                    continue  # no socket of that family here: the datagram is lost
                south.send(item.payload, (item.host, item.port))
            else:
                self._north.send(answer_header(item.host, item.port) + item.payload, self._client)

    def close(self) -> None:
        for endpoint in (self._north, *self._south.values()):
            if endpoint.transport is not None:
                endpoint.transport.close()


async def associate(
    streams: relay.Streams, gate: Gatekeeper, client_label: str, client: Address
) -> bool:
    """Serve an accepted UDP ASSOCIATE until the control connection ends or a datagram is
    refused. Returns False (nothing written) if the relay socket cannot be bound; otherwise
    the success reply has been written."""
    reader, writer = streams
    association = Association(gate, client_label, client)
    tasks = TaskOwner(f"SOCKS5 UDP association of {client_label}")
    try:
        local_ip = writer.get_extra_info("sockname")[0]
        try:
            port = await association.bind(local_ip)
        except OSError:
            return False
        writer.write(bytes([5, 0, 0, ATYP_IPV4, 0, 0, 0, 0]) + struct.pack(">H", port))
        relaying = tasks.spawn(association.run())
        watching = tasks.spawn(_until_closed(reader))
        await asyncio.wait((relaying, watching), return_when=asyncio.FIRST_COMPLETED)
        return True
    finally:
        try:
            await tasks.aclose()  # first: a socket being made is then made (or closed) already
        finally:
            association.close()


async def _until_closed(reader: asyncio.StreamReader) -> None:
    """Read (and ignore) the control connection until it ends."""
    with contextlib.suppress(ConnectionError, OSError):
        while await reader.read(CONTROL_CHUNK):
            pass
