"""Moving bytes for the proxy: connecting to the destination, and copying both ways."""

from __future__ import annotations

import asyncio
import contextlib
import ssl

CONNECT_TIMEOUT_S = 30.0
CHUNK_BYTES = 64 * 1024

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def open_upstream(host: str, port: int, *, tls: bool = False) -> Streams:
    """Connect to the destination (TLS with the system's trust store when `tls`); raises
    `OSError` or `TimeoutError`."""
    context = ssl.create_default_context() if tls else None
    server_hostname = host if tls else None
    async with asyncio.timeout(CONNECT_TIMEOUT_S):
        return await asyncio.open_connection(
            host.split("%", 1)[0], port, ssl=context, server_hostname=server_hostname
        )


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
