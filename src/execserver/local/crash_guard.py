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

Without per-process cgroups (an unprivileged host) there is no watchdog: the server still kills
every tree on an orderly shutdown, but a crash leaves them running (documented limit).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from execserver.local import watchdog
from execserver.local.reaper import ChildReaper
from execserver.local.spawn import Stdio, spawn

log = logging.getLogger(__name__)

SCRIPT = Path(watchdog.__file__).resolve()


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError):
                text = Path(f"/proc/{pid}/task/{task}/children").read_text()
                found.extend(int(child) for child in text.split())
    return found


def find_watchdog(bases: list[Path]) -> int | None:
    """A watchdog child of ours already guarding `bases` (after an in-place upgrade)."""
    expected = [os.fsencode(SCRIPT), str(os.getpid()).encode(), *map(os.fsencode, bases)]
    for child in _children(os.getpid()):
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[:-1]
        except OSError:
            continue
        if argv[-len(expected) :] == expected:
            return child
    return None


class CrashGuard:
    """Starts (or re-finds) the watchdog, restarts it if it dies, stops it on shutdown."""

    def __init__(self, reaper: ChildReaper, bases: list[Path]) -> None:
        self._reaper = reaper
        self._bases = bases
        self._closed = False
        self.pid: int | None = None
        self._start()

    def _start(self) -> None:
        pid = find_watchdog(self._bases)
        if pid is None:
            argv = [
                os.fsencode(sys.executable),
                b"-I",
                b"-S",
                os.fsencode(SCRIPT),
                str(os.getpid()).encode(),
                *map(os.fsencode, self._bases),
            ]
            try:
                pid = spawn(argv[0], argv, [], b"/", Stdio(stderr=2))
            except OSError as exc:
                log.warning("could not start the crash watchdog: %s", exc)
                return
        self.pid = pid
        self._reaper.watch(pid, self._on_exit)

    def _on_exit(self, status: int) -> None:
        self.pid = None
        if not self._closed:
            log.warning("the crash watchdog ended (status %d); starting another", status)
            self._start()

    def close(self) -> None:
        """Stop the watchdog (after an orderly cleanup it has nothing left to guard)."""
        self._closed = True
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
