"""Messages sent during one synchronous piece of work, written together.

Some events produce several messages at once: a reaped child gives `process/exited` and, with
its output already at its end, `process/closed` (and any last output read on the way). Sent
one by one, each is a record, a relay frame and a forwarding step at the relay and at the
harness; held until the work is done, a channel that can combine them (a relay stream packs
them into one record) sends them as one. Nothing waits for later work: the messages leave
when the `held_sends()` block ends, in the order they were sent, on the same loop turn.

A channel takes part by asking `hold(self)` in `send()`: True means a block is open and the
channel is now registered to have `send_held()` called at its end (once per block, however
many messages it held); False means send at once, as always. Blocks nest: only the outermost
one flushes. A block belongs to its thread (a thread-local, not a context variable: a callback
scheduled inside a block runs after it and must not inherit it).
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


_block = _Block()


def hold(channel: HoldingChannel, first: bool) -> bool:
    """Whether `channel` should hold the message it is sending; `first` says it holds none
    yet (then it is registered for the flush)."""
    holders = _block.holders
    if holders is None:
        return False
    if first:
        holders.append(channel)
    return True


@contextmanager
def held_sends() -> Iterator[None]:
    """Hold the sends of participating channels until the block ends (see the module
    docstring). A channel that fails to flush is logged and the others still flush."""
    if _block.holders is not None:
        yield
        return
    holders: list[HoldingChannel] = []
    _block.holders = holders
    try:
        yield
    finally:
        _block.holders = None
        for channel in holders:
            try:
                channel.send_held()
            except Exception:
                log.exception("sending held messages failed")


__all__ = ["HoldingChannel", "held_sends", "hold"]
