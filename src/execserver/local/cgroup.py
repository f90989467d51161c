"""One cgroup per started process, so a kill reaches descendants that escaped the tree.

A process tree is found through its process group and parent links (local/tree.py), which
misses descendants that both left the group (`setsid`) and lost their parent (a daemon whose
parent exited, a double fork). Cgroup membership is inherited on fork and cannot be left
without privileges, so killing every pid of the process's cgroup gets them all.

The child is born in its cgroup: the spawning thread moves itself in (cgroup v1 `tasks` takes
a thread id), spawns, and moves back, so there is no window in which the child could fork
outside. Only the v1 `pids` hierarchy is used (it needs no controller setup and has a
`tasks` file); where it is missing or not writable, `ProcessCgroups.create()` returns a
tracker that does nothing and the tree walk alone applies.

Cost: a cgroup migration waits for an RCU grace period, about 8 ms per spawn on an idle
2-core machine (measured with bench/latency.py: p50 1.8 ms without, 9.4 ms with), which is why
`execserver serve` enables this only with `--process-cgroups`. Next step: spawn from threads
that already sit in a fresh cgroup (a small pre-warmed pool), so no migration is on the path.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

PIDS_HIERARCHY = Path("/sys/fs/cgroup/pids")
_KILL_ROUNDS = 16


def _own_pids_cgroup() -> str | None:
    try:
        lines = Path("/proc/thread-self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "pids" in controllers.split(","):
            return path
    return None


class ProcessCgroups:
    """Cgroups `<own>/execserver-<pid>/<name>` under the v1 pids hierarchy."""

    def __init__(self, base: Path | None, home: Path | None) -> None:
        self.base = base
        """The directory holding one cgroup per process (None: disabled)."""
        self._home = home
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.base is not None

    @classmethod
    def disabled(cls) -> ProcessCgroups:
        return cls(None, None)

    @classmethod
    def create(cls, hierarchy: Path = PIDS_HIERARCHY) -> ProcessCgroups:
        own = _own_pids_cgroup()
        if own is None or not (hierarchy / "tasks").exists():
            return cls.disabled()
        home = hierarchy / own.lstrip("/")
        base = home / f"execserver-{os.getpid()}"
        try:
            base.mkdir(exist_ok=True)
            tracker = cls(base, home)
            # Prove the move works (permissions differ between hosts and containers).
            with tracker.enter("probe"):
                pass
            tracker.remove("probe")
        except OSError as exc:
            log.info("per-process cgroups unavailable (%s); using the process tree walk", exc)
            with contextlib.suppress(OSError):
                base.rmdir()
            return cls.disabled()
        return tracker

    @contextlib.contextmanager
    def enter(self, name: str) -> Iterator[None]:
        """Run the body (a spawn) with this thread inside the cgroup `name`."""
        if self.base is None or self._home is None:
            yield
            return
        with self._lock:
            tid = str(threading.get_native_id())
            try:
                target = self.base / name
                target.mkdir(exist_ok=True)
                (target / "tasks").write_text(tid)
            except OSError as exc:
                # Degrade to the tree walk for this process rather than refuse to start it.
                log.warning("could not enter cgroup %s: %s", name, exc)
                yield
                return
            try:
                yield
            finally:
                (self._home / "tasks").write_text(tid)

    def pids(self, name: str) -> list[int]:
        if self.base is None:
            return []
        try:
            text = (self.base / name / "cgroup.procs").read_text()
        except OSError:
            return []
        return [int(line) for line in text.split()]

    def kill(self, name: str) -> None:
        """SIGKILL every process of the cgroup, again until none is left (or it stops helping)."""
        for _ in range(_KILL_ROUNDS):
            pids = self.pids(name)
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)

    def remove(self, name: str) -> bool:
        """Remove the cgroup if it is empty; returns whether it is gone."""
        if self.base is None:
            return True
        try:
            (self.base / name).rmdir()
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                return False
            raise
        return True

    def close(self) -> None:
        """Kill what is left in every cgroup and remove them all (server shutdown)."""
        if self.base is None:
            return
        with contextlib.suppress(OSError):
            for entry in self.base.iterdir():
                if entry.is_dir():
                    self.kill(entry.name)
                    with contextlib.suppress(OSError):
                        self.remove(entry.name)
        with contextlib.suppress(OSError):
            self.base.rmdir()


__all__ = ["PIDS_HIERARCHY", "ProcessCgroups"]
