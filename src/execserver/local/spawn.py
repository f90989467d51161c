"""Start a child with libc `posix_spawn`: new session, chosen cwd, exact argv/env, given stdio.

Python's `os.posix_spawn` cannot change directory and `subprocess` needs a slow `preexec_fn`
to give a PTY child its controlling terminal; glibc's `posix_spawn` (vfork-based) does both
through file actions: `addchdir_np` for the cwd, and opening the PTY slave after `setsid` makes
it the controlling terminal. Failures of chdir/exec come back as the errno of the call.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import signal
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass

_POSIX_SPAWN_SETSIGDEF = 0x04
_POSIX_SPAWN_SETSIGMASK = 0x08
_POSIX_SPAWN_SETSID = 0x80
_POSIX_SPAWN_SETCGROUP = 0x100  # glibc >= 2.39: clone3(CLONE_INTO_CGROUP)

# Opaque glibc structures, over-allocated (posix_spawnattr_t is 336 bytes and
# posix_spawn_file_actions_t 80 bytes on x86_64; sigset_t is 128 bytes).
_ATTR_SIZE = 1024
_ACTIONS_SIZE = 512
_SIGSET_SIZE = 256


class SpawnUnavailable(RuntimeError):
    """This libc lacks the posix_spawn features the server relies on."""


@dataclass(frozen=True, slots=True)
class Stdio:
    """What the child's fds 0, 1 and 2 become.

    Either `tty_path` (a PTY slave opened read-write on fd 0 and duplicated onto 1 and 2), or
    parent fds for each of `stdin`/`stdout`/`stderr` (`None` stdin means /dev/null).
    """

    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None
    tty_path: bytes | None = None
    extra_fds: tuple[tuple[int, int], ...] = ()
    """(parent fd, child fd) pairs also handed to the child (e.g. a seccomp program)."""


class _Libc:
    def __init__(self) -> None:
        name = ctypes.util.find_library("c") or "libc.so.6"
        lib = ctypes.CDLL(name, use_errno=True)
        try:
            self.addchdir = lib.posix_spawn_file_actions_addchdir_np
        except AttributeError as exc:  # glibc < 2.29, musl < 1.1.24
            raise SpawnUnavailable("posix_spawn_file_actions_addchdir_np is missing") from exc
        self.spawn = lib.posix_spawn
        self.spawn.argtypes = [
            ctypes.POINTER(ctypes.c_int),
            ctypes.c_char_p,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_char_p),
            ctypes.POINTER(ctypes.c_char_p),
        ]
        self.addchdir.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self.actions_init = lib.posix_spawn_file_actions_init
        self.actions_destroy = lib.posix_spawn_file_actions_destroy
        self.adddup2 = lib.posix_spawn_file_actions_adddup2
        self.adddup2.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        self.addopen = lib.posix_spawn_file_actions_addopen
        self.addopen.argtypes = [
            ctypes.c_void_p,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.c_uint,
        ]
        self.attr_init = lib.posix_spawnattr_init
        self.attr_destroy = lib.posix_spawnattr_destroy
        self.setflags = lib.posix_spawnattr_setflags
        self.setflags.argtypes = [ctypes.c_void_p, ctypes.c_short]
        self.setsigmask = lib.posix_spawnattr_setsigmask
        self.setcgroup = getattr(lib, "posix_spawnattr_setcgroup_np", None)
        if self.setcgroup is not None:
            self.setcgroup.argtypes = [ctypes.c_void_p, ctypes.c_int]
        self.setsigdefault = lib.posix_spawnattr_setsigdefault
        self.sigemptyset = lib.sigemptyset
        self.sigaddset = lib.sigaddset
        self.sigaddset.argtypes = [ctypes.c_void_p, ctypes.c_int]
        # Every catchable signal back to its default in the child: the server ignores SIGPIPE
        # (Python does) and handles SIGTERM/SIGINT/SIGCHLD itself.
        self.default_signals = ctypes.create_string_buffer(_SIGSET_SIZE)
        self.sigemptyset(self.default_signals)
        for sig in signal.valid_signals():
            if sig not in (signal.SIGKILL, signal.SIGSTOP) and 0 < sig < 65:
                self.sigaddset(self.default_signals, sig)
        self.empty_mask = ctypes.create_string_buffer(_SIGSET_SIZE)
        self.sigemptyset(self.empty_mask)


_libc: _Libc | None = None


def _lib() -> _Libc:
    global _libc
    if _libc is None:
        _libc = _Libc()
    return _libc


def _check(rc: int) -> None:
    if rc != 0:
        raise OSError(rc, os.strerror(rc))


def _cstrings(items: Sequence[bytes]) -> ctypes.Array[ctypes.c_char_p]:
    array = (ctypes.c_char_p * (len(items) + 1))()
    array[:-1] = list(items)
    array[-1] = None
    return array


def can_spawn_into_cgroup() -> bool:
    """Whether this libc can start a child directly inside a cgroup v2 (`cgroup_fd`)."""
    try:
        return _lib().setcgroup is not None
    except SpawnUnavailable:
        return False


SpawnRun = Callable[[Callable[[], int]], int]
"""Executes a spawn's final libc call (a placement in a cgroup, local/cgroup.py)."""


def spawn(
    path: bytes,
    argv: Sequence[bytes],
    env: Sequence[bytes],
    cwd: bytes,
    stdio: Stdio,
    *,
    cgroup_fd: int | None = None,
    run: SpawnRun | None = None,
) -> int:
    """Start `path` with `argv` and `env` (`b"K=V"` items) in `cwd` as a session leader.

    Returns the child's pid. Raises `OSError` with the errno of the failed chdir/open/exec.
    Blocks until the child has exec'd (vfork semantics), typically well under a millisecond.
    `cgroup_fd` (a cgroup v2 directory) makes the child start in that cgroup; `run` executes
    the final libc call (e.g. on a thread placed in a v1 cgroup, local/cgroup.py).
    """
    lib = _lib()
    actions = ctypes.create_string_buffer(_ACTIONS_SIZE)
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    _check(lib.actions_init(actions))
    try:
        _check(lib.attr_init(attr))
        try:
            flags = _POSIX_SPAWN_SETSID | _POSIX_SPAWN_SETSIGMASK | _POSIX_SPAWN_SETSIGDEF
            if cgroup_fd is not None:
                if lib.setcgroup is None:
                    raise OSError(errno.ENOSYS, "posix_spawnattr_setcgroup_np is missing")
                _check(lib.setcgroup(attr, cgroup_fd))
                flags |= _POSIX_SPAWN_SETCGROUP
            _check(lib.setflags(attr, flags))
            _check(lib.setsigmask(attr, lib.empty_mask))
            _check(lib.setsigdefault(attr, lib.default_signals))
            # chdir first so a relative program path resolves against the child's cwd, like
            # exec after chdir in a forked child would.
            _check(lib.addchdir(actions, cwd))
            if stdio.tty_path is not None:
                # Opened after setsid without O_NOCTTY: becomes the controlling terminal.
                _check(lib.addopen(actions, 0, stdio.tty_path, os.O_RDWR, 0))
                _check(lib.adddup2(actions, 0, 1))
                _check(lib.adddup2(actions, 0, 2))
            else:
                if stdio.stdin is None:
                    _check(lib.addopen(actions, 0, b"/dev/null", os.O_RDONLY, 0))
                else:
                    _check(lib.adddup2(actions, stdio.stdin, 0))
                for fd, target in ((stdio.stdout, 1), (stdio.stderr, 2)):
                    if fd is None:
                        _check(lib.addopen(actions, target, b"/dev/null", os.O_WRONLY, 0))
                    else:
                        _check(lib.adddup2(actions, fd, target))
            for parent_fd, child_fd in stdio.extra_fds:
                _check(lib.adddup2(actions, parent_fd, child_fd))
            pid = ctypes.c_int(0)
            c_argv, c_env = _cstrings(argv), _cstrings(env)

            def call() -> int:
                return int(lib.spawn(ctypes.byref(pid), path, actions, attr, c_argv, c_env))

            rc = call() if run is None else run(call)
            if rc != 0:
                raise OSError(rc, os.strerror(rc))
            return pid.value
        finally:
            lib.attr_destroy(attr)
    finally:
        lib.actions_destroy(actions)


def resolve_program(program: str, search_path: str | None, cwd: bytes) -> bytes:
    """Find `program` the way the reference does: as given when it contains `/`, otherwise the
    first executable regular file named so on `search_path`.

    Raises `FileNotFoundError` (ENOENT) when nothing matches, `PermissionError` when only
    non-executable matches exist.
    """
    name = os.fsencode(program)
    if b"/" in name:
        return name
    denied = False
    for entry in (search_path or "").split(":"):
        directory = os.fsencode(entry) or b"."
        if not directory.startswith(b"/"):
            directory = os.path.join(cwd, directory)
        candidate = os.path.join(directory, name)
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        if os.access(candidate, os.X_OK):
            return candidate
        denied = True
    if denied:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
