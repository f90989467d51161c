"""Shell snapshots (`process/start.shellSnapshot`): run login-shell commands without re-reading
the login profile each time.

The first command of a scope captures what the user's login shell sets up (exported variables,
functions, aliases, shell options) by running the shell as a login shell with a small script;
the result is kept, and this and every later command of the scope runs as a plain `-c` shell
that first sources the snapshot from an inherited descriptor. A capture that fails (the shell
is missing, the profile exits, output that cannot be read back, a snapshot that does not source,
the 10 s limit) is remembered too: the scope's commands then run unchanged.

What is replayed, per shell (`bash`, `zsh`, `sh`):

* variables the profile exported or changed (compared with the environment the capture started
  with), except `PWD`, `OLDPWD`, `SHLVL` and `_`; a variable the command's own environment
  sets keeps the command's value;
* functions (`bash`, `zsh`, and `sh` shells that can list them; dash cannot);
* aliases, and shell options that are on (`set -o`; for bash also `shopt`).

Pure functions build the scripts and parse the output; `capture()` runs the shell.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import msgspec

SUPPORTED_SHELLS = ("bash", "zsh", "sh")
CAPTURE_TIMEOUT_S = 10.0
MAX_CAPTURE_BYTES = 8 * 1024 * 1024
MAX_SCOPES = 64
"""Snapshots kept per session (least recently used ones are dropped and recaptured)."""
SNAPSHOT_FD = 9
"""Where the child finds its snapshot (a single digit: POSIX shells redirect only those)."""
RESTORE_FAILED = "failed to restore shell snapshot"

_NOT_REPLAYED = frozenset({"PWD", "OLDPWD", "SHLVL", "_"})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Options that describe how the shell was started rather than what the profile chose.
_FIXED_OPTIONS = frozenset({"privileged", "interactive", "stdin", "login", "monitor", "restricted"})
_FIXED_SHOPTS = frozenset({"login_shell", "restricted_shell"})
_SECTIONS = 5  # functions, aliases, options, shopt, environment


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a login shell set up, ready to be replayed."""

    shell: str
    exports: dict[str, str]
    functions: str
    aliases: list[str]
    options: list[str]
    shopts: list[str]

    def render(self, child_env: Mapping[str, str]) -> bytes:
        """The file the child sources; variables in `child_env` are left as they are."""
        lines = ["# execserver shell snapshot"]
        for name, value in self.exports.items():
            if name not in child_env:
                lines.append(f"export {name}={_quote(value)}")
        if self.functions.strip():
            lines.append(self.functions.rstrip("\n"))
        lines += self.aliases
        lines += [f"shopt -s {name}" for name in self.shopts]
        lines += [f"set -o {name}" for name in self.options]
        lines.append(":")
        return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


def _quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def supported(shell_name: str) -> bool:
    return shell_name in SUPPORTED_SHELLS


def applies(argv: list[str], shell_path: str) -> bool:
    """A snapshot replaces the login of `[shell_path, "-lc", script, ...]` only."""
    return len(argv) >= 3 and argv[0] == shell_path and argv[1] == "-lc"


def restore_argv(shell_name: str, argv: list[str]) -> list[str]:
    """The command that runs `argv`'s script after sourcing the snapshot at `SNAPSHOT_FD`.

    bash and zsh start in privileged mode (no startup files, no `BASH_ENV`, no functions from
    the environment) and leave it before the script; a failed restore is reported on stderr and
    the script runs anyway. The descriptor is closed before the script runs."""
    source = (
        f"if ! . /dev/fd/{SNAPSHOT_FD} >/dev/null; then echo '{RESTORE_FAILED}' >&2; fi; "
        f"exec {SNAPSHOT_FD}<&-\n"
    )
    if shell_name == "sh":
        return [argv[0], "-c", source + argv[2], *argv[3:]]
    return [argv[0], "-pc", "set +o privileged\n" + source + argv[2], *argv[3:]]


# -- capture --------------------------------------------------------------------------------------

_LISTINGS = {
    # (read the interactive rc file too, list functions, list aliases, shell options, shopt)
    "bash": (
        'case "${BASH_ENV:-}" in "") if [ -n "${HOME:-}" ] && [ -r "$HOME/.bashrc" ]; then '
        '. "$HOME/.bashrc"; fi ;; esac',
        "declare -f",
        "alias -p",
        "set -o",
        "shopt -s",
    ),
    "zsh": (
        'if [ -r "${ZDOTDIR:-${HOME:-}}/.zshrc" ]; then . "${ZDOTDIR:-${HOME:-}}/.zshrc"; fi',
        "typeset -f",
        "alias -L",
        "set -o",
        ":",
    ),
    "sh": (":", "typeset -f 2>/dev/null", "alias", "set -o", ":"),
}


def capture_script(shell_name: str, marker: str) -> str:
    """The script a login shell runs to describe itself: `marker` lines separate the sections
    (anything the profile printed comes before the first one); the environment comes last,
    NUL-separated."""
    rc_file, functions, aliases, options, shopts = _LISTINGS[shell_name]
    line = f"printf '\\n%s\\n' '{marker}'"
    return "\n".join(
        [
            rc_file,
            line,
            f"{functions} 2>/dev/null",
            line,
            f"{aliases} 2>/dev/null",
            line,
            f"{options} 2>/dev/null",
            line,
            f"{shopts} 2>/dev/null",
            line,
            "env -0 2>/dev/null || command -p env -0",
        ]
    )


def new_marker() -> str:
    return f"__execserver_snapshot_{secrets.token_hex(12)}__"


def parse_capture(
    shell_name: str, marker: str, output: bytes, before: Mapping[str, str]
) -> Snapshot | None:
    """The snapshot described by a capture's `output`, or None if it cannot be read.

    `before` is the environment the capture started with: only what the profile added or
    changed is kept."""
    separator = b"\n" + marker.encode() + b"\n"
    parts = output.split(separator)
    if len(parts) != _SECTIONS + 1:
        return None
    functions, aliases, options, shopts, environ = (
        part.decode("utf-8", "surrogateescape") for part in parts[1:]
    )
    exports: dict[str, str] = {}
    for item in environ.split("\0"):
        name, sep, value = item.partition("=")
        if not sep or not _NAME.match(name) or name in _NOT_REPLAYED:
            continue
        if before.get(name) != value:
            exports[name] = value
    return Snapshot(
        shell=shell_name,
        exports=exports,
        functions=functions,
        aliases=_alias_lines(aliases),
        options=_enabled(options, _FIXED_OPTIONS),
        shopts=_enabled(shopts, _FIXED_SHOPTS) if shell_name == "bash" else [],
    )


def _alias_lines(listing: str) -> list[str]:
    lines = []
    for line in listing.splitlines():
        if not line.strip():
            continue
        lines.append(line if line.startswith("alias ") else f"alias {line}")
    return lines


def _enabled(listing: str, fixed: frozenset[str]) -> list[str]:
    """Names listed as `on` in a `set -o` / `shopt` table."""
    names = []
    for line in listing.splitlines():
        fields = line.split()
        on = len(fields) == 2 and fields[1] == "on" and _NAME.match(fields[0])
        if on and fields[0] not in fixed:
            names.append(fields[0])
    return names


# -- the per-session cache ------------------------------------------------------------------------

SnapshotKey = tuple[str, str, str, bytes]
"""(scope id, shell name, shell path, the request's encoded envPolicy): the environment policy
decides which environment the profile starts from, so each gets its own snapshot."""

Capture = Callable[[], Awaitable[Snapshot | None]]


class SnapshotCache:
    """One session's snapshots by key, bounded; concurrent first uses share one capture."""

    def __init__(self, max_scopes: int = MAX_SCOPES) -> None:
        self._max = max_scopes
        self._done: OrderedDict[SnapshotKey, Snapshot | None] = OrderedDict()
        self._pending: dict[SnapshotKey, asyncio.Future[Snapshot | None]] = {}

    def __len__(self) -> int:
        return len(self._done)

    def lookup(self, key: SnapshotKey) -> tuple[bool, Snapshot | None]:
        """(known, snapshot): known is False until the key's capture has finished; a known
        key with a None snapshot failed to capture (its commands run unchanged)."""
        if key in self._done:
            self._done.move_to_end(key)
            return True, self._done[key]
        return False, None

    async def get(self, key: SnapshotKey, capture: Capture) -> Snapshot | None:
        """The key's snapshot, capturing it first if needed (once, however many wait).

        Cancellation: a cancelled caller stops waiting; the capture goes on for the others
        and its result is kept."""
        known, snapshot = self.lookup(key)
        if known:
            return snapshot
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._capture(key, capture))
            self._pending[key] = pending
        return await asyncio.shield(pending)

    async def _capture(self, key: SnapshotKey, capture: Capture) -> Snapshot | None:
        try:
            snapshot = await capture()
        except Exception:
            snapshot = None
        finally:
            self._pending.pop(key, None)
        self._done[key] = snapshot
        while len(self._done) > self._max:
            self._done.popitem(last=False)
        return snapshot

    def cancel(self) -> None:
        """Cancel the captures in progress (their children are killed); `aclose()` waits."""
        for future in self._pending.values():
            future.cancel()

    async def aclose(self) -> None:
        """Cancel captures in progress, wait for them, forget every snapshot.

        Cancellation: the captures are cancelled before the first await."""
        pending = list(self._pending.values())
        self.cancel()
        for future in pending:
            with contextlib.suppress(BaseException):
                await future
        self._done.clear()


def encoded_policy(policy: object) -> bytes:
    """A stable key part for an envPolicy (empty for none)."""
    return b"" if policy is None else msgspec.json.encode(policy)


def memfd_with(data: bytes) -> int:
    """A close-on-exec memory file holding `data`, positioned at its start."""
    fd = os.memfd_create("execserver-shell-snapshot", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd
