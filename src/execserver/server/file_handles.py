"""The open file handles of one connection, by the ids its client chose (`fs/open` ...).

At most `MAX_OPEN_HANDLES` per connection; every handle is closed when the connection ends. A
handle whose operation failed with an I/O error is forgotten, as the reference forgets it.
"""

from __future__ import annotations

import contextlib

from execserver.environment.file_system import FileHandle
from execserver.errors import InvalidRequest, NotFound

MAX_OPEN_HANDLES = 128


class HandleTable:
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

    def add(self, handle_id: str, handle: FileHandle) -> None:
        self.check_new(handle_id)
        self._handles[handle_id] = handle

    def get(self, handle_id: str) -> FileHandle:
        handle = self._handles.get(handle_id)
        if handle is None:
            raise NotFound(f"unknown file handle `{handle_id}`")
        return handle

    def forget(self, handle_id: str) -> FileHandle | None:
        return self._handles.pop(handle_id, None)

    async def aclose(self) -> None:
        """Close every handle. Cancellation: every handle is closed anyway."""
        handles, self._handles = list(self._handles.values()), {}
        for handle in handles:
            with contextlib.suppress(Exception):
                await handle.aclose()
