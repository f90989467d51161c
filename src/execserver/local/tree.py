"""Signal a whole process tree: the child's process group plus every descendant found in /proc.

A child is started as a session and group leader, so its group holds everything that did not
move itself elsewhere. Descendants that called `setsid` or `setpgid` are found through the
parent links in /proc, frozen with SIGSTOP until the tree stops changing (so nothing forks past
us), then signalled. Descendants already orphaned out of the tree cannot be found this way.

Standard library only: the crash watchdog (watchdog.py, run with `python -I -S`) loads this
file by path for `kill_remains`.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable, Mapping
from typing import NamedTuple

_MAX_ROUNDS = 8


class ProcStat(NamedTuple):
    """What /proc/PID/stat says about a process that matters for finding its tree."""

    ppid: int
    sid: int
    start: int
    """Start time in clock ticks after boot: with the pid, names one process for good."""


def proc_stat(pid: int) -> ProcStat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # Fields after the command name, which is parenthesised and may contain anything; the
    # first of them is field 3 (state): ppid is field 4, session 6, starttime 22.
    fields = stat[stat.rfind(b")") + 2 :].split()
    if len(fields) < 20:
        return None
    return ProcStat(int(fields[1]), int(fields[3]), int(fields[19]))


def proc_stats() -> dict[int, ProcStat]:
    """Every process on the host (that /proc shows us)."""
    stats: dict[int, ProcStat] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return stats
    for entry in entries:
        if entry.isdigit() and (stat := proc_stat(int(entry))) is not None:
            stats[int(entry)] = stat
    return stats


def _parent_map() -> dict[int, int]:
    return {pid: stat.ppid for pid, stat in proc_stats().items()}


def task_children(pid: int) -> list[int]:
    """`pid`'s children, from the kernel's per-thread children lists (cheaper than a scan of
    /proc; children of threads that are gone move to the thread group leader's list)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    return [child for task in tasks for child in thread_children(pid, int(task))]


def thread_children(pid: int, tid: int) -> list[int]:
    """The children thread `tid` of process `pid` forked, and (for the thread group leader,
    `tid == pid`) the orphans re-parented to a child subreaper `pid`."""
    try:
        with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
            return [int(child) for child in f.read().split()]
    except (OSError, ValueError):
        return []


def descendants(root: int) -> set[int]:
    """Pids whose parent chain leads to `root` (not including `root`)."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _parent_map().items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def _signal_pid(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def kill_tree(root: int, *, root_alive: bool = True) -> None:
    """SIGKILL `root`'s process group and every descendant (and their groups).

    `root` must be a group leader we started (its pid is its pgid). With `root_alive=False`
    (the root has exited and may be reaped already) only its group is killed: its pid may no
    longer be ours to walk from.
    """
    if not root_alive:
        _signal_group(root, signal.SIGKILL)
        return
    # Freeze first so nobody forks between the scan and the kill.
    _signal_group(root, signal.SIGSTOP)
    _signal_pid(root, signal.SIGSTOP)
    tree: set[int] = set()
    for _ in range(_MAX_ROUNDS):
        new = descendants(root) - tree
        if not new:
            break
        for pid in new:
            _signal_pid(pid, signal.SIGSTOP)
        tree |= new
    groups = {root}
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            groups.add(os.getpgid(pid))
    groups.discard(os.getpgrp())
    for pgid in groups:
        _signal_group(pgid, signal.SIGKILL)
    for pid in tree | {root}:
        _signal_pid(pid, signal.SIGKILL)


def kill_remains(roots: Mapping[int, int], spare_sessions: Iterable[int]) -> set[int]:
    """SIGKILL what is left of processes a dead server started: `roots` (pid -> start time;
    a pid whose process has another start time is someone else's now), every descendant of
    them and every process in their sessions (which finds members whose parent has died since),
    frozen with SIGSTOP until nothing new turns up. Sessions in `spare_sessions` are never
    swept (the watchdog's own). Returns the pids signalled."""
    spare = {0, 1, *spare_sessions}
    stats = proc_stats()
    found = {pid for pid, start in roots.items() if (s := stats.get(pid)) and s.start == start}
    found.discard(os.getpid())
    stopped: set[int] = set()
    for _ in range(_MAX_ROUNDS * 4):
        for pid in found - stopped:
            _signal_pid(pid, signal.SIGSTOP)
        stopped |= found
        stats = proc_stats()
        sessions = {stats[pid].sid for pid in found if pid in stats} - spare
        new = {
            pid
            for pid, stat in stats.items()
            if pid not in found and (stat.ppid in found or stat.sid in sessions)
        } - {os.getpid()}
        if not new:
            break
        found |= new
    for pid in found:
        _signal_pid(pid, signal.SIGKILL)
    return found


def kill_descendants(root: int) -> None:
    """SIGKILL every process whose parent chain leads to `root` (a server shutting down, whose
    adopted orphans are its descendants as child subreaper), freezing them first."""
    tree: set[int] = set()
    for _ in range(_MAX_ROUNDS):
        new = descendants(root) - tree
        if not new:
            break
        for pid in new:
            _signal_pid(pid, signal.SIGSTOP)
        tree |= new
    for pid in tree:
        _signal_pid(pid, signal.SIGKILL)
