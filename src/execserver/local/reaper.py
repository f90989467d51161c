"""Collect exit statuses of our children, and reap orphans when we are a child subreaper.

Each managed child is watched through a pidfd registered with the event loop, so its exit is
seen without threads or SIGCHLD races. A server process can additionally become a child
subreaper: descendants orphaned by a dying child are then re-parented to us instead of PID 1
(which does not reap on our machines), and `reap_orphans()` collects them on SIGCHLD without
ever touching a managed child's status.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import resource
import signal
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)

_PR_SET_CHILD_SUBREAPER = 36

ExitCallback = Callable[[int], None]
UsageCallback = Callable[[resource.struct_rusage], None]
ExitScope = Callable[[], contextlib.AbstractContextManager[object]]
"""Wraps each exit callback: the server passes `transport.held.held_sends`, so that what one
exit produces (the last output, `process/exited`, `process/closed`) leaves together."""


class ChildListener(Protocol):
    """Hears of every child this reaper starts watching and every child it reaps (the crash
    watchdog's view of our children without cgroups: crash_guard.py)."""

    def started(self, pid: int) -> None: ...

    def ended(self, pid: int) -> None: ...


class ChildReaper:
    """Watches managed children on one event loop and reports their wait statuses."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, exit_scope: ExitScope = contextlib.nullcontext
    ) -> None:
        self._loop = loop
        self.exit_scope = exit_scope
        self._watched: dict[int, tuple[int, ExitCallback]] = {}
        self._usage: dict[int, UsageCallback] = {}
        self._subreaper = False
        self._plain_sigchld = False
        """SIGCHLD is ours through `signal.signal` (the loop would not take it)."""
        self.listener: ChildListener | None = None

    def watch(self, pid: int, on_exit: ExitCallback, on_usage: UsageCallback | None = None) -> None:
        """Call `on_exit(wait_status)` once our child `pid` has exited and been reaped (and
        before it, `on_usage` with its resource usage, its waited-for descendants included).

        Must be called before any await after the spawn, so no other waiter can see the pid first.
        """
        pidfd = os.pidfd_open(pid)
        self._watched[pid] = (pidfd, on_exit)
        if on_usage is not None:
            self._usage[pid] = on_usage
        self._loop.add_reader(pidfd, self._on_readable, pid)
        if self.listener is not None:
            self.listener.started(pid)

    def _on_readable(self, pid: int) -> None:
        usage: resource.struct_rusage | None = None
        try:
            reaped, status, usage = os.wait4(pid, os.WNOHANG)
        except ChildProcessError:
            reaped, status = pid, 255 << 8  # someone else reaped it: report an unknown failure
        if reaped == 0:
            return
        on_usage = self._usage.pop(pid, None)
        if on_usage is not None and usage is not None:
            on_usage(usage)
        pidfd, on_exit = self._watched.pop(pid)
        self._loop.remove_reader(pidfd)
        os.close(pidfd)
        if self.listener is not None:
            self.listener.ended(pid)
        try:
            with self.exit_scope():
                on_exit(status)
        finally:
            if self._subreaper:
                self.reap_orphans()

    def is_watching(self, pid: int) -> bool:
        return pid in self._watched

    def become_subreaper(self) -> bool:
        """Make this process the reaper of orphaned descendants (Linux). Returns success.

        Only for a process that owns every child it starts: orphan reaping collects any
        unwatched zombie child, which would steal statuses from other spawning code.
        """
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            log.warning("could not become a child subreaper: errno %d", ctypes.get_errno())
            return False
        self._subreaper = True
        try:
            self._loop.add_signal_handler(signal.SIGCHLD, self.reap_orphans)
        except RuntimeError:
            # uvloop refuses SIGCHLD (it would track its own subprocesses with it; we start
            # none through it): a plain handler that hands the signal to the loop.
            signal.signal(signal.SIGCHLD, self._on_sigchld)
            self._plain_sigchld = True
        return True

    def _on_sigchld(self, _signal: int, _frame: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to reap for
            self._loop.call_soon_threadsafe(self.reap_orphans)

    def reap_orphans(self) -> None:
        """Reap every exited child that is not a managed one.

        Stops at the first managed zombie: its pidfd handler reaps it and calls this again.
        """
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid == 0:
                return
            if info.si_pid in self._watched:
                return
            with contextlib.suppress(ChildProcessError):
                os.waitpid(info.si_pid, 0)
            if self.listener is not None:
                self.listener.ended(info.si_pid)

    def close(self) -> None:
        """Stop watching (statuses of still-running children are then collected by nobody)."""
        for pidfd, _ in self._watched.values():
            self._loop.remove_reader(pidfd)
            os.close(pidfd)
        self._watched.clear()
        self._usage.clear()
        if self._subreaper:
            if self._plain_sigchld:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                self._plain_sigchld = False
            else:
                self._loop.remove_signal_handler(signal.SIGCHLD)
            self._subreaper = False


def exit_code_from_status(status: int) -> int:
    """Exit code as the reference reports it: the code, or 128+N for death by signal N."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return -1
