"""Per-process cgroups on the unified (v2) hierarchy, for hosts that delegate a subtree.

Layout under the server's own cgroup `D` (from `/proc/self/cgroup`, `0::D`):

    D/                      controllers memory, pids, cpu enabled for children
    D/execserver-server-<pid>/   the server itself, if it had to leave D (see below)
    D/execserver-<pid>/     the base: same controllers enabled; one child per process
    D/execserver-<pid>/p<N>/     memory.max, pids.max, cpu.max of one process tree

Controllers can only be handed to children of a cgroup with no processes of its own (the "no
internal processes" rule). If `D` holds only this server, the server moves into a leaf of its
own first; if it holds others, no controller is enabled: processes are still tracked and
killed as a whole, but limits are refused (`LimitsUnavailable`).

A thread cannot sit in another domain cgroup than its process, so the v1 trick (spawn from a
thread placed in the cgroup) does not apply: the child is cloned straight into its cgroup
(`CLONE_INTO_CGROUP` through glibc's `posix_spawnattr_setcgroup_np`, glibc >= 2.39). Without
it v2 is not used. Kills write `cgroup.kill` (atomic, reaches processes forking at that moment);
OOM kills are counted from `memory.events`.

All file access goes through `CgroupFs`, so the logic is tested against a fake cgroupfs tree
(tests/harness/fake_cgroupfs.py) that applies the kernel's rules.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import signal
from pathlib import Path
from typing import Protocol

from execserver.local import spawn as spawn_module
from execserver.local.cgroup import (
    CPU_PERIOD_US,
    Limits,
    Placement,
    ProcessCgroup,
    ProcessCgroups,
    Spawn,
    base_name,
    first_unused_number,
    read_int_field,
    signal_pids,
    sweep_stale,
)

log = logging.getLogger(__name__)

CONTROLLERS = {"memory": "memoryBytes", "pids": "pids", "cpu": "cpus"}
"""cgroup v2 controller -> the limit it enforces (wire name)."""
_KILL_ROUNDS = 16


class CgroupFs(Protocol):
    """The file operations the v2 code needs (the real cgroupfs, or a fake one in tests)."""

    def read(self, path: Path) -> str: ...

    def write(self, path: Path, text: str) -> None: ...

    def mkdir(self, path: Path) -> None: ...

    def rmdir(self, path: Path) -> None: ...

    def children(self, path: Path) -> list[Path]: ...

    def open_dir(self, path: Path) -> int: ...


class RealCgroupFs:
    def read(self, path: Path) -> str:
        return path.read_text()

    def write(self, path: Path, text: str) -> None:
        path.write_text(text)

    def mkdir(self, path: Path) -> None:
        path.mkdir()

    def rmdir(self, path: Path) -> None:
        path.rmdir()

    def children(self, path: Path) -> list[Path]:
        return [entry for entry in path.iterdir() if entry.is_dir()]

    def open_dir(self, path: Path) -> int:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def _unified_mount() -> Path | None:
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        head, _, tail = line.partition(" - ")
        fields = head.split()
        if tail.split()[:1] == ["cgroup2"] and len(fields) > 4:
            return Path(fields[4])
    return None


def _own_unified_path() -> str | None:
    """Our cgroup; for a server re-executed in place that had moved itself into its leaf
    (`CgroupV2._enable`), the cgroup it started in, so it finds the same base again."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                path = line[3:]
                if path.rsplit("/", 1)[-1] == f"execserver-server-{os.getpid()}":
                    path = path.rsplit("/", 1)[0] or "/"
                return path
    return None


class V2Cgroup:
    def __init__(self, fs: CgroupFs, directory: Path) -> None:
        self._fs = fs
        self.directory = directory
        self.name = directory.name

    def _read(self, file: str) -> str:
        try:
            return self._fs.read(self.directory / file)
        except OSError:
            return ""

    def pids(self) -> list[int]:
        return [int(pid) for pid in self._read("cgroup.procs").split()]

    def signal(self, sig: int) -> None:
        signal_pids(self.pids(), sig)

    def kill(self) -> None:
        try:
            self._fs.write(self.directory / "cgroup.kill", "1")
            return
        except OSError:  # before Linux 5.14: signal until empty
            pass
        for _ in range(_KILL_ROUNDS):
            pids = self.pids()
            if not pids:
                return
            signal_pids(pids, signal.SIGKILL)

    def oom_kills(self) -> int:
        return read_int_field(self._read("memory.events"), "oom_kill")

    def peak_memory(self) -> int | None:
        text = self._read("memory.peak").strip()  # Linux >= 5.19
        return int(text) if text.isdigit() else None

    def remove(self) -> bool:
        try:
            self._fs.rmdir(self.directory)
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                return False
            raise
        return True


class _V2Placement:
    def __init__(self, cgroup: V2Cgroup, fd: int) -> None:
        self._cgroup = cgroup
        self.cgroup_fd: int | None = fd

    def run(self, spawn: Spawn) -> int:
        return spawn()

    def finish(self, spawned: bool) -> ProcessCgroup | None:
        if self.cgroup_fd is not None:
            os.close(self.cgroup_fd)
            self.cgroup_fd = None
        if not spawned:
            with contextlib.suppress(OSError):
                self._cgroup.remove()
            return None
        return self._cgroup


class CgroupV2(ProcessCgroups):
    kind = "v2"

    def __init__(self, fs: CgroupFs, base: Path, controllers: frozenset[str]) -> None:
        self._fs = fs
        self.base = base
        self._controllers = controllers
        existing: list[str] = []
        with contextlib.suppress(OSError):
            existing = [child.name for child in fs.children(base)]
        self._names = itertools.count(first_unused_number(existing))
        missing = sorted(set(CONTROLLERS) - controllers)
        self.reason = (
            f"the cgroup v2 controllers {', '.join(missing)} are not delegated to this executor"
            if missing
            else ""
        )

    @property
    def enforceable(self) -> frozenset[str]:
        return frozenset(CONTROLLERS[c] for c in self._controllers)

    @property
    def bases(self) -> list[Path]:
        return [self.base]

    @classmethod
    def detect(cls) -> CgroupV2 | None:
        if not spawn_module.can_spawn_into_cgroup():
            return None
        mount, own = _unified_mount(), _own_unified_path()
        if mount is None or own is None:
            return None
        try:
            return cls.setup(RealCgroupFs(), mount / own.lstrip("/"), base_name(), os.getpid())
        except OSError as exc:
            log.info("cgroup v2 unusable (%s)", exc)
            return None

    @classmethod
    def setup(cls, fs: CgroupFs, own: Path, name: str, pid: int) -> CgroupV2:
        """Make the base `own/name`, with as many controllers as can be delegated to it.

        Raises `OSError` when the subtree is not writable at all."""
        wanted = set(CONTROLLERS) & set(_words(fs, own / "cgroup.controllers"))
        enabled = set(_words(fs, own / "cgroup.subtree_control"))
        if wanted - enabled:
            enabled = cls._enable(fs, own, wanted, pid)
        base = own / name
        if isinstance(fs, RealCgroupFs):
            sweep_stale(own)
        with contextlib.suppress(FileExistsError):
            fs.mkdir(base)
        delegated = wanted & enabled
        if delegated:
            with contextlib.suppress(OSError):
                fs.write(base / "cgroup.subtree_control", _plus(delegated))
        controllers = frozenset(delegated & set(_words(fs, base / "cgroup.subtree_control")))
        return cls(fs, base, controllers)

    @staticmethod
    def _enable(fs: CgroupFs, own: Path, wanted: set[str], pid: int) -> set[str]:
        """Enable `wanted` for `own`'s children; moves this server into a leaf if it is the only
        process in `own` (the no-internal-processes rule). Returns what is enabled."""
        try:
            fs.write(own / "cgroup.subtree_control", _plus(wanted))
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                log.info("cannot delegate cgroup controllers (%s)", exc)
                return set(_words(fs, own / "cgroup.subtree_control"))
            procs = [int(p) for p in _words(fs, own / "cgroup.procs")]
            if procs != [pid]:
                log.info("cgroup %s holds other processes: limits are unavailable", own)
                return set(_words(fs, own / "cgroup.subtree_control"))
            leaf = own / f"execserver-server-{pid}"
            with contextlib.suppress(FileExistsError):
                fs.mkdir(leaf)
            fs.write(leaf / "cgroup.procs", str(pid))
            fs.write(own / "cgroup.subtree_control", _plus(wanted))
        return set(_words(fs, own / "cgroup.subtree_control"))

    def adopt(self, name: str, limits: Limits | None) -> ProcessCgroup | None:
        return V2Cgroup(self._fs, self.base / name)

    def placement(self, limits: Limits | None) -> Placement:
        self.check(limits)
        directory = self.base / f"p{next(self._names)}"
        self._fs.mkdir(directory)
        cgroup = V2Cgroup(self._fs, directory)
        try:
            if limits is not None:
                self._write_limits(directory, limits)
            fd = self._fs.open_dir(directory)
        except BaseException:
            with contextlib.suppress(OSError):
                cgroup.remove()
            raise
        return _V2Placement(cgroup, fd)

    def _write_limits(self, directory: Path, limits: Limits) -> None:
        fs = self._fs
        if limits.memory_bytes is not None:
            fs.write(directory / "memory.max", str(limits.memory_bytes))
            with contextlib.suppress(OSError):  # absent without swap accounting
                fs.write(directory / "memory.swap.max", "0")
        if limits.pids is not None:
            fs.write(directory / "pids.max", str(limits.pids))
        if limits.cpus is not None:
            quota = max(1000, round(limits.cpus * CPU_PERIOD_US))
            fs.write(directory / "cpu.max", f"{quota} {CPU_PERIOD_US}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            for child in self._fs.children(self.base):
                cgroup = V2Cgroup(self._fs, child)
                cgroup.kill()
                with contextlib.suppress(OSError):
                    cgroup.remove()
        with contextlib.suppress(OSError):
            self._fs.rmdir(self.base)


def _words(fs: CgroupFs, path: Path) -> list[str]:
    try:
        return fs.read(path).split()
    except OSError:
        return []


def _plus(controllers: set[str]) -> str:
    return " ".join(f"+{c}" for c in sorted(controllers))


__all__ = ["CONTROLLERS", "CgroupFs", "CgroupV2", "RealCgroupFs", "V2Cgroup"]
