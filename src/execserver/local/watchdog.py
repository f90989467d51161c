"""The crash watchdog: kills every process a dead server left in its cgroups.

Run as `python -I -S watchdog.py SERVER_PID BASE...` (standard library only, so it starts in a
few milliseconds and holds a few MB). It waits on a pidfd of the server, which becomes readable
only when the server *process* ends: an in-place upgrade (`execve`, same pid) does not wake it,
a SIGKILL or an OOM kill of the server does. Then it kills every process in every cgroup under
each BASE directory (local/cgroup.py) and removes them. It lives in its own session, so a signal
to the server's process group does not reach it. After a clean shutdown the bases are gone and
it has nothing to do. See local/crash_guard.py for how the server starts (or re-finds) it.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time
from pathlib import Path

KILL_ROUNDS = 32
REMOVE_WAIT_S = 5.0


def _pids(directory: Path) -> list[int]:
    try:
        return [int(pid) for pid in (directory / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def _cgroups(base: Path) -> list[Path]:
    """`base` and every cgroup below it, deepest first."""
    found: list[Path] = []
    with contextlib.suppress(OSError):
        for root, dirs, _ in os.walk(base):
            found.extend(Path(root) / d for d in dirs)
    found.sort(key=lambda p: len(p.parts), reverse=True)
    return [*found, base]


def sweep(bases: list[Path]) -> None:
    """Kill everything in the cgroups under `bases` and remove them."""
    for base in bases:
        with contextlib.suppress(OSError):
            (base / "cgroup.kill").write_text("1")  # cgroup v2: the whole subtree at once
    for base in bases:
        for cgroup in _cgroups(base):
            for _ in range(KILL_ROUNDS):
                pids = _pids(cgroup)
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + REMOVE_WAIT_S
    for base in bases:
        for cgroup in _cgroups(base):
            while True:
                try:
                    cgroup.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # EBUSY until the killed processes are gone
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.02)


def main(argv: list[str]) -> int:
    server = int(argv[1])
    bases = [Path(arg) for arg in argv[2:]]
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        pidfd = os.pidfd_open(server)
    except ProcessLookupError:
        pidfd = None
    if pidfd is not None:
        select.select([pidfd], [], [])
    sweep(bases)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
