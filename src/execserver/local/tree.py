"""Signal a whole process tree: the child's process group plus every descendant found in /proc.

A child is started as a session and group leader, so its group holds everything that did not
move itself elsewhere. Descendants that called `setsid` or `setpgid` are found through the
parent links in /proc, frozen with SIGSTOP until the tree stops changing (so nothing forks past
us), then signalled. Descendants already orphaned out of the tree cannot be found this way.
"""

from __future__ import annotations

import contextlib
import os
import signal

_MAX_ROUNDS = 8


def _parent_map() -> dict[int, int]:
    parents: dict[int, int] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return parents
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after the command name, which is parenthesised and may contain anything.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1:
            parents[int(entry)] = int(fields[1])
    return parents


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
