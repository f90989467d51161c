"""Open file handles of one connection (`fs/open`, `fs/readBlock`, `fs/writeBlock`, `fs/close`).

Positional block I/O on an fd, at most 1 MiB per call and 128 handles per connection, so memory
stays bounded however large the file. Every handle is closed when the connection ends.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from execserver.errors import InvalidRequest, NotFound
from execserver.local.fs_ops import open_regular_file
from execserver.protocol.file_system import OpenMode

MAX_OPEN_HANDLES = 128
MAX_BLOCK_BYTES = 1024 * 1024
MAX_FILE_OFFSET = 2**63 - 1


def open_handle_fd(path: bytes, mode: str) -> int:
    """Open `path` for a handle: `read` needs a regular file; `replace` truncates at open."""
    if mode == "read":
        return open_regular_file(path)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)


@dataclass(slots=True)
class FileHandle:
    fd: int
    mode: OpenMode


class FileHandleTable:
    def __init__(self, *, max_handles: int = MAX_OPEN_HANDLES) -> None:
        self._handles: dict[str, FileHandle] = {}
        self._max_handles = max_handles

    def __len__(self) -> int:
        return len(self._handles)

    def check_new(self, handle_id: str) -> None:
        """The checks `fs/open` makes before it looks at the path: duplicate id, then the cap."""
        if handle_id in self._handles:
            raise InvalidRequest(f"file handle `{handle_id}` already exists")
        if len(self._handles) >= self._max_handles:
            raise InvalidRequest(
                f"at most {self._max_handles} file handles may be open per connection"
            )

    def open(self, handle_id: str, path: bytes, mode: OpenMode) -> None:
        self.check_new(handle_id)
        self.adopt(handle_id, open_handle_fd(path, mode), mode)

    def adopt(self, handle_id: str, fd: int, mode: OpenMode) -> None:
        """Register an fd opened elsewhere (e.g. inside the sandbox) as a handle."""
        self.check_new(handle_id)
        self._handles[handle_id] = FileHandle(fd, mode)

    def _get(self, handle_id: str) -> FileHandle:
        handle = self._handles.get(handle_id)
        if handle is None:
            raise NotFound(f"unknown file handle `{handle_id}`")
        return handle

    def read_block(self, handle_id: str, offset: int, length: int) -> tuple[bytes, bool]:
        """`(chunk, eof)`; `eof` when fewer than `length` bytes were left."""
        if not 1 <= length <= MAX_BLOCK_BYTES:
            raise InvalidRequest(f"file read block length must be between 1 and {MAX_BLOCK_BYTES}")
        handle = self._get(handle_id)
        try:
            if handle.mode != "read":
                raise OSError(errno.EBADF, os.strerror(errno.EBADF))
            if offset >= MAX_FILE_OFFSET:
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
            chunk = os.pread(handle.fd, length, offset)
        except OSError:
            # Like the reference, a failed read ends the handle.
            self.close(handle_id)
            raise
        return chunk, len(chunk) < length

    def write_block(self, handle_id: str, offset: int, data: bytes) -> None:
        if not 1 <= len(data) <= MAX_BLOCK_BYTES:
            raise InvalidRequest(f"file write block length must be between 1 and {MAX_BLOCK_BYTES}")
        if offset + len(data) > MAX_FILE_OFFSET:
            raise InvalidRequest("file write range exceeds the signed 64-bit file offset limit")
        handle = self._get(handle_id)
        if handle.mode != "replace":
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        view = memoryview(data)
        while view:
            written = os.pwrite(handle.fd, view, offset)
            view, offset = view[written:], offset + written

    def close(self, handle_id: str) -> None:
        handle = self._handles.pop(handle_id, None)
        if handle is not None:
            os.close(handle.fd)

    def close_all(self) -> None:
        for handle_id in list(self._handles):
            self.close(handle_id)
