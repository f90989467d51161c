"""Tokens in files: making them, and the rules for reading them (server and client alike).

* A file that anyone but its owner can write is refused: whoever can write it chooses the
  token (ssh refuses such key files too).
* A file that every user can read is accepted with a warning: the token is then as good as
  public on a shared machine, but container secrets are often mounted that way.
* A capability token shorter than `MIN_TOKEN_BYTES` is refused: it can be guessed.
  `new_token()` (`execserver token new`) makes one of 256 random bits.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from collections.abc import Callable

from execserver.private_file import write_private_file

MIN_TOKEN_BYTES = 16
NEW_TOKEN_BYTES = 32

Warn = Callable[[str], None]


class TokenFileError(ValueError):
    """A token file we will not use; `str()` is one line for the user."""


def new_token() -> str:
    """A fresh capability token: 32 random bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(NEW_TOKEN_BYTES)


def token_sha256(token: str | bytes) -> str:
    """The hex digest `serve --ws-token-sha256` and the relay's `sha256:` lines take."""
    data = token.encode() if isinstance(token, str) else token
    return hashlib.sha256(data.strip()).hexdigest()


def check_mode(path: str, st: os.stat_result, warn: Warn | None) -> None:
    """Refuse a file others can write; warn about one everybody can read."""
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise TokenFileError(
            f"{path} is writable by other users (mode {mode:04o}), so they could choose the "
            f"token; run `chmod 600 {path}`"
        )
    if mode & 0o004 and warn is not None:
        warn(f"{path} is readable by every user (mode {mode:04o}); run `chmod 600 {path}`")


def check_strength(path: str, token: bytes) -> None:
    if len(token) < MIN_TOKEN_BYTES:
        raise TokenFileError(
            f"the token in {path} is {len(token)} bytes; at least {MIN_TOKEN_BYTES} are needed "
            "(`execserver token new` makes one)"
        )


def read_token_file(path: str, *, warn: Warn | None = None) -> str:
    """The token in `path` (surrounding blanks and newlines dropped), after the checks above.

    Raises `TokenFileError` (unreadable, empty, not ASCII, mode or strength refused).
    """
    try:
        with open(path, "rb") as file:
            st = os.fstat(file.fileno())
            raw = file.read(64 * 1024)
    except OSError as exc:
        raise TokenFileError(f"cannot read token file {path}: {exc.strerror}") from None
    check_mode(path, st, warn)
    return token_from_bytes(raw, path)


def token_from_bytes(raw: bytes, source: str) -> str:
    """Check a token read from `source` (a file, or stdin): one line of printable ASCII."""
    token = raw.strip()
    if not token:
        raise TokenFileError(f"{source} holds no token")
    if not token.isascii() or any(byte < 0x21 or byte == 0x7F for byte in token):
        raise TokenFileError(f"the token in {source} must be one word of printable ASCII")
    check_strength(source, token)
    return token.decode("ascii")


def write_token_file(path: str, token: str, *, replace: bool = False) -> None:
    """Write `token` to a new file with mode 0600 (or replace one atomically with `replace`)."""
    data = (token + "\n").encode()
    if not replace:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        return
    write_private_file(path, data)


__all__ = [
    "MIN_TOKEN_BYTES",
    "TokenFileError",
    "check_mode",
    "check_strength",
    "new_token",
    "read_token_file",
    "token_from_bytes",
    "token_sha256",
    "write_token_file",
]
