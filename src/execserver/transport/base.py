"""The seam between transports and the RPC engine: whole messages in, whole messages out.

Transports know nothing about JSON-RPC. A transport delivers each complete inbound message to a
`MessageReceiver` and exposes a `MessageChannel` for outbound messages. Sending never blocks:
the channel buffers, and reports congestion so producers can apply back-pressure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class MessageChannel(Protocol):
    """Outbound half of a connection."""

    @property
    def label(self) -> str:
        """How the reference names this peer in parse errors (e.g. `exec-server stdio`)."""
        ...

    def send(self, data: bytes) -> None:
        """Queue one whole message. Silently dropped once the connection is closed."""
        ...

    def is_congested(self) -> bool:
        """True while the outbound buffer is above its high-water mark."""
        ...

    def call_when_writable(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the buffer drains below its low-water mark (or at once)."""
        ...

    def abort(self) -> None:
        """Drop the connection at once, without a closing handshake."""
        ...

    def pause_reading(self) -> None:
        """Stop delivering inbound messages until `resume_reading()` (back-pressure)."""
        ...

    def resume_reading(self) -> None: ...


class MessageReceiver(Protocol):
    """Inbound half: what a transport feeds."""

    def message_received(self, data: bytes) -> None: ...

    def connection_lost(self) -> None: ...


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
