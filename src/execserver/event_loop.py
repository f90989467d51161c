"""Which asyncio event loop a long-running command (`serve`, `relay`) runs on.

Both run on uvloop (libuv, in C) when it is installed: their per-message cost is mostly the
event loop's own Python (a loop turn, the socket transport's read and write paths) and uvloop
takes much of that away (bench/relay_cpu.py: our executor's CPU per relayed echo 6-14 % lower,
docs/BENCHMARKS.md "Hot path, fifth round"; the relay's per forwarded frame, "Hot path,
seventh round"). `asyncio` keeps the standard loop; both are tested. uvloop's transports do
not derive from asyncio's transport classes: code that needs a transport's methods casts
rather than checks with isinstance.

uvloop refuses a SIGCHLD handler of the loop's, so there the child reaper takes the signal with
a plain handler that hands it to the loop (`local/reaper.py`); everything else behaves the same
on both.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")

EventLoopName = Literal["auto", "uvloop", "asyncio"]
EVENT_LOOPS: tuple[EventLoopName, ...] = ("auto", "uvloop", "asyncio")


class EventLoopUnavailable(RuntimeError):
    """`uvloop` was asked for and is not installed."""


def add_event_loop_argument(parser: argparse.ArgumentParser) -> None:
    """`--event-loop {auto,uvloop,asyncio}` (default auto)."""
    parser.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default="auto",
        help="the event loop to run on: uvloop (faster; auto: when installed) or the standard "
        "asyncio one (default %(default)s)",
    )


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


def running_loop_name() -> EventLoopName:
    """Which loop runs the calling coroutine: "uvloop" or "asyncio" (for logs)."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.partition(".")[0] == "uvloop" else "asyncio"


def run(main: Coroutine[Any, Any, T], factory: Callable[[], asyncio.AbstractEventLoop] | None) -> T:
    """`asyncio.run(main)` on a loop from `factory` (`loop_factory()`; None: the standard)."""
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
