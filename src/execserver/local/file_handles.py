"""An open file of this host (`FileSystem.open`): positional block I/O on one fd.

At most 1 MiB per call, so memory stays bounded however large the file. Like the reference, a
failed read closes the handle (later calls fail as for a closed handle).
"""

from __future__ import annotations

import errno
import os
from typing import Self

from execserver.environment.file_system import (
    MAX_FILE_OFFSET,
    OpenModeName,
    check_block_length,
    check_write_range,
)
from execserver.errors import os_errors
from execserver.local.fs_ops import open_regular_file


def open_handle_fd(path: bytes, mode: str) -> int:
    """Open `path` for a handle: `read` needs a regular file; `replace` truncates at open.

    Non-blocking, like the reference: a FIFO without a reader is ENXIO, never a hang."""
    if mode == "read":
        return open_regular_file(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NONBLOCK
    return os.open(path, flags, 0o666)


def _bad_fd() -> OSError:
    return OSError(errno.EBADF, os.strerror(errno.EBADF))


class LocalFileHandle:
    """A `FileHandle` over an fd this object owns."""

    def __init__(self, fd: int, mode: OpenModeName) -> None:
        self._fd: int | None = fd
        self.mode = mode

    @property
    def closed(self) -> bool:
        return self._fd is None

    async def read_block(self, offset: int, length: int) -> tuple[bytes, bool]:
        check_block_length(length, "read")
        fd = self._fd
        with os_errors():
            return self._read(fd, offset, length)

    def _read(self, fd: int | None, offset: int, length: int) -> tuple[bytes, bool]:
        try:
            if fd is None or self.mode != "read":
                raise _bad_fd()
            if offset >= MAX_FILE_OFFSET:
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
            chunk = os.pread(fd, length, offset)
        except OSError:
            self.close()
            raise
        return chunk, len(chunk) < length

    async def write_block(self, offset: int, data: bytes) -> None:
        check_block_length(len(data), "write")
        check_write_range(offset, len(data))
        fd = self._fd
        with os_errors():
            if fd is None or self.mode != "replace":
                raise _bad_fd()
            view = memoryview(data)
            while view:
                written = os.pwrite(fd, view, offset)
                view, offset = view[written:], offset + written

    def close(self) -> None:
        """Release the fd (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
