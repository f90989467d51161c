"""How a process ends: its termination record, its server-side timeouts, its limits' wire form.

The record's `reason` is decided in this order: what the server itself did (`terminated` by a
client, `timeout`, `idleTimeout`, `shutdown`), then an OOM kill counted by the process's memory
cgroup (the victim may be a descendant: `bash -c` reports 137 for it), then the sandbox denial
heuristic, then the wait status (`signaled` or `exited`). Resource usage is the child's from
`wait4`, which includes the descendants it waited for.
"""

from __future__ import annotations

import asyncio
import math
import os
import resource
import signal
from collections.abc import Callable

from execserver.errors import InvalidParams
from execserver.local.cgroup import Limits
from execserver.protocol.process import ProcessLimits, Termination, TerminationReason

DEFAULT_KILL_GRACE_S = 2.0
"""After a timeout's SIGTERM, how long the tree has before SIGKILL (`serve --kill-grace`)."""
MIN_MEMORY_BYTES = 1024 * 1024
MAX_TIMEOUT_MS = 365 * 24 * 3600 * 1000


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"


def termination_record(
    *,
    status: int | None,
    usage: resource.struct_rusage | None,
    end_cause: TerminationReason | None,
    oom_kills: int,
    sandbox_denied: bool,
    peak_memory: int | None = None,
    server_peak_rss: int = 0,
) -> Termination:
    """The record (see the module docstring).

    `maxRssBytes` is `peak_memory` (the memory cgroup's peak) if known, else wait4's
    `ru_maxrss` if it is above `server_peak_rss`: posix_spawn starts the child with vfork, and
    exec hands the shared (server's) memory's high-water mark to the child's figure, so below
    the server's own peak at spawn time the figure says nothing about the child (null).
    """
    signaled = status is not None and os.WIFSIGNALED(status)
    sig = signal_name(os.WTERMSIG(status)) if signaled and status is not None else None
    reason: TerminationReason
    if end_cause is not None:
        reason = end_cause
    elif oom_kills:
        reason = "oom"
    elif sandbox_denied:
        reason = "sandboxDenied"
    else:
        reason = "signaled" if signaled else "exited"
    max_rss = peak_memory
    if max_rss is None and usage is not None and usage.ru_maxrss * 1024 > server_peak_rss:
        max_rss = usage.ru_maxrss * 1024
    return Termination(
        reason=reason,
        signal=sig,
        user_ms=round(usage.ru_utime * 1000) if usage is not None else 0,
        sys_ms=round(usage.ru_stime * 1000) if usage is not None else 0,
        max_rss_bytes=max_rss,
    )


def limits_from_wire(limits: ProcessLimits | None) -> Limits | None:
    """The local form of `limits`, or None when nothing is limited. Raises `InvalidParams`."""
    if limits is None:
        return None
    if limits.memory_bytes is not None and limits.memory_bytes < MIN_MEMORY_BYTES:
        raise InvalidParams(f"limits.memoryBytes must be at least {MIN_MEMORY_BYTES}")
    if limits.pids is not None and not 1 <= limits.pids <= 2**31:
        raise InvalidParams("limits.pids must be between 1 and 2147483648")
    if limits.cpus is not None and not (math.isfinite(limits.cpus) and limits.cpus >= 0.01):
        raise InvalidParams("limits.cpus must be a number of at least 0.01")
    local = Limits(memory_bytes=limits.memory_bytes, pids=limits.pids, cpus=limits.cpus)
    return local if local.requested() else None


def timeout_seconds(name: str, value_ms: int | None) -> float | None:
    if value_ms is None:
        return None
    if not 1 <= value_ms <= MAX_TIMEOUT_MS:
        raise InvalidParams(f"{name} must be between 1 and {MAX_TIMEOUT_MS}")
    return value_ms / 1000.0


class Timeouts:
    """The wall-clock and idle-output deadlines of one process.

    `expire(reason)` is called once, with `timeout` or `idleTimeout`, whichever passes first.
    `last_output` is read when the idle deadline comes due (the process updates it on output),
    so output costs nothing here.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        expire: Callable[[TerminationReason], None],
        last_output: Callable[[], float],
        *,
        timeout_s: float | None,
        idle_s: float | None,
    ) -> None:
        self._loop = loop
        self._expire = expire
        self._last_output = last_output
        self._idle_s = idle_s
        self._deadline = (
            loop.call_later(timeout_s, self._fire, "timeout") if timeout_s is not None else None
        )
        self._idle = loop.call_later(idle_s, self._check_idle) if idle_s is not None else None

    def remaining(self) -> tuple[float | None, float | None]:
        """(seconds left of the wall-clock timeout, the idle timeout) of those still armed:
        what an upgrade in place arms again in the new image."""
        now = self._loop.time()
        left = max(self._deadline.when() - now, 0.0) if self._deadline is not None else None
        return left, self._idle_s if self._idle is not None else None

    def _check_idle(self) -> None:
        assert self._idle_s is not None
        due = self._last_output() + self._idle_s
        if self._loop.time() >= due:
            self._fire("idleTimeout")
        else:
            self._idle = self._loop.call_at(due, self._check_idle)

    def _fire(self, reason: TerminationReason) -> None:
        self.cancel()
        self._expire(reason)

    def cancel(self) -> None:
        for handle in (self._deadline, self._idle):
            if handle is not None:
                handle.cancel()
        self._deadline = self._idle = None
