"""PTY specifics: opening a terminal pair, and the reference's rules for starting a PTY child.

The reference starts PTY children through a terminal library whose rules differ from the pipe
path: the program is searched only on the child's own `PATH` (relative entries against the
cwd, `./x` only in the cwd), a cwd that is not a directory falls back to the home directory,
`SHELL` is added to the environment when absent, and failures have their own wording.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import stat
import struct
import termios
from collections.abc import Mapping

from execserver.compat.rust import rust_debug_str

ROWS = 24
COLS = 80


class PtySpawnError(Exception):
    """The PTY child cannot be started; `str(exc)` is the reference's message, `kind` the
    failure kind it reports with it (0.171's `data.kind`)."""

    def __init__(self, message: str, kind: str = "spawnFailed") -> None:
        super().__init__(message)
        self.kind = kind


def open_pty(rows: int = ROWS, cols: int = COLS) -> tuple[int, int]:
    """A (master, slave) pair sized `rows` x `cols`; both close-on-exec."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    return master, slave


def _passwd() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(os.getuid())
    except KeyError:
        return None


def login_shell() -> str:
    entry = _passwd()
    return entry.pw_shell if entry is not None and entry.pw_shell else "/bin/sh"


def pty_env(env: Mapping[str, str]) -> dict[str, str]:
    """The PTY child's environment: `env`, plus `SHELL` when it is not given."""
    result = dict(env)
    result.setdefault("SHELL", login_shell())
    return result


def pty_cwd(cwd: bytes, env: Mapping[str, str]) -> bytes:
    """`cwd` if it is a directory, else the home directory (env HOME, passwd, then `/`)."""
    if os.path.isdir(cwd):
        return cwd
    home = env.get("HOME")
    if home is None:
        entry = _passwd()
        home = entry.pw_dir if entry is not None else "/"
    return os.fsencode(home)


def _display(path: bytes) -> str:
    return os.fsdecode(path)


def _is_dir(path: bytes) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except (OSError, ValueError):  # ValueError: a NUL in the name (nothing can be named so)
        return False


def _executable(path: bytes) -> bool:
    try:
        return os.access(path, os.X_OK)
    except ValueError:
        return False


def _exists(path: bytes) -> bool:
    try:
        return os.path.exists(path)
    except ValueError:
        return False


def resolve_renamed_pty_program(program: str, env: Mapping[str, str], cwd: bytes) -> bytes:
    """Find the program of a PTY child started with `arg0` (codex 0.171): `argv[0]` is
    searched on the child's `PATH` (a name with a `/` is used as given, and exec reports
    what is wrong with it); the child then sees `arg0` as its argv[0]."""
    if not program:
        raise PtySpawnError("missing program for PTY spawn")
    exe = os.fsencode(program)
    if b"/" in exe:
        return exe if exe.startswith(b"/") else os.path.join(cwd, exe)
    search_path = env.get("PATH")
    if search_path is None:
        raise PtySpawnError("Unable to resolve the PATH")
    for entry in search_path.split(":"):
        candidate = os.path.join(cwd, os.fsencode(entry), exe)
        if not _is_dir(candidate) and _executable(candidate):
            return candidate
    raise PtySpawnError(f"Unable to find executable {program} in PTY PATH")


def resolve_pty_program(program: str, env: Mapping[str, str], cwd: bytes) -> bytes:
    """Find the program of a PTY child, raising `PtySpawnError` with the reference's text."""
    if not program:
        raise PtySpawnError("missing program for PTY spawn")
    exe = os.fsencode(program)
    if exe.startswith(b"/"):
        return exe  # exec reports what is wrong with it
    if exe.split(b"/", 1)[0] in (b".", b".."):
        candidate = os.path.join(cwd, exe)
        if _is_dir(candidate):
            raise PtySpawnError(f"Unable to spawn {_display(candidate)} because it is a directory")
        if _executable(candidate):
            return candidate
        if _exists(candidate):
            raise PtySpawnError(
                f"Unable to spawn {_display(candidate)} because it is not executable"
            )
        raise PtySpawnError(f"Unable to spawn {_display(candidate)} because it does not exist")
    errors: list[str] = []
    search_path = env.get("PATH")
    if search_path is None:
        errors.append("Unable to resolve the PATH")
    else:
        for entry in search_path.split(":"):
            candidate = os.path.join(cwd, os.fsencode(entry), exe)
            if _is_dir(candidate):
                errors.append(f"{_display(candidate)} exists but is a directory")
            elif _executable(candidate):
                return candidate
            elif _exists(candidate):
                errors.append(f"{_display(candidate)} exists but is not executable")
        errors.append(f"No viable candidates found in PATH {rust_debug_str(search_path)}")
    raise PtySpawnError(f"Unable to spawn {program} because:\n" + ".\n".join(errors))
