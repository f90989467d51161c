"""One cgroup per started process: kills reach every descendant, limits apply to the whole tree,
OOM kills are attributed.

A process tree found through process groups and parent links (local/tree.py) misses
descendants that both left the group (`setsid`) and lost their parent (a daemon whose parent
exited, a double fork). Cgroup membership is inherited on fork and cannot be left without
privileges, so killing every pid of the process's cgroup gets them all. The same cgroup carries
the process's limits (memory, pids, CPU) and counts its OOM kills.

A child is born in its cgroup, so there is no window in which it could fork outside:

* cgroup v1 (`CgroupV1`, this module): a new process joins the cgroups of the *thread* that
  forks it. The spawning thread (the event loop's) already sits in a fresh cgroup of the `pids`
  hierarchy when it spawns; right after, a mover thread moves it into the next fresh cgroup, in
  the background (`_Mover`). A migration waits for an RCU grace period when none happened
  recently (8-26 ms measured here), which is why it is kept off the spawn path. Before using
  its cgroup, a spawn checks that the spawning thread is still alone there: anything else it
  started meanwhile (a helper process, a thread of a pool created on demand) makes that cgroup
  unfit, and the thread migrates itself first (as it does when spawns come faster than the
  mover: cheap then, the grace period being warm). A thread it started between a spawn and
  the move stays in that process's cgroup, harmless there (a kill spares our own pid) until
  the cgroup is removed: one that will not go is emptied of our threads by the mover
  (`_Mover.evict`); a pids limit has them sent home right after the move. Limits need the
  `memory`/`cpu` hierarchies too: the spawning thread joins those cgroups for the spawn (that
  migration is on the path: the cost of a limited spawn, see docs/BENCHMARKS.md).
* cgroup v2 (local/cgroup_v2.py): threads of one process cannot sit in different (domain)
  cgroups, so the child is cloned straight into its cgroup (`CLONE_INTO_CGROUP`, glibc's
  `posix_spawnattr_setcgroup_np`, glibc >= 2.39).

`ProcessCgroups.create()` picks v2 where the host delegates a writable subtree and the libc can
clone into it, else v1 where the `pids` hierarchy is writable, else nothing (`disabled()`: the
tree walk alone applies and limits are refused). Every cgroup lives under one base directory per
server, `execserver-<pid>` (a second server in the same process adds `-<n>`), which the crash
watchdog (local/watchdog.py) empties if the server dies without cleaning up.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
PIDS_HIERARCHY = CGROUP_ROOT / "pids"
BASE_PREFIX = "execserver-"
_KILL_ROUNDS = 16
CPU_PERIOD_US = 100_000

T = TypeVar("T")
Spawn = Callable[[], int]
"""The libc call that starts the child (returns posix_spawn's error number)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits of one process tree (None: not limited)."""

    memory_bytes: int | None = None
    pids: int | None = None
    cpus: float | None = None
    """CPU time per wall-clock time (0.5: half a core; 2: two cores)."""

    def requested(self) -> list[str]:
        """Wire names of the limits that are set."""
        names = []
        if self.memory_bytes is not None:
            names.append("memoryBytes")
        if self.pids is not None:
            names.append("pids")
        if self.cpus is not None:
            names.append("cpus")
        return names


class LimitsUnavailable(Exception):
    """Limits were requested that this host cannot enforce; `str()` says which and why."""


class ProcessCgroup(Protocol):
    """The cgroup(s) of one started process."""

    name: str

    def pids(self) -> list[int]: ...

    def signal(self, sig: int) -> None:
        """Send `sig` to every process of the cgroup (once)."""
        ...

    def kill(self) -> None:
        """SIGKILL every process of the cgroup, again until none is left."""
        ...

    def oom_kills(self) -> int:
        """How many processes the memory controller's OOM killer ended in this cgroup."""
        ...

    def peak_memory(self) -> int | None:
        """The memory cgroup's peak usage in bytes (None without a memory cgroup)."""
        ...

    def remove(self) -> bool:
        """Remove the cgroup if it is empty; returns whether it is gone."""
        ...


class Placement(Protocol):
    """Where the next spawn's child is born; made by `ProcessCgroups.placement()`."""

    cgroup_fd: int | None
    """A cgroup v2 directory to clone the child into (v1: None)."""

    def run(self, spawn: Spawn) -> int:
        """Run the libc spawn call so that its child is born in the cgroup."""
        ...

    def finish(self, spawned: bool) -> ProcessCgroup | None:
        """After the spawn attempt: the child's cgroup if one was spawned (else it is dropped)."""
        ...


class _NoPlacement:
    cgroup_fd: int | None = None

    def run(self, spawn: Spawn) -> int:
        return spawn()

    def finish(self, spawned: bool) -> ProcessCgroup | None:
        return None


NO_PLACEMENT: Placement = _NoPlacement()


MAX_FREE = 64
"""Empty cgroups kept for reuse (v1)."""


class ProcessCgroups:
    """Per-process cgroups of one server (this base class: none, `disabled()`)."""

    kind: str | None = None
    """"v1", "v2" or None (disabled)."""
    reason = "no writable cgroup hierarchy was found"
    """Why limits cannot be enforced (for the error)."""

    @property
    def enabled(self) -> bool:
        return self.kind is not None

    @property
    def enforceable(self) -> frozenset[str]:
        """Wire names of the limits this host can enforce."""
        return frozenset()

    @property
    def bases(self) -> list[Path]:
        """The base directories (one per hierarchy) holding every process cgroup."""
        return []

    @classmethod
    def disabled(cls) -> ProcessCgroups:
        return cls()

    @classmethod
    def create(cls, *, dedicated: bool = False) -> ProcessCgroups:
        """The best mechanism this host offers (see the module docstring). `dedicated`: this
        process is a server of its own (`execserver serve`), not embedded in a program."""
        from execserver.local.cgroup_v2 import CgroupV2

        v2 = CgroupV2.detect()
        if v2 is not None:
            return v2
        v1 = CgroupV1.detect(dedicated=dedicated)
        if v1 is not None:
            return v1
        return cls.disabled()

    def check(self, limits: Limits | None) -> None:
        """Raise `LimitsUnavailable` unless every requested limit can be enforced."""
        if limits is None:
            return
        missing = [name for name in limits.requested() if name not in self.enforceable]
        if missing:
            raise LimitsUnavailable(
                f"this executor cannot enforce {', '.join(missing)}: {self.reason}"
            )

    def placement(self, limits: Limits | None) -> Placement:
        """A fresh cgroup (with `limits`) for the next spawn. Raises `LimitsUnavailable`."""
        self.check(limits)
        return NO_PLACEMENT

    def release(self, cgroup: ProcessCgroup) -> bool:
        """The process closed: remove its cgroup if empty (or keep it for reuse). Returns
        whether it is gone from the process; its handle must not be used afterwards."""
        return cgroup.remove()

    def aside(self, spawn: Spawn) -> int:
        """Run the libc spawn of a helper of the server's own (not a process of a client), so
        that its child is not born in a process's cgroup, where a kill of that process would
        reach it."""
        return spawn()

    def adopt(self, name: str, limits: Limits | None) -> ProcessCgroup | None:
        """The cgroup `name` of a process carried over by an upgrade in place (same pid, so
        the same base directories), or None where this host has none."""
        return None

    def close(self) -> None:
        """Kill what is left in every cgroup and remove them all (server shutdown)."""


# -- cgroup v1 ------------------------------------------------------------------------------------


def read_int_field(text: str, key: str) -> int:
    """`key N` from a flat keyed file (memory.events, memory.oom_control); 0 if absent."""
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _write_number(path: Path, number: int) -> None:
    """Write `number` to a cgroup file with one system call (no text layer: a thread's move
    is on the spawn path). Raises OSError as the kernel refuses."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, str(number).encode())
    finally:
        os.close(fd)


def _counter(path: Path) -> int | None:
    """A small numeric cgroup file (`pids.current`), read cheaply; None if unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        text = os.read(fd, 64).strip()
    except OSError:
        return None
    finally:
        os.close(fd)
    return int(text) if text.isdigit() else None


def pids_in(directory: Path) -> list[int]:
    """The processes of a cgroup, never this server itself (a v1 cgroup lists our pid while
    one of our spawning threads sits in it)."""
    own = os.getpid()
    return [pid for pid in map(int, _read(directory / "cgroup.procs").split()) if pid != own]


def signal_pids(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def send_own_threads_home(directory: Path, home: Path, spare: int | None = None) -> None:
    """Move this server's threads (but `spare`) from cgroup `directory` back to `home`."""
    for task in _read(directory / "tasks").split():
        if task != str(spare) and os.path.exists(f"/proc/self/task/{task}"):
            with contextlib.suppress(OSError):
                _write_number(home / "tasks", int(task))


def kill_until_empty(directory: Path) -> None:
    for _ in range(_KILL_ROUNDS):
        pids = pids_in(directory)
        if not pids:
            return
        signal_pids(pids, signal.SIGKILL)


def rmdir(directory: Path) -> bool:
    """Remove a cgroup directory; False while it still holds processes."""
    try:
        directory.rmdir()
    except FileNotFoundError:
        return True
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            return False
        raise
    return True


def _mountinfo_v1() -> dict[str, Path]:
    """controller -> mount point of its v1 hierarchy."""
    mounts: dict[str, Path] = {}
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return mounts
    for line in lines:
        head, _, tail = line.partition(" - ")
        fields, tail_fields = head.split(), tail.split()
        if len(fields) < 5 or len(tail_fields) < 3 or tail_fields[0] != "cgroup":
            continue
        for option in tail_fields[2].split(","):
            mounts.setdefault(option, Path(fields[4]))
    return mounts


def _own_v1_paths() -> dict[str, str]:
    """controller -> this thread's cgroup path in that v1 hierarchy."""
    paths: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/thread-self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for controller in controllers.split(","):
                if controller:
                    paths[controller] = path
    return paths


_base_numbers = itertools.count()


def sweep_stale(parent: Path) -> None:
    """Empty and remove the bases in `parent` of servers that are gone (`execserver-<pid>`
    whose pid no longer exists: a crash the watchdog did not handle, or a server that never
    ran its cleanup)."""
    from execserver.local.watchdog import sweep

    stale = []
    with contextlib.suppress(OSError):
        for entry in parent.iterdir():
            pid = entry.name[len(BASE_PREFIX) :].split("-", 1)[0]
            gone = pid.isdigit() and not os.path.exists(f"/proc/{pid}")
            if entry.name.startswith(BASE_PREFIX) and gone:
                stale.append(entry)
    if stale:
        log.info("removing cgroups left by servers that are gone: %s", stale)
        sweep(stale)


def first_unused_number(names: Iterable[str]) -> int:
    """The first `N` after every `p<N>` in `names`: a server re-executed in place (same pid,
    same base) finds the cgroups of the processes it carried over there and must not reuse
    their names."""
    numbers = [int(name[1:]) for name in names if name[:1] == "p" and name[1:].isdigit()]
    return max(numbers, default=0) + 1


def _entries(directory: Path) -> list[str]:
    try:
        return os.listdir(directory)
    except OSError:
        return []


def base_name() -> str:
    """`execserver-<pid>` for the first server of this process, then `execserver-<pid>-<n>`.

    A server re-executed in place (same pid) finds its own base again."""
    number = next(_base_numbers)
    return f"{BASE_PREFIX}{os.getpid()}" + (f"-{number}" if number else "")


class _V1Hierarchy:
    """One v1 hierarchy: our base directory in it and the cgroup we live in."""

    def __init__(self, base: Path, home: Path) -> None:
        self.base = base
        self.home = home

    def place(self, name: str, tid: int, *, exists: bool = False) -> None:
        """Move thread `tid` into cgroup `name`, created first unless it `exists` (a recycled
        one: no mkdir on the way)."""
        target = self.base / name
        if not exists:
            with contextlib.suppress(FileExistsError):
                target.mkdir()
        try:
            _write_number(target / "tasks", tid)
        except FileNotFoundError:
            if not exists:
                raise
            self.place(name, tid)  # removed meanwhile: created again

    def enter(self, name: str, *, exists: bool = False) -> None:
        """Move the calling thread into cgroup `name`."""
        self.place(name, threading.get_native_id(), exists=exists)

    def leave(self) -> None:
        _write_number(self.home / "tasks", threading.get_native_id())


class V1Cgroup:
    """One process's cgroups in the v1 hierarchies (`pids`, plus `memory`/`cpu` if limited)."""

    def __init__(
        self,
        name: str,
        pids: Path,
        memory: Path | None,
        others: list[Path],
        *,
        limited: bool,
        evict: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self._dir = pids
        self._memory = memory
        self._dirs = [pids, *([memory] if memory is not None else []), *others]
        self.limited = limited
        self._evict = evict
        """Where to report a cgroup that would not go (a thread of ours may be in it)."""

    def pids(self) -> list[int]:
        return pids_in(self._dir)

    def signal(self, sig: int) -> None:
        signal_pids(self.pids(), sig)

    def kill(self) -> None:
        kill_until_empty(self._dir)

    def oom_kills(self) -> int:
        if self._memory is None:
            return 0
        return read_int_field(_read(self._memory / "memory.oom_control"), "oom_kill")

    def peak_memory(self) -> int | None:
        if self._memory is None:
            return None
        text = _read(self._memory / "memory.max_usage_in_bytes").strip()
        return int(text) if text.isdigit() else None

    def remove(self) -> bool:
        gone = True
        for directory in self._dirs:
            try:
                gone = rmdir(directory) and gone
            except OSError:
                gone = False
        if not gone and self._evict is not None:
            self._evict(self.name)
        return gone


class CgroupV1(ProcessCgroups):
    kind = "v1"

    def __init__(
        self,
        pids: _V1Hierarchy,
        memory: _V1Hierarchy | None,
        cpu: _V1Hierarchy | None,
        *,
        dedicated: bool = False,
    ) -> None:
        self._pids = pids
        self._memory = memory
        self._cpu = cpu
        self._names = itertools.count(first_unused_number(_entries(pids.base)))
        self._free: deque[str] = deque()
        """Empty unlimited cgroups of finished processes, reused by the mover."""
        self.reason = "no writable cgroup hierarchy for " + (
            "memory" if memory is None else "cpu" if cpu is None else "(none missing)"
        )
        self.mover = _Mover(self)
        self.dedicated = dedicated
        """Whether the spawning thread may sit in a fresh cgroup between spawns (a dedicated
        server process). Embedded in another program, that thread is the program's: anything
        it started would be born in our cgroup (and die with it), so each spawn migrates there
        and back instead (the grace-period cost on the path, see the module docstring)."""

    @property
    def enforceable(self) -> frozenset[str]:
        names = {"pids"}
        if self._memory is not None:
            names.add("memoryBytes")
        if self._cpu is not None:
            names.add("cpus")
        return frozenset(names)

    @property
    def bases(self) -> list[Path]:
        return [h.base for h in (self._pids, self._memory, self._cpu) if h is not None]

    @classmethod
    def detect(cls, *, dedicated: bool = False) -> CgroupV1 | None:
        mounts = _mountinfo_v1()
        own = _own_v1_paths()
        name = base_name()

        def hierarchy(controller: str, probe_file: str) -> _V1Hierarchy | None:
            if controller not in mounts or controller not in own:
                return None
            home = mounts[controller] / own[controller].lstrip("/")
            sweep_stale(home)
            base = home / name
            try:
                with contextlib.suppress(FileExistsError):
                    base.mkdir()
                if not (base / probe_file).exists():
                    raise OSError(errno.ENOENT, f"{probe_file} missing")
            except OSError as exc:
                log.info("cgroup v1 %s hierarchy unusable (%s)", controller, exc)
                with contextlib.suppress(OSError):
                    base.rmdir()
                return None
            return _V1Hierarchy(base, home)

        pids = hierarchy("pids", "tasks")
        if pids is None:
            return None
        try:  # prove that a thread can move (permissions differ between hosts and containers)
            pids.enter("probe")
            pids.leave()
            rmdir(pids.base / "probe")
        except OSError as exc:
            log.info("per-process cgroups unavailable (%s); using the process tree walk", exc)
            with contextlib.suppress(OSError):
                rmdir(pids.base)
            return None
        memory = hierarchy("memory", "memory.limit_in_bytes")
        cpu = hierarchy("cpu", "cpu.cfs_quota_us")
        return cls(pids, memory, cpu, dedicated=dedicated)

    def new_name(self) -> str:
        return f"p{next(self._names)}"

    def reuse_or_new(self) -> tuple[str, bool]:
        """An empty cgroup to recycle (no mkdir/rmdir on the way), else a new name; and
        whether the cgroup exists already."""
        try:
            return self._free.pop(), True
        except IndexError:
            return self.new_name(), False

    def release(self, cgroup: ProcessCgroup) -> bool:
        # An unlimited cgroup that is empty (no process, no thread of ours) is kept for reuse.
        if not isinstance(cgroup, V1Cgroup) or cgroup.limited or len(self._free) >= MAX_FREE:
            return cgroup.remove()
        # pids.current counts threads and unreaped processes; far cheaper than listing tasks.
        if _counter(self._pids.base / cgroup.name / "pids.current") != 0:
            return False
        self._free.append(cgroup.name)
        return True

    def placement(self, limits: Limits | None) -> Placement:
        self.check(limits)
        return _V1Placement(self, limits)

    def aside(self, spawn: Spawn) -> int:
        if not self.dedicated:  # the spawning thread sits in a cgroup of ours only to spawn
            return spawn()
        # Between a spawn and its move the spawning thread is still in that process's cgroup:
        # the helper is born in a fresh one instead, which it then has to itself.
        mover = self.mover
        with mover.lock:
            name = mover.take_fresh()
            try:
                return spawn()
            finally:
                mover.set_aside(name)

    def adopt(self, name: str, limits: Limits | None) -> ProcessCgroup | None:
        return self.handle(name, limits)

    def prepare_limits(self, name: str, limits: Limits) -> list[_V1Hierarchy]:
        """Write `limits` into cgroup `name` of each hierarchy; returns the extra hierarchies
        (memory, cpu) the spawning thread must join."""
        extra: list[_V1Hierarchy] = []
        if limits.pids is not None:
            # +1: the spawning thread counts until it leaves (`settle_limits` lowers it).
            (self._pids.base / name / "pids.max").write_text(str(limits.pids + 1))
        if limits.memory_bytes is not None and self._memory is not None:
            directory = self._memory.base / name
            with contextlib.suppress(FileExistsError):
                directory.mkdir()
            (directory / "memory.limit_in_bytes").write_text(str(limits.memory_bytes))
            swap = directory / "memory.memsw.limit_in_bytes"
            if swap.exists():  # no escape into swap
                swap.write_text(str(limits.memory_bytes))
            extra.append(self._memory)
        if limits.cpus is not None and self._cpu is not None:
            directory = self._cpu.base / name
            with contextlib.suppress(FileExistsError):
                directory.mkdir()
            (directory / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
            quota = max(1000, round(limits.cpus * CPU_PERIOD_US))
            (directory / "cpu.cfs_quota_us").write_text(str(quota))
            extra.append(self._cpu)
        return extra

    def settle_limits(self, name: str, limits: Limits) -> None:
        """The spawning thread has left cgroup `name`: the pids limit becomes exact."""
        if limits.pids is not None:
            with contextlib.suppress(OSError):
                (self._pids.base / name / "pids.max").write_text(str(limits.pids))

    def spawn_in(self, name: str, limits: Limits | None, spawn: Spawn) -> int:
        """On a thread already in pids cgroup `name`: join the limit hierarchies, spawn, leave."""
        extra = self.prepare_limits(name, limits) if limits is not None else []
        joined: list[_V1Hierarchy] = []
        try:
            for hierarchy in extra:
                hierarchy.enter(name)
                joined.append(hierarchy)
            return spawn()
        finally:
            for hierarchy in joined:
                hierarchy.leave()

    def handle(self, name: str, limits: Limits | None) -> V1Cgroup:
        memory = others = None
        if limits is not None:
            if limits.memory_bytes is not None and self._memory is not None:
                memory = self._memory.base / name
            if limits.cpus is not None and self._cpu is not None:
                others = [self._cpu.base / name]
        return V1Cgroup(
            name,
            self._pids.base / name,
            memory,
            others or [],
            limited=limits is not None,
            evict=self.mover.evict if self.dedicated else None,
        )

    @property
    def pids_hierarchy(self) -> _V1Hierarchy:
        return self._pids

    def close(self) -> None:
        self.mover.close()
        with contextlib.suppress(OSError):
            for entry in self._pids.base.iterdir():
                if entry.is_dir():
                    kill_until_empty(entry)
                    send_own_threads_home(entry, self._pids.home)
        for hierarchy in (self._pids, self._memory, self._cpu):
            if hierarchy is None:
                continue
            with contextlib.suppress(OSError):
                for entry in hierarchy.base.iterdir():
                    if entry.is_dir():
                        with contextlib.suppress(OSError):
                            rmdir(entry)
            with contextlib.suppress(OSError):
                rmdir(hierarchy.base)


class _V1Placement:
    cgroup_fd: int | None = None

    def __init__(self, cgroups: CgroupV1, limits: Limits | None) -> None:
        self._cgroups = cgroups
        self._limits = limits
        self._name: str | None = None

    def run(self, spawn: Spawn) -> int:
        cgroups, limits = self._cgroups, self._limits
        if not cgroups.dedicated:
            name, exists = cgroups.reuse_or_new()
            self._name = name
            pids = cgroups.pids_hierarchy
            pids.enter(name, exists=exists)
            try:
                return cgroups.spawn_in(name, limits, spawn)
            finally:
                pids.leave()
        mover = cgroups.mover
        with mover.lock:
            name = self._name = mover.take_fresh()
            return cgroups.spawn_in(name, limits, spawn)

    def finish(self, spawned: bool) -> ProcessCgroup | None:
        cgroups, name, limits = self._cgroups, self._name, self._limits
        if name is None:
            return None
        handle = cgroups.handle(name, limits)
        if not cgroups.dedicated:  # the thread has left already
            if spawned and limits is not None:
                cgroups.settle_limits(name, limits)
            elif not spawned:
                with contextlib.suppress(OSError):
                    handle.remove()
        else:  # whatever happened, the spawning thread must leave this cgroup now
            cgroups.mover.used(name, limits, spawned=spawned)
        return handle if spawned else None


class _Mover:
    """Keeps the spawning thread in a fresh pids cgroup: moves it after each spawn, in a
    thread of its own (see the module docstring). `lock` serializes moves and spawns."""

    def __init__(self, cgroups: CgroupV1) -> None:
        self._cgroups = cgroups
        self.lock = threading.Lock()
        self._tid: int | None = None
        """The spawning thread (the first one that spawned)."""
        self._fresh: str | None = None
        """The cgroup it sits in, if nothing was started there yet."""
        self._after_move: deque[tuple[str, Limits | None, bool]] = deque()
        """(cgroup, limits, spawned) to settle once the thread has left the cgroup: the pids
        limit made exact, or the cgroup removed if nothing was spawned there."""
        self._tainted: deque[str] = deque()
        """Cgroups the spawning thread left with something else in them (see `_alone`)."""
        self._evictions: dict[str, None] = {}
        """Used cgroups that would not go: threads of ours are sent home from them (once per
        report; see `evict`)."""
        self._wanted = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    def take_fresh(self) -> str:
        """The calling thread's fresh cgroup (moving it into one now if need be); no longer
        fresh afterwards. Call with `lock` held."""
        cgroups = self._cgroups
        tid = threading.get_native_id()
        name = self._fresh if tid == self._tid else None
        self._fresh = None
        if name is not None and not self._alone(name, tid):
            self._tainted.append(name)  # removed once what was started there is gone
            name = None
        if name is None:
            name = cgroups.new_name()
            cgroups.pids_hierarchy.enter(name)
            self._tid = tid
        return name

    def _alone(self, name: str, tid: int) -> bool:
        """Whether only the spawning thread is in cgroup `name` (nothing it started since it
        was moved there: a helper process, or a pool thread created on demand)."""
        directory = self._cgroups.pids_hierarchy.base / name
        # A cheap check (listing a v1 cgroup's tasks costs ~0.1 ms): one task in the cgroup.
        # That task is this thread: the mover put it there (`_fresh` is set only after its
        # write succeeded) and nothing else moves it; anything it started since would be a
        # second task.
        if _counter(directory / "pids.current") == 1:
            return True
        self._send_threads_home(name, tid)
        return False

    def _send_threads_home(self, name: str, spawning: int | None) -> None:
        """Move the server's own threads (but `spawning`) out of cgroup `name`: a thread
        created by the spawning thread while it sat there must not stay in a process's
        cgroup."""
        pids = self._cgroups.pids_hierarchy
        send_own_threads_home(pids.base / name, pids.home, spawning)

    def used(self, name: str, limits: Limits | None, *, spawned: bool) -> None:
        """A spawn used cgroup `name`: move the spawning thread out of it soon (without
        waiting for a move in progress)."""
        self._after_move.append((name, limits, spawned))
        self._wake()

    def evict(self, name: str) -> None:
        """Cgroup `name` of a finished spawn could not be removed: a thread the spawning
        thread created between that spawn and its move may be in it. Send our threads home
        and remove the pids cgroup, in the mover's thread (a migration can wait for an RCU
        grace period); the owner's next `remove()` finds it gone."""
        self._evictions[name] = None
        self._wake()

    def set_aside(self, name: str) -> None:
        """Cgroup `name`, the spawning thread's, now holds a helper process of ours: the
        thread moves on (in the background) and the cgroup goes once the helper has."""
        self._tainted.append(name)
        self._wake()

    def _wake(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._main, name="execserver-cgroup-mover", daemon=True
            )
            self._thread.start()
        self._wanted.set()

    def _main(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            with self.lock:
                if self._closed:
                    return
                self._move()

    def _move(self) -> None:
        cgroups = self._cgroups
        if self._fresh is None and self._tid is not None:
            name, exists = cgroups.reuse_or_new()
            try:
                cgroups.pids_hierarchy.place(name, self._tid, exists=exists)
            except OSError as exc:
                # The thread is gone or cannot move: the next spawn moves it itself.
                log.warning("could not move the spawning thread to a fresh cgroup: %s", exc)
                with contextlib.suppress(OSError):
                    rmdir(cgroups.pids_hierarchy.base / name)
                return
            self._fresh = name
        for _ in range(min(len(self._tainted), 8)):  # retried after each spawn, a few at a time
            name = self._tainted.popleft()
            self._send_threads_home(name, None)
            try:
                if not rmdir(cgroups.pids_hierarchy.base / name):
                    self._tainted.append(name)
            except OSError:
                pass
        while self._evictions:
            name, _ = self._evictions.popitem()  # atomic: `evict` adds from another thread
            self._send_threads_home(name, self._tid)
            with contextlib.suppress(OSError):
                rmdir(cgroups.pids_hierarchy.base / name)
        while self._after_move:
            name, limits, spawned = self._after_move.popleft()
            if spawned and limits is not None and limits.pids is not None:
                # A thread of ours there would take one of the process's pids; otherwise a
                # stray thread is harmless until the cgroup is removed (`evict`), and listing
                # the tasks after every spawn would cost ~0.1 ms of this thread's time.
                self._send_threads_home(name, None)
            if spawned and limits is not None:
                cgroups.settle_limits(name, limits)
            elif not spawned:
                with contextlib.suppress(OSError):
                    cgroups.handle(name, limits).remove()

    def close(self) -> None:
        with self.lock:
            self._closed = True
        self._wanted.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        with contextlib.suppress(OSError):
            if self._tid == threading.get_native_id():
                self._cgroups.pids_hierarchy.leave()


__all__ = [
    "BASE_PREFIX",
    "NO_PLACEMENT",
    "PIDS_HIERARCHY",
    "CgroupV1",
    "Limits",
    "LimitsUnavailable",
    "Placement",
    "ProcessCgroup",
    "ProcessCgroups",
]
