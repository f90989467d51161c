"""Bubblewrap: find and probe the system `bwrap` once, and build its command line for a policy.

The filesystem view is built in layers, later mounts winning: the base (the host read-write
when `/` is a writable root, else the host read-only, or an empty tmpfs with the `minimal`
system directories), a fresh `/dev`, then writable roots and the read-only paths inside them
(protected metadata, read entries) from the shallowest to the deepest, then denied paths masked
by empty, inaccessible mounts. A read-only path that crosses a symlink inside a writable root
cannot be enforced (the program could swap the link) and is refused. The program runs in new
user, PID and IPC namespaces with no capabilities, and in a new network namespace (plus a
seccomp filter) when the network is restricted.
Missing or unusable bubblewrap raises `SandboxUnavailable`: callers refuse, never run unsandboxed.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field

from execserver.local.sandbox.policy import MINIMAL_PATHS, Mechanism, ResolvedPolicy, SandboxError
from execserver.local.sandbox.scratch import scratch_directory
from execserver.local.spawn import SpawnRun, Stdio, spawn

BWRAP_ENV = "EXECSERVER_BWRAP"
SECCOMP_FD = 3


class SandboxUnavailable(Exception):
    """Sandbox enforcement is not possible on this host; `str()` says why."""


@dataclass(frozen=True, slots=True)
class Bwrap:
    path: bytes
    version: tuple[int, ...]

    @property
    def has_argv0(self) -> bool:
        return self.version >= (0, 9)


_probed: dict[bytes, Bwrap | str] = {}


def _run(argv: list[bytes], run: SpawnRun | None) -> tuple[int, bytes]:
    """Run a short probe synchronously and reap it ourselves (no SIGCHLD race)."""
    read_end, write_end = os.pipe()
    try:
        stdio = Stdio(None, write_end, write_end)
        pid = spawn(argv[0], argv, [b"PATH=/usr/bin:/bin"], b"/", stdio, run=run)
    finally:
        os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), data


def locate(env: Mapping[str, str] | None = None, *, run: SpawnRun | None = None) -> Bwrap:
    """The usable bubblewrap (from $EXECSERVER_BWRAP or PATH), probed once per path; `run`
    spawns the probes (`ProcessCgroups.aside`: never in a process's cgroup, where its pids
    limit could fail them, and a failed probe is kept)."""
    env = os.environ if env is None else env
    configured = env.get(BWRAP_ENV)
    found = configured if configured is not None else shutil.which("bwrap", path=env.get("PATH"))
    if not found:
        raise SandboxUnavailable("bubblewrap (bwrap) is not installed on this executor")
    path = os.fsencode(found)
    cached = _probed.get(path)
    if cached is None:
        cached = _probed[path] = _probe(path, run)
    if isinstance(cached, str):
        raise SandboxUnavailable(cached)
    return cached


def _probe(path: bytes, run: SpawnRun | None) -> Bwrap | str:
    try:
        code, out = _run([path, b"--version"], run)
    except OSError as exc:
        return f"bubblewrap at {os.fsdecode(path)} cannot run: {exc.strerror}"
    words = out.decode(errors="replace").split()
    try:
        version = tuple(int(p) for p in words[-1].split("."))
    except (ValueError, IndexError):
        return f"bubblewrap at {os.fsdecode(path)} did not report a version"
    if code != 0 or version < (0, 5):
        return f"bubblewrap at {os.fsdecode(path)} is too old (need 0.5 or newer)"
    smoke = [
        path,
        b"--ro-bind",
        b"/",
        b"/",
        b"--unshare-user",
        b"--unshare-pid",
        b"--unshare-net",
        b"--cap-drop",
        b"ALL",
        b"--proc",
        b"/proc",
        b"--",
        b"/bin/true",
    ]
    try:
        code, out = _run(smoke, run)
    except OSError as exc:
        return f"bubblewrap cannot run: {exc.strerror}"
    if code != 0:
        detail = out.decode(errors="replace").strip() or f"exit status {code}"
        return f"bubblewrap cannot create namespaces on this host: {detail}"
    return Bwrap(path, version)


@dataclass(slots=True)
class MountPlan:
    """bwrap arguments plus host-side placeholders to clean up after the run."""

    args: list[bytes] = field(default_factory=list)
    placeholders: list[bytes] = field(default_factory=list)
    placeholder_files: list[bytes] = field(default_factory=list)

    def cleanup(self) -> None:
        for path in self.placeholder_files:
            try:
                if os.lstat(path).st_size == 0:
                    os.unlink(path)
            except OSError:
                pass
        for path in reversed(self.placeholders):
            try:
                os.rmdir(path)
            except OSError:
                pass


_mount_sources: dict[int, bytes] = {}


def _empty_file(mode: int) -> bytes:
    """An empty file with `mode`, to mount over denied names (one of each per process)."""
    path = _mount_sources.get(mode)
    if path is None or not os.path.exists(path):
        name = os.path.join(scratch_directory(), f"empty-{mode:o}")
        with open(name, "wb"):
            pass
        os.chmod(name, mode)
        path = _mount_sources[mode] = os.fsencode(name)
    return path


def _inaccessible_file() -> bytes:
    """Mounted over denied files: no access at all for a program without capabilities."""
    return _empty_file(0)


def _placeholder_file() -> bytes:
    """Mounted (read-only) on denied names that do not exist: present, empty, unwritable."""
    return _empty_file(0o600)


def _depth(path: bytes) -> int:
    return path.rstrip(b"/").count(b"/")


def filesystem_args(policy: ResolvedPolicy) -> MountPlan:
    """The mount layers for a FILESYSTEM policy. Raises `SandboxError` for a read-only path
    that crosses a writable symlink."""
    plan = MountPlan()
    args = plan.args
    writable = sorted(set(policy.writable), key=_depth)
    if b"/" in writable:
        args += [b"--bind", b"/", b"/"]
    elif policy.full_read:
        args += [b"--ro-bind", b"/", b"/"]
    else:
        args += [b"--tmpfs", b"/"]
        if policy.minimal:
            for path in MINIMAL_PATHS:
                if os.path.exists(path):
                    args += [b"--ro-bind", path, path]
        for path in sorted(set(policy.readable), key=_depth):
            args += [b"--ro-bind", path, path]
    args += [b"--dev", b"/dev"]
    # Shallow before deep, so a writable root inside a read-only path stays writable (and a
    # read-only path inside a writable root stays read-only); read-only wins at equal depth.
    layers = [(path, True) for path in writable if path != b"/"]
    layers += [(path, False) for path in sorted(set(policy.read_only))]
    for path, rw in sorted(layers, key=lambda layer: (_depth(layer[0]), not layer[1])):
        if rw:
            args += [b"--bind", path, path]
            continue
        _refuse_writable_symlink(path, writable)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        if st is None:
            if not _may_create(path):
                continue  # nobody here can create it, the sandboxed program included
            # Missing: an empty read-only directory, so nothing can be planted there.
            plan.placeholders.append(path)
            args += [b"--perms", b"0555", b"--tmpfs", path, b"--remount-ro", path]
        elif stat.S_ISDIR(st.st_mode) and not os.listdir(path):
            args += [b"--perms", b"0555", b"--tmpfs", path, b"--remount-ro", path]
        else:
            args += [b"--ro-bind", path, path]
    for path in sorted(set(policy.denied), key=_depth):
        try:
            st = os.stat(path)
        except OSError:
            # Not there yet: if the sandbox could create it, occupy the name with an empty
            # read-only file for the duration of the run (removed afterwards).
            parent = os.path.dirname(path)
            if (
                os.path.isdir(parent)
                and any(_within(parent, root) for root in writable)
                and _may_create(path)
            ):
                plan.placeholder_files.append(path)
                args += [b"--ro-bind", _placeholder_file(), path]
            continue
        if stat.S_ISDIR(st.st_mode):
            args += [b"--perms", b"0000", b"--tmpfs", path, b"--remount-ro", path]
        else:
            args += [b"--ro-bind", _inaccessible_file(), path]
    return plan


def _within(path: bytes, root: bytes) -> bool:
    return path == root or path.startswith(root.rstrip(b"/") + b"/")


def _may_create(path: bytes) -> bool:
    """Whether we (and so the sandboxed program, which runs as us) may create `path`."""
    return os.access(os.path.dirname(path) or b"/", os.W_OK)


def _refuse_writable_symlink(path: bytes, writable: list[bytes]) -> None:
    """Refuse a read-only `path` one of whose components, inside a writable root, is a symlink:
    a bind mount would follow it, and the program could point it elsewhere. Names directly
    under `/` (usr-merge links such as `/lib64`) are not considered, as the reference does."""
    parts = path.strip(b"/").split(b"/")
    for depth in range(1, len(parts) + 1):
        component = b"/" + b"/".join(parts[:depth])
        inside = [root for root in writable if component != root and _within(component, root)]
        if not inside or (inside == [b"/"] and depth == 1):
            continue
        if os.path.islink(component):
            raise SandboxError(
                f"cannot enforce sandbox read-only path {os.fsdecode(path)} because it crosses "
                f"writable symlink {os.fsdecode(component)}"
            )


def command(
    bwrap: Bwrap,
    policy: ResolvedPolicy,
    *,
    chdir: bytes,
    seccomp: bool,
    own_user: bool = False,
) -> MountPlan:
    """bwrap's argv up to and including `--` for running a program under `policy`.

    `own_user`: also when only the network is taken away, run in a user namespace of its own
    without capabilities (a program with capabilities could leave its network namespace)."""
    if policy.mechanism is Mechanism.FILESYSTEM:
        plan = filesystem_args(policy)
        plan.args = [
            bwrap.path,
            b"--die-with-parent",
            b"--unshare-user",
            b"--unshare-pid",
            b"--unshare-ipc",
            *plan.args,
            b"--cap-drop",
            b"ALL",
        ]
        if policy.network_restricted:
            plan.args.append(b"--unshare-net")
        plan.args += [b"--proc", b"/proc"]
    else:
        # Only the network is taken away: the filesystem and the process table stay the host's
        # (the reference applies just its seccomp filter here).
        plan = MountPlan([bwrap.path, b"--die-with-parent", b"--dev-bind", b"/", b"/"])
        if own_user:
            plan.args += [b"--unshare-user", b"--cap-drop", b"ALL"]
        if policy.network_restricted:
            plan.args.append(b"--unshare-net")
    plan.args += [b"--chdir", chdir]
    if seccomp:
        plan.args += [b"--seccomp", str(SECCOMP_FD).encode()]
    plan.args.append(b"--")
    return plan
