"""Moving bytes for the proxy: connecting to the destination (directly, or through the
executor's own HTTP proxy when the launch allows an upstream proxy), and copying both ways."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from execserver.local.network.policy import is_local_literal

CONNECT_TIMEOUT_S = 30.0
CHUNK_BYTES = 64 * 1024

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


MAX_PROXY_HEAD_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class HttpProxy:
    """An upstream HTTP proxy (only `http://` proxies are used, as the reference does)."""

    host: str
    port: int


class UpstreamProxies:
    """The executor's own proxy settings (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` in either
    case, `NO_PROXY`), read once from the executor's environment."""

    def __init__(self, env: Mapping[str, str]) -> None:
        def first(*names: str) -> HttpProxy | None:
            for name in names:
                for spelled in (name.lower(), name):
                    value = env.get(spelled)
                    if value:
                        return _http_proxy(value)
            return None

        self._http = first("HTTP_PROXY", "ALL_PROXY")
        self._https = first("HTTPS_PROXY", "ALL_PROXY")
        self._no_proxy = env.get("no_proxy") or env.get("NO_PROXY") or ""

    def for_target(self, host: str, *, tls: bool) -> HttpProxy | None:
        """The proxy to reach `host` through (`tls`: an encrypted or tunnelled connection).
        Local and private addresses are reached directly, as the reference does (observed:
        `localhost`, 127.0.0.0/8, ::1, 10/8, 192.168/16 never went upstream, a public address
        did), and so are the hosts `NO_PROXY` names."""
        proxy = self._https if tls else self._http
        if proxy is None or is_local_literal(host) or _bypassed(host, self._no_proxy):
            return None
        return proxy


def _bypassed(host: str, no_proxy: str) -> bool:
    """Whether `NO_PROXY` names `host`: `*`, the name or a parent domain, an address or the
    network it is in (`10.0.0.0/8`)."""
    for entry in (item.strip().lower() for item in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        if "/" in entry:
            try:
                if ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        name = entry.lstrip(".").strip("[]")
        if host == name or host.endswith("." + name):
            return True
    return False


def _http_proxy(value: str) -> HttpProxy | None:
    parsed = urllib.parse.urlsplit(value if "://" in value else "http://" + value)
    try:
        port = parsed.port or 80
    except ValueError:
        return None
    if parsed.scheme != "http" or not parsed.hostname:
        return None
    return HttpProxy(parsed.hostname, port)


async def open_upstream(
    host: str, port: int, *, tls: bool = False, via: HttpProxy | None = None
) -> Streams:
    """Connect to the destination (TLS with the system's trust store when `tls`), through a
    CONNECT tunnel of `via` if given; raises `OSError` or `TimeoutError`."""
    context = ssl.create_default_context() if tls else None
    server_hostname = host if tls else None
    async with asyncio.timeout(CONNECT_TIMEOUT_S):
        if via is None:
            return await asyncio.open_connection(
                host.split("%", 1)[0], port, ssl=context, server_hostname=server_hostname
            )
        reader, writer = await asyncio.open_connection(via.host, via.port)
        try:
            await _tunnel_through(reader, writer, host, port)
            if context is not None:
                await writer.start_tls(context, server_hostname=server_hostname)
        except BaseException:
            writer.close()
            raise
        return reader, writer


async def _tunnel_through(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int
) -> None:
    """Ask the upstream proxy for a tunnel; raises `ConnectionRefusedError` if it declines."""
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    writer.write(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        raise ConnectionRefusedError(
            errno.ECONNREFUSED, "the upstream proxy gave no tunnel"
        ) from None
    status = head.split(b" ", 2)[1:2]
    if status != [b"200"]:
        raise ConnectionRefusedError(errno.ECONNREFUSED, "the upstream proxy refused the tunnel")


async def open_proxy(via: HttpProxy) -> Streams:
    """A connection to an upstream HTTP proxy (a plain request is then sent in absolute form)."""
    async with asyncio.timeout(CONNECT_TIMEOUT_S):
        return await asyncio.open_connection(via.host, via.port)


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of stream, then half-close `writer` (a reset ends the copy too)."""
    try:
        while data := await reader.read(CHUNK_BYTES):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


async def splice(client: Streams, upstream: Streams, already: bytes = b"") -> None:
    """Relay both ways until both directions have ended; `already` (bytes the client sent
    ahead) goes upstream first."""
    if already:
        upstream[1].write(already)
    await asyncio.gather(pipe(client[0], upstream[1]), pipe(upstream[0], client[1]))


async def close(writer: asyncio.StreamWriter) -> None:
    """Close a stream, waiting briefly for the close to complete.

    Cancellation: the transport is closed before the first await."""
    writer.close()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1.0):
            await writer.wait_closed()
