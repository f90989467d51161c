"""Is a PTY process waiting for input? A heuristic from /proc (`process/waitingForInput`).

Once a terminal's output has been quiet for a moment, look at the processes of its foreground
process group (`tcgetpgrp` on the master): one that sleeps (`S`) in `read` on the terminal, or
in `poll`/`select`/`epoll` with the terminal as its stdin, is taken to be waiting for input.
The server tells the client once per quiet stretch (again after new output or input).

Limits, documented in docs/protocol.md: `/proc/PID/syscall` needs ptrace access to the
process (the server's own children: yes, unless they changed credentials, e.g. `sudo`); a
program polling the terminal *and* other fds (a REPL with a timer, `tail -f | less`) counts as
waiting; one that reads the terminal with a timeout in a loop (`read -t`) flickers between the
two; a process that waits on something else (a pipe, a lock, `sleep`) does not count, which is
right; and the answer is a snapshot: the process may have woken up by the time it arrives.
Syscall numbers are known for x86-64 and aarch64; elsewhere nothing is ever reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
from collections.abc import Callable, Iterable
from dataclasses import dataclass

QUIET_S = 0.3
"""Output quiet for this long before the first look."""
RECHECK_S = (0.5, 1.0, 2.0)
"""Further looks while output stays quiet and nobody was found waiting (then every 2 s)."""

_SYSCALLS = {
    # machine: (reads of an fd given as the first argument, waits on several fds)
    "x86_64": ({0, 17, 19, 295}, {7, 23, 232, 270, 271, 281, 441}),
    "aarch64": ({63, 65, 67, 69}, {22, 72, 73, 441}),
}
READS, POLLS = _SYSCALLS.get(platform.machine(), (set(), set()))


@dataclass(frozen=True, slots=True)
class Reader:
    pid: int
    command: str


def _stat(pid: int) -> tuple[str, int, str] | None:
    """(state, process group, command name) of `pid`."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    name = data[data.find(b"(") + 1 : data.rfind(b")")].decode(errors="replace")
    fields = data[data.rfind(b")") + 2 :].split()
    return fields[0].decode(), int(fields[2]), name


def _fd_target(pid: int, fd: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return None


def waiting_reader(master_fd: int, tty_path: str, pids: Iterable[int]) -> Reader | None:
    """A process among `pids`, in the terminal's foreground group, blocked reading it."""
    try:
        foreground = os.tcgetpgrp(master_fd)
    except OSError:
        return None
    for pid in pids:
        stat = _stat(pid)
        if stat is None or stat[1] != foreground or stat[0] != "S":
            continue
        try:
            with open(f"/proc/{pid}/syscall") as f:
                fields = f.read().split()
        except OSError:
            continue
        if not fields or not fields[0].isdigit():
            continue  # "running" or no access
        number = int(fields[0])
        if number in READS and len(fields) > 1:
            with contextlib.suppress(ValueError):
                if _fd_target(pid, int(fields[1], 16)) == tty_path:
                    return Reader(pid, stat[2])
        elif number in POLLS and _fd_target(pid, 0) == tty_path:
            return Reader(pid, stat[2])
    return None


class InputWatch:
    """Looks for a waiting reader whenever a PTY process's output has gone quiet.

    `poke()` (new output or input) starts a new quiet stretch; `report(reader)` is called at
    most once per stretch. `pids()` lists the processes to look at (the process's cgroup, or
    its tree).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        master_fd: int,
        tty_path: str,
        pids: Callable[[], Iterable[int]],
        last_activity: Callable[[], float],
        report: Callable[[Reader], None],
    ) -> None:
        self._loop = loop
        self._master_fd = master_fd
        self._tty_path = tty_path
        self._pids = pids
        self._last_activity = last_activity
        self._report = report
        self._timer: asyncio.TimerHandle | None = None
        self._looks = 0
        self._reported = False
        self.poke()

    def poke(self) -> None:
        """Something happened on the terminal: a new quiet stretch begins."""
        self._reported = False
        self._looks = 0
        if self._timer is None:
            self._timer = self._loop.call_at(self._last_activity() + QUIET_S, self._look)

    def _look(self) -> None:
        self._timer = None
        due = self._last_activity() + QUIET_S
        if self._loop.time() < due:  # activity since: wait for quiet again
            self._timer = self._loop.call_at(due, self._look)
            return
        if self._reported:
            return
        reader = waiting_reader(self._master_fd, self._tty_path, self._pids())
        if reader is not None:
            self._reported = True
            self._report(reader)
            return
        delay = RECHECK_S[min(self._looks, len(RECHECK_S) - 1)]
        self._looks += 1
        self._timer = self._loop.call_later(delay, self._look)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
