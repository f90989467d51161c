"""Which asyncio event loop a long-running command runs on.

`serve` runs on uvloop (libuv, in C) when it is installed: an executor's per-message cost is
mostly the event loop's own Python (a loop turn, the socket transport's read and write paths)
and uvloop takes much of that away (bench/relay_cpu.py: our executor's CPU per relayed echo
6-14 % lower; docs/BENCHMARKS.md, "Hot path, fifth round"). `asyncio` keeps the standard
loop; both are tested.

uvloop refuses a SIGCHLD handler of the loop's, so there the child reaper takes the signal with
a plain handler that hands it to the loop (`local/reaper.py`); everything else behaves the same
on both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")

EventLoopName = Literal["auto", "uvloop", "asyncio"]
EVENT_LOOPS: tuple[EventLoopName, ...] = ("auto", "uvloop", "asyncio")


class EventLoopUnavailable(RuntimeError):
    """`uvloop` was asked for and is not installed."""


def loop_factory(name: EventLoopName) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the loop called `name` (None: the standard one). Raises
    `EventLoopUnavailable` when `uvloop` is asked for and cannot be imported."""
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "auto":
            return None
        raise EventLoopUnavailable("uvloop is not installed (use --event-loop asyncio)") from None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], factory: Callable[[], asyncio.AbstractEventLoop] | None) -> T:
    """`asyncio.run(main)` on a loop from `factory` (`loop_factory()`; None: the standard)."""
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
