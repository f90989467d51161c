"""Writing a file only its owner may read, atomically (tokens, the proxy's CA files)."""

from __future__ import annotations

import contextlib
import os
import secrets


def write_private_file(path: str, data: bytes) -> None:
    """Replace `path` with `data` in one step (a `0600` temporary file beside it, synced, then
    renamed over it). Raises `OSError`; the temporary file is removed on failure."""
    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
