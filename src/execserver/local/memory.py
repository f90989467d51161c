"""The server's memory budget: how much memory requests can make the server hold.

One figure (`serve --max-memory`, by default a quarter of the machine's memory or of the
cgroup limit, whichever is lower, within 256 MiB .. 16 GiB) is shared out by kind, a quarter
each: whole-file reads (`fs/readFile` data until the response is sent), buffered
`http/request` bodies, and stdin queued for processes that have not read it yet. The last
quarter is headroom for the copies encoding makes. Past a share, the request that would
exceed it fails with an error naming the way around it (blocks, streaming); nothing waits.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

MiB = 1024 * 1024
MIN_MEMORY_BUDGET = 256 * MiB
MAX_MEMORY_BUDGET = 16 * 1024 * MiB


def _cgroup_limit() -> int | None:
    """The memory limit of this process's cgroup (v2 or v1), if there is one."""
    try:
        with open("/proc/self/cgroup", encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    candidates = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            candidates.append(f"/sys/fs/cgroup{path}/memory.max")
        elif "memory" in controllers.split(","):
            candidates.append(f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")
    for candidate in candidates:
        try:
            with open(candidate, encoding="ascii") as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit():
            return int(text)
    return None


def default_memory_budget() -> int:
    """A quarter of the memory this process may use, within the floor and the ceiling."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError):
        physical = 4 * MIN_MEMORY_BUDGET
    limit = _cgroup_limit()
    usable = physical if limit is None else min(physical, limit)
    return max(MIN_MEMORY_BUDGET, min(MAX_MEMORY_BUDGET, usable // 4))


class ByteBudget:
    """A share of the budget: bytes reserved and released by any thread."""

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        return self._used

    def available(self) -> int:
        return max(0, self.limit - self._used)

    def try_reserve(self, size: int) -> bool:
        with self._lock:
            if self._used + size > self.limit:
                return False
            self._used += size
            return True

    def release(self, size: int) -> None:
        with self._lock:
            self._used -= size


class Reservation:
    """Bytes of one request, grown as its data arrives (possibly on a blocking thread) and
    released once; after the release it grows no more, so a step still running on a thread
    when its request was given up cannot hold bytes nobody will release."""

    def __init__(self, budget: ByteBudget) -> None:
        self.budget = budget
        self.size = 0
        self._released = False
        self._lock = threading.Lock()

    def grow_to(self, total: int) -> bool:
        """Hold `total` bytes; False (holding what it held) if the budget has no room."""
        with self._lock:
            extra = total - self.size
            if extra <= 0:
                return not self._released
            if self._released or not self.budget.try_reserve(extra):
                return False
            self.size = total
            return True

    def left(self) -> int:
        """The most this reservation could hold now."""
        return self.size + self.budget.available()

    def release(self) -> None:
        with self._lock:
            size, self.size = self.size, 0
            self._released = True
        if size:
            self.budget.release(size)


@dataclass(frozen=True, slots=True)
class MemoryBudget:
    total: int
    file_reads: ByteBudget
    http_bodies: ByteBudget
    stdin: ByteBudget

    @classmethod
    def of(cls, total: int | None = None) -> MemoryBudget:
        total = default_memory_budget() if total is None else total
        share = total // 4
        return cls(
            total,
            ByteBudget("whole-file reads", share),
            ByteBudget("buffered http bodies", share),
            ByteBudget("pending stdin", share),
        )
