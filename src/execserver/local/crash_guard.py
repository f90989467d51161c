"""Nothing a server started outlives it, even when it cannot clean up (SIGKILL, OOM).

Every managed process lives in a cgroup under the server's base directories
(local/cgroup.py), and a small watchdog process (local/watchdog.py) waits for the server's
death on a pidfd and then kills whatever is left there. Why this design:

* `PR_SET_PDEATHSIG` would have to be set in each child before exec (not possible with
  `posix_spawn`), reaches only direct children (not `setsid` daemons or double forks), and
  fires when the *thread* that forked the child exits, not the process: spawning threads come
  and go, and an in-place upgrade's `execve` ends every thread but one.
* A pidfd becomes readable only when the whole process ends, not on `execve` (the pid stays),
  so the watchdog survives an in-place upgrade; the re-executed server finds it again among its
  children (`find_watchdog`) instead of starting a second one.
* Cgroups cannot be left without privileges, so the watchdog needs no list of pids from the
  server (which may be dead before it could send one).

Without per-process cgroups (`--no-process-cgroups`, an unprivileged host) the watchdog runs in
tree mode: the server, a child subreaper, keeps every process it started among its descendants
(orphans are re-parented to it), and reports its children to the watchdog over a pipe as they
come and go (`+PID START` when the reaper starts watching one, and for orphans it adopted,
found in its children list after each reap and every `ADOPTION_POLL_S`; `-PID` when one is
reaped). A write to a pipe outlives the writer, so what the server reported before a SIGKILL
reaches the watchdog, which then kills those children, their descendants and their sessions.
Limit: an orphan that moved to a session of its own (`setsid`) and was adopted less than
`ADOPTION_POLL_S` before the crash, while its old session's processes had all gone, is not
found. The pipe's write end survives an in-place upgrade (the upgrade keeps it open across
`execve`; the new image finds it by the pipe's inode, the watchdog's stdin).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import sys
from pathlib import Path

from execserver.local import watchdog
from execserver.local.reaper import ChildReaper
from execserver.local.spawn import Stdio, spawn
from execserver.local.tree import proc_stat, task_children, thread_children

log = logging.getLogger(__name__)

SCRIPT = Path(watchdog.__file__).resolve()
FEED_BYTES = 1024 * 1024
"""Tree mode: the pipe's size (the unprivileged maximum by default): ~50,000 reports."""
ADOPTION_POLL_S = 1.0
"""Tree mode: how often the server looks for orphans it adopted without a reap to notice."""


def _guarded(bases: list[Path]) -> list[bytes]:
    """What the watchdog's command line names after its pid: the bases, or tree mode."""
    return [*map(os.fsencode, bases)] if bases else [watchdog.TREE.encode()]


def find_watchdog(bases: list[Path]) -> int | None:
    """A watchdog child of ours already guarding `bases` (after an in-place upgrade)."""
    expected = [os.fsencode(SCRIPT), str(os.getpid()).encode(), *_guarded(bases)]
    for child in task_children(os.getpid()):
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[:-1]
        except OSError:
            continue
        if argv[-len(expected) :] == expected:
            return child
    return None


def _pipe_inode(link: str) -> str | None:
    try:
        target = os.readlink(link)
    except OSError:
        return None
    return target if target.startswith("pipe:") else None


def find_feed(watchdog_pid: int) -> int | None:
    """Our fd on the write end of the pipe that is `watchdog_pid`'s stdin (kept across an
    in-place upgrade), or None."""
    want = _pipe_inode(f"/proc/{watchdog_pid}/fd/{watchdog.FEED}")
    if want is None:
        return None
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return None
    for name in names:
        fd = int(name)
        if _pipe_inode(f"/proc/self/fd/{fd}") != want:
            continue
        with contextlib.suppress(OSError):
            if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY:
                return fd
    return None


class CrashGuard:
    """Starts (or re-finds) the watchdog, restarts it if it dies, stops it on shutdown; in
    tree mode (no cgroup bases) also reports our children to it (the reaper's listener)."""

    def __init__(self, reaper: ChildReaper, bases: list[Path]) -> None:
        self._reaper = reaper
        self._bases = bases
        self._tree = not bases
        self._closed = False
        self.pid: int | None = None
        self.feed: int | None = None
        """Tree mode: the write end of the watchdog's stdin (kept across an upgrade)."""
        self._reported: set[int] = set()
        self._poll: asyncio.TimerHandle | None = None
        self._start()
        if self._tree:
            reaper.listener = self
            self._poll = asyncio.get_running_loop().call_later(ADOPTION_POLL_S, self._poll_now)

    def _start(self) -> None:
        pid = find_watchdog(self._bases)
        if pid is not None and self._tree:
            self.feed = find_feed(pid)
            if self.feed is None:  # cannot talk to it: replace it
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                pid = None
            else:
                os.set_inheritable(self.feed, False)
        if pid is None:
            argv = [
                os.fsencode(sys.executable),
                b"-I",
                b"-S",
                os.fsencode(SCRIPT),
                str(os.getpid()).encode(),
                *_guarded(self._bases),
            ]
            stdin = None
            if self._tree:
                stdin, self.feed = os.pipe()
                os.set_blocking(self.feed, False)
                with contextlib.suppress(OSError):  # read every DRAIN_S: room for a burst
                    fcntl.fcntl(self.feed, fcntl.F_SETPIPE_SZ, FEED_BYTES)
            try:
                pid = spawn(argv[0], argv, [], b"/", Stdio(stdin=stdin, stderr=2))
            except OSError as exc:
                log.warning("could not start the crash watchdog: %s", exc)
                self._close_feed()
                return
            finally:
                if stdin is not None:
                    os.close(stdin)
        self.pid = pid
        self._reaper.watch(pid, self._on_exit)
        if self._tree:
            self._reported.clear()
            self._report_children()

    # -- tree mode: what the watchdog knows of our children ------------------------------------

    def started(self, pid: int) -> None:
        if pid != self.pid and pid not in self._reported:
            self._report(pid)

    def ended(self, pid: int) -> None:
        if pid in self._reported:
            self._reported.discard(pid)
            self._send(b"-%d\n" % pid)
        self._report_children()  # orphans its end handed to us

    def _poll_now(self) -> None:
        self._report_children()
        self._poll = asyncio.get_running_loop().call_later(ADOPTION_POLL_S, self._poll_now)

    def _report_children(self) -> None:
        """Report children not reported yet: orphans re-parented to us go to the main
        thread's list (the only one read here: children other threads spawn are reported by
        `started`)."""
        for child in thread_children(os.getpid(), os.getpid()):
            if child != self.pid and child not in self._reported:
                self._report(child)

    def _report(self, pid: int) -> None:
        stat = proc_stat(pid)
        if stat is not None:
            self._reported.add(pid)
            self._send(b"+%d %d\n" % (pid, stat.start))

    def _send(self, line: bytes) -> None:
        if self.feed is None:
            return
        try:
            os.write(self.feed, line)  # shorter than PIPE_BUF: all or nothing
        except BlockingIOError:
            log.warning("the crash watchdog is not keeping up; a crash could leave processes")
        except OSError:
            pass  # it died: `_on_exit` starts another, which is told every child

    def _close_feed(self) -> None:
        if self.feed is not None:
            os.close(self.feed)
            self.feed = None

    def _on_exit(self, status: int) -> None:
        self.pid = None
        self._close_feed()
        if not self._closed:
            log.warning("the crash watchdog ended (status %d); starting another", status)
            self._start()

    def close(self) -> None:
        """Stop the watchdog (after an orderly cleanup it has nothing left to guard)."""
        self._closed = True
        if self._poll is not None:
            self._poll.cancel()
        if self._reaper.listener is self:
            self._reaper.listener = None
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        self._close_feed()
