"""The message-channel contract: whole messages in, whole messages out, on either side.

Every connection execserver speaks JSON-RPC over (a WebSocket accepted by the server or dialled
by the client, stdio in either direction, an in-memory pair in unit tests, a relay stream) is
one `MessageChannel` feeding one `MessageReceiver`. Transports know nothing about JSON-RPC.

The contract, in the style of asyncio's protocols and transports:

- Inbound: the channel calls `receiver.message_received(data)` once per complete message, in
  order, and `receiver.connection_lost()` exactly once at the end (peer gone, `close()` or
  `abort()` done, protocol error). Nothing is delivered after that, nor while reading is paused.
- Outbound: `send(data)` queues one whole message and never blocks; after the end it is a
  silent no-op. `is_congested()` is true while the queue is above its high-water mark and
  `call_when_writable(cb)` runs `cb` once it drains (or at once). Producers that can generate
  without limit wait on that; everything else just sends.
- Back-pressure on input: `pause_reading()` / `resume_reading()`.
- Ending: `close()` sends what is queued and then closes (the graceful way); `abort()` drops the
  connection at once without a closing handshake.

No method is a coroutine, so none can be cancelled halfway. Opening a channel is async (each
transport's `connect`/`serve` function) and documents its own cancellation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol


class MessageChannel(Protocol):
    """The outbound and control half of a connection (see the module docstring)."""

    @property
    def label(self) -> str:
        """How this peer is named in logs and parse errors (e.g. `exec-server stdio`)."""
        ...

    def send(self, data: bytes) -> None:
        """Queue one whole message. Silently dropped once the connection has ended."""
        ...

    def is_congested(self) -> bool:
        """True while the outbound queue is above its high-water mark."""
        ...

    def call_when_writable(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the queue drains below its low-water mark (or at once)."""
        ...

    def pause_reading(self) -> None:
        """Stop delivering inbound messages until `resume_reading()` (back-pressure)."""
        ...

    def resume_reading(self) -> None: ...

    def close(self) -> None:
        """Flush what is queued, then end the connection."""
        ...

    def abort(self) -> None:
        """End the connection at once, without a closing handshake."""
        ...


class DialledChannel(MessageChannel, Protocol):
    """A channel the client side opened: it can also wait for its end."""

    async def wait_closed(self) -> None:
        """Wait until the connection has ended (after `close()`, `abort()` or from the peer).

        Cancellation: safe; the connection is unaffected.
        """
        ...


class MessageReceiver(Protocol):
    """The inbound half: what a channel feeds."""

    def message_received(self, data: bytes) -> None: ...

    def connection_lost(self) -> None: ...


async def writable(channel: MessageChannel) -> None:
    """Return once `channel` is below its high-water mark.

    Cancellation: safe; nothing is sent or lost.
    """
    if not channel.is_congested():
        return
    drained: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake() -> None:
        if not drained.done():
            drained.set_result(None)

    channel.call_when_writable(wake)
    await drained


class FlowControl:
    """Congestion flag plus drain callbacks; a mixin for asyncio-protocol based channels.

    List it before `asyncio.Protocol` in the bases: `asyncio.BaseProtocol` has no-op
    `pause_writing`/`resume_writing` that would otherwise win and silently disable
    back-pressure (tests/server/test_memory.py catches that).
    """

    def __init__(self) -> None:
        self._congested = False
        self._drain_callbacks: list[Callable[[], None]] = []

    def is_congested(self) -> bool:
        return self._congested

    def call_when_writable(self, callback: Callable[[], None]) -> None:
        if self._congested:
            self._drain_callbacks.append(callback)
        else:
            callback()

    def pause_writing(self) -> None:
        self._congested = True

    def resume_writing(self) -> None:
        self._congested = False
        callbacks, self._drain_callbacks = self._drain_callbacks, []
        for callback in callbacks:
            callback()
