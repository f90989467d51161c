"""Messages sent during one synchronous piece of work, written together.

Some events produce several messages at once: a reaped child gives `process/exited` and, with
its output already at its end, `process/closed` (and any last output read on the way). Sent
one by one, each is a record, a relay frame and a forwarding step at the relay and at the
harness; held until the work is done, a channel that can combine them (a relay stream packs
them into one record) sends them as one. Nothing waits for later work: the messages leave
when the `held_sends()` block ends, in the order they were sent, on the same loop turn.

A channel takes part by reading `block.holders` in `send()`: None means no block is open (send
at once, as always); otherwise the channel holds the message, and with its first one appends
itself to the list, to have `send_held()` called when the block ends (once per block, however
many messages it held). A read of an attribute rather than a call: `send()` is on every
message's path, where a call costs about a microsecond with the caches cold. Blocks nest: only
the outermost one flushes. A block belongs to its thread (a thread-local, not a context
variable: a callback scheduled inside a block runs after it and must not inherit it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

log = logging.getLogger(__name__)


class HoldingChannel(Protocol):
    def send_held(self) -> None:
        """Send what the channel held since it was registered."""
        ...


class _Block(threading.local):
    holders: list[HoldingChannel] | None = None
    """Channels holding messages in this thread's open block (None: no block is open)."""


block = _Block()
"""This thread's block: `block.holders` is what a channel reads in `send()`."""


@contextmanager
def held_sends() -> Iterator[None]:
    """Hold the sends of participating channels until the block ends (see the module
    docstring). A channel that fails to flush is logged and the others still flush."""
    if block.holders is not None:
        yield
        return
    holders: list[HoldingChannel] = []
    block.holders = holders
    try:
        yield
    finally:
        block.holders = None
        for channel in holders:
            try:
                channel.send_held()
            except Exception:
                log.exception("sending held messages failed")


__all__ = ["HoldingChannel", "block", "held_sends"]
