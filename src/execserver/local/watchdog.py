"""The crash watchdog: kills every process a dead server left behind.

Run as `python -I -S watchdog.py SERVER_PID BASE...` (standard library only, so it starts in a
few milliseconds and holds a few MB). It waits on a pidfd of the server, which becomes readable
only when the server *process* ends: an in-place upgrade (`execve`, same pid) does not wake it,
a SIGKILL or an OOM kill of the server does. Then it kills every process in every cgroup under
each BASE directory (local/cgroup.py) and removes them. It lives in its own session, so a signal
to the server's process group does not reach it. After a clean shutdown the bases are gone and
it has nothing to do. See local/crash_guard.py for how the server starts (or re-finds) it.

Without cgroups (`watchdog.py SERVER_PID --tree`) the server reports its children on the
watchdog's stdin, a pipe: `+PID START` for each child it has (START: the start time in
/proc/PID/stat, so a reused pid is not mistaken for it), `-PID` once it has reaped one. Lines
the server wrote before it died are still in the pipe. Then the watchdog kills those children,
their descendants and everything in their sessions (`tree.kill_remains`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import select
import signal
import sys
import time
from pathlib import Path
from types import ModuleType

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


TREE = "--tree"
FEED = 0
"""The pipe the server reports its children on (tree mode)."""
DRAIN_S = 0.25
"""Tree mode: how often the pipe is read. Not on every line: a wake-up per spawn would cost
each one-shot process a context switch; the pipe holds what arrives meanwhile (the server
makes it 1 MiB) and keeps it after the server's death."""


def _tree_module() -> ModuleType:
    """local/tree.py, loaded by path (`-I` leaves this directory off sys.path)."""
    spec = importlib.util.spec_from_file_location(
        "execserver_tree", Path(__file__).with_name("tree.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def apply(records: dict[int, int], data: bytes) -> None:
    """Apply the complete lines of the server's reports in `data` to `records`."""
    for line in data.split(b"\n"):
        with contextlib.suppress(ValueError, IndexError):
            if line.startswith(b"+"):
                pid, start = line[1:].split()
                records[int(pid)] = int(start)
            elif line.startswith(b"-"):
                records.pop(int(line[1:]), None)


def follow(pidfd: int | None) -> dict[int, int]:
    """Read the server's reports until it dies; its children then (pid -> start time)."""
    records: dict[int, int] = {}
    pending = b""
    feed_open = True
    os.set_blocking(FEED, False)
    while True:
        timeout = DRAIN_S if feed_open else None
        dead = pidfd is None or bool(select.select([pidfd], [], [], timeout)[0])
        while feed_open:
            try:
                data = os.read(FEED, 65536)
            except BlockingIOError:
                break
            if not data:
                feed_open = False  # the server closed it, or died: keep waiting on the pidfd
                break
            pending += data
            complete, _, pending = pending.rpartition(b"\n")
            apply(records, complete)
        if dead:
            return records


def main(argv: list[str]) -> int:
    server = int(argv[1])
    tree_mode = argv[2:] == [TREE]
    bases = [] if tree_mode else [Path(arg) for arg in argv[2:]]
    tree = _tree_module() if tree_mode else None  # loaded now, not after the files changed
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        pidfd = os.pidfd_open(server)
    except ProcessLookupError:
        pidfd = None
    if tree is not None:
        # Never swept: our own session, and the server's (where it was started from).
        spare = [os.getsid(0), server]
        with contextlib.suppress(OSError):
            spare.append(os.getsid(server))
        records = follow(pidfd)
        tree.kill_remains(records, spare_sessions=spare)
        return 0
    if pidfd is not None:
        select.select([pidfd], [], [])
    sweep(bases)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
