"""An in-memory pair of message channels, for unit tests of the RPC core and its users.

Each side's `send()` queues the message for the other side, delivered on a later loop turn, so
ordering, pausing, congestion and an end from either side behave as on a real connection.
"""

from __future__ import annotations

import asyncio
from collections import deque

from execserver.transport.base import FlowControl, MessageReceiver

HIGH_WATER_BYTES = 1024 * 1024
LOW_WATER_BYTES = 256 * 1024


class MemoryChannel(FlowControl):
    """One end of `memory_pair()`. Attach a receiver with `open(receiver)`."""

    def __init__(self, label: str, *, high_water: int = HIGH_WATER_BYTES) -> None:
        super().__init__()
        self.label = label
        self.peer: MemoryChannel | None = None
        self._receiver: MessageReceiver | None = None
        self._inbox: deque[bytes] = deque()
        self._inbox_bytes = 0
        self._high_water = high_water
        self._low_water = min(LOW_WATER_BYTES, high_water // 4)
        self._paused = False
        self._scheduled = False
        self._ended = False
        self._closing = False
        self._lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def open(self, receiver: MessageReceiver) -> None:
        """Start delivering to `receiver` (messages sent before are kept until then)."""
        self._receiver = receiver
        self._schedule()

    # -- MessageChannel ------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        peer = self.peer
        if self._ended or self._closing or peer is None or peer._ended:
            return
        peer._enqueue(bytes(data))
        if peer._inbox_bytes > self._high_water and not self.is_congested():
            self.pause_writing()

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        self._paused = False
        self._schedule()

    def close(self) -> None:
        """The peer receives what was sent, then the end; this side ends at once."""
        if self._ended:
            return
        self._closing = True
        if self.peer is not None:
            self.peer._enqueue(None)
        self._end()

    def abort(self) -> None:
        if self._ended:
            return
        if self.peer is not None:
            self.peer._end()
        self._end()

    # -- inside --------------------------------------------------------------------------------

    def _enqueue(self, data: bytes | None) -> None:
        if self._ended:
            return
        if data is None:
            self._closing = True
        else:
            self._inbox.append(data)
            self._inbox_bytes += len(data)
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled and self._receiver is not None:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._deliver)

    def _deliver(self) -> None:
        self._scheduled = False
        while self._inbox and not self._paused and not self._ended:
            data = self._inbox.popleft()
            self._inbox_bytes -= len(data)
            assert self._receiver is not None
            self._receiver.message_received(data)
        peer = self.peer
        if peer is not None and peer.is_congested() and self._inbox_bytes <= self._low_water:
            peer.resume_writing()
        if self._closing and not self._inbox:
            self._end()

    async def wait_closed(self) -> None:
        """Wait until this side has ended. Cancellation: safe."""
        await asyncio.shield(self._lost)

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        if not self._lost.done():
            self._lost.set_result(None)
        self._inbox.clear()
        self._inbox_bytes = 0
        self.resume_writing()
        receiver, self._receiver = self._receiver, None
        if receiver is not None:
            receiver.connection_lost()


def memory_pair(
    labels: tuple[str, str] = ("memory client", "memory server"),
    *,
    high_water: int = HIGH_WATER_BYTES,
) -> tuple[MemoryChannel, MemoryChannel]:
    """Two connected channels (for example a client side and a server side)."""
    a = MemoryChannel(labels[0], high_water=high_water)
    b = MemoryChannel(labels[1], high_water=high_water)
    a.peer, b.peer = b, a
    return a, b
