"""One rendezvous WebSocket on the relay: its bounded outbox and the tasks that serve it.

`Link.run(read_loop)` owns three activities and returns when all have ended: the caller's
read loop, a writer draining the outbox, and a closer that waits for `request_close()`. A
close request may come from anywhere (the other side of a route, a registration change,
shutdown); it is synchronous, and the closer performs it: it stops the writer (after a
bounded flush when asked), sends the close frame and, if the peer does not complete the
close in time, drops the connection. Memory per socket is bounded by the outbox limit.

Fast path: while the outbox is empty, the writer idle and the socket's transport buffer under
`DIRECT_WRITE_LIMIT`, a frame is written to the transport at once by whoever sends it (the
same unmasked binary frame aiohttp would write) instead of waking the writer task, which
saves a loop iteration per forwarded frame. Order is kept (only an empty, idle outbox is
bypassed) and so is the memory bound (the transport buffer stays at aiohttp's own limit).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import struct
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final, cast

from aiohttp import web

FLUSH_TIMEOUT_S: Final = 2.0
"""How long a close request with `flush=True` waits for queued frames to be written."""
CLOSE_TIMEOUT_S: Final = 5.0
"""How long the closing handshake may take before the connection is dropped."""
DIRECT_WRITE_LIMIT: Final = 64 * 1024
"""Transport buffer (bytes not yet taken by the kernel) above which frames go through the
outbox and the writer, which waits for the transport to drain (aiohttp's chunk limit)."""
_BINARY_FIN: Final = 0x82


def _frame_header(length: int) -> bytes:
    """The header of an unmasked binary frame of `length` bytes (server to client)."""
    if length < 126:
        return bytes((_BINARY_FIN, length))
    if length < 65536:
        return struct.pack("!BBH", _BINARY_FIN, 126, length)
    return struct.pack("!BBQ", _BINARY_FIN, 127, length)


class Outbox:
    """A FIFO of outgoing messages capped at `limit_bytes` queued bytes.

    `offer()` never waits (False when full or closed); `put()` waits for room. A single
    message larger than the limit is accepted into an empty outbox.
    """

    def __init__(self, limit_bytes: int) -> None:
        self._limit = limit_bytes
        self._items: deque[bytes] = deque()
        self._bytes = 0
        self._closed = False
        self._readable = asyncio.Event()
        self._taken = asyncio.Event()

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def empty(self) -> bool:
        return not self._items

    def offer(self, data: bytes, *, force: bool = False) -> bool:
        """Queue `data` unless the outbox is closed or (without `force`) would exceed its
        limit. `force` is for the relay's own small control frames (resets)."""
        if self._closed:
            return False
        if not force and self._items and self._bytes + len(data) > self._limit:
            return False
        self._items.append(data)
        self._bytes += len(data)
        self._readable.set()
        return True

    async def put(self, data: bytes) -> bool:
        """Queue `data`, waiting while the outbox is full. False if it is (or gets) closed.

        Cancellation: safe; `data` was queued only if the call returned True.
        """
        while not self._closed and self._items and self._bytes + len(data) > self._limit:
            self._taken.clear()
            await self._taken.wait()
        return self.offer(data, force=True)

    async def get(self) -> bytes | None:
        """The next message, or None once the outbox is closed and drained.

        Cancellation: safe; no message is lost.
        """
        while not self._items:
            if self._closed:
                return None
            self._readable.clear()
            await self._readable.wait()
        data = self._items.popleft()
        self._bytes -= len(data)
        self._taken.set()
        return data

    def close(self, *, discard: bool) -> None:
        """Accept nothing more; with `discard`, drop what is queued."""
        self._closed = True
        if discard:
            self._items.clear()
            self._bytes = 0
        self._readable.set()
        self._taken.set()


class Endpoint(abc.ABC):
    """One end the router forwards to: a rendezvous WebSocket on this node (`Link`), or a
    socket on another node of the fleet (`fleet_remote`). Send via `offer`/`put`, close via
    `request_close`."""

    role = "socket"

    @property
    @abc.abstractmethod
    def closing(self) -> bool:
        """A close was requested: nothing more is sent."""

    @abc.abstractmethod
    def offer(self, data: bytes, *, force: bool = False) -> bool:
        """Send `data` unless closed or (without `force`) full; never waits."""

    @abc.abstractmethod
    async def put(self, data: bytes) -> bool:
        """Send `data`, waiting while full; False once closed.

        Cancellation: safe; `data` was sent or queued only if the call returned True.
        """

    @abc.abstractmethod
    def request_close(self, code: int | None, *, flush: bool) -> None:
        """Close with `code` (None: the peer already closed), after what is queued if
        `flush`. The first request wins."""

    @property
    def peer_close_code(self) -> int | None:
        """The close code the peer sent, when known (for logs)."""
        return None


class Link(Endpoint):
    """A rendezvous WebSocket on this node."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        outbox_limit_bytes: int,
        transport: asyncio.BaseTransport | None = None,
    ) -> None:
        self.ws = ws
        self.outbox = Outbox(outbox_limit_bytes)
        self.close_code: int | None = None
        self._close_requested = asyncio.Event()
        self._flush = False
        # A stream transport has `write` (uvloop's do not derive from asyncio.WriteTransport).
        writable = transport is not None and callable(getattr(transport, "write", None))
        self._transport = cast(asyncio.WriteTransport, transport) if writable else None
        """The socket's transport, for the fast path (None: always through the writer)."""
        self._writing = False
        """The writer holds a frame it took from the outbox and is sending it."""

    @property
    def closing(self) -> bool:
        return self._close_requested.is_set()

    @property
    def peer_close_code(self) -> int | None:
        return self.ws.close_code

    def offer(self, data: bytes, *, force: bool = False) -> bool:
        return self._write_now(data) or self.outbox.offer(data, force=force)

    async def put(self, data: bytes) -> bool:
        return self._write_now(data) or await self.outbox.put(data)

    def _write_now(self, data: bytes) -> bool:
        """The fast path (see the module docstring); False when it does not apply."""
        transport = self._transport
        outbox = self.outbox
        if (
            transport is None
            or self._writing
            or not outbox.empty
            or outbox.closed
            or self.ws.closed
            or transport.is_closing()
            or transport.get_write_buffer_size() + len(data) > DIRECT_WRITE_LIMIT
        ):
            return False
        transport.write(_frame_header(len(data)) + data)
        return True

    def request_close(self, code: int | None, *, flush: bool) -> None:
        if self._close_requested.is_set():
            return
        self.close_code = code
        self._flush = flush
        self.outbox.close(discard=not flush)
        self._close_requested.set()

    async def run(self, read_loop: Callable[[], Awaitable[None]]) -> None:
        """Serve the socket until it is closed: `read_loop` reads it, the outbox is written.

        Cancellation: the socket is closed and every task of it awaited before this returns.
        """
        try:
            async with asyncio.TaskGroup() as tasks:
                writer = tasks.create_task(self._write())
                tasks.create_task(self._close_when_requested(writer))
                try:
                    await read_loop()
                finally:
                    # The read loop ended: the peer closed, the socket failed, or our own
                    # close woke it up (then this request is ignored).
                    self.request_close(None, flush=False)
        finally:
            if not self.ws.closed:  # cancelled before the closer could finish
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(CLOSE_TIMEOUT_S):
                        await self.ws.close(code=self.close_code or 1001)

    async def _write(self) -> None:
        while (data := await self.outbox.get()) is not None:
            self._writing = True
            try:
                await self.ws.send_bytes(data)
            except (ConnectionError, RuntimeError):
                self.outbox.close(discard=True)
                return
            finally:
                self._writing = False

    async def _close_when_requested(self, writer: asyncio.Task[None]) -> None:
        await self._close_requested.wait()
        if self.close_code is None:
            writer.cancel()
            return
        if self._flush:
            await asyncio.wait({writer}, timeout=FLUSH_TIMEOUT_S)
        writer.cancel()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.ws.close(code=self.close_code)
        except TimeoutError:
            pass  # aiohttp has dropped the connection on the cancellation
        except (ConnectionError, RuntimeError):
            pass


__all__ = ["CLOSE_TIMEOUT_S", "FLUSH_TIMEOUT_S", "Endpoint", "Link", "Outbox"]
