"""`fs/walk`: a bounded breadth-first listing of a directory tree (PROTOCOL.md §7.7).

Breadth-first by level, names sorted by bytes within a directory. Limits count directories
read (the root included) and entries examined (skipped symlinks included); hitting one stops
the walk with `truncated`. Unreadable directories become per-path errors and the walk goes on.
Directory symlinks are followed only on request, each directory at most once (by device and
inode), so cycles end.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from dataclasses import dataclass

from execserver.errors import InvalidRequest, os_error_text
from execserver.protocol.file_system import FsWalkResponse, WalkEntry, WalkError, WalkOptions
from execserver.protocol.pathuri import PathUri

MAX_DEPTH = 64
MAX_DIRECTORIES = 10_000
MAX_ENTRIES = 50_000


@dataclass(slots=True)
class _Pending:
    uri: PathUri
    path: bytes
    depth: int


def validate(options: WalkOptions) -> None:
    if options.max_directories == 0 or options.max_entries == 0:
        raise InvalidRequest("filesystem walk limits must be greater than zero")
    if (
        options.max_depth > MAX_DEPTH
        or options.max_directories > MAX_DIRECTORIES
        or options.max_entries > MAX_ENTRIES
    ):
        raise InvalidRequest(
            f"filesystem walk limits exceed maximums: depth={MAX_DEPTH}, "
            f"directories={MAX_DIRECTORIES}, entries={MAX_ENTRIES}"
        )


def walk(root: PathUri, options: WalkOptions) -> FsWalkResponse:
    validate(options)
    root_path = root.native_path()
    root_stat = os.lstat(root_path)
    entries: list[WalkEntry] = []
    errors: list[WalkError] = []
    if not stat.S_ISDIR(root_stat.st_mode):
        return FsWalkResponse(entries=entries, errors=errors, truncated=False)
    seen = {(root_stat.st_dev, root_stat.st_ino)}
    queue = deque([_Pending(root, root_path, 0)])
    directories_read = 0
    examined = 0
    while queue:
        if directories_read >= options.max_directories:
            return FsWalkResponse(entries=entries, errors=errors, truncated=True)
        current = queue.popleft()
        directories_read += 1
        try:
            names = sorted(os.listdir(current.path))
        except OSError as exc:
            errors.append(WalkError(path=current.uri, message=os_error_text(exc.errno or 0)))
            continue
        for name in names:
            if examined >= options.max_entries:
                return FsWalkResponse(entries=entries, errors=errors, truncated=True)
            examined += 1
            child_path = os.path.join(current.path, name)
            child_uri = PathUri.from_native(child_path)
            try:
                link = os.lstat(child_path)
            except OSError as exc:
                errors.append(WalkError(path=child_uri, message=os_error_text(exc.errno or 0)))
                continue
            st = link
            if stat.S_ISLNK(link.st_mode):
                if not options.follow_directory_symlinks:
                    continue
                try:
                    st = os.stat(child_path)
                except OSError:
                    continue
                if not stat.S_ISDIR(st.st_mode):
                    continue
            if stat.S_ISDIR(st.st_mode):
                entries.append(WalkEntry(path=child_uri, kind="directory"))
                hidden = name.startswith(b".")
                identity = (st.st_dev, st.st_ino)
                if (
                    current.depth < options.max_depth
                    and not (hidden and options.prune_hidden_directories)
                    and identity not in seen
                ):
                    seen.add(identity)
                    queue.append(_Pending(child_uri, child_path, current.depth + 1))
            elif stat.S_ISREG(st.st_mode):
                entries.append(WalkEntry(path=child_uri, kind="file"))
    return FsWalkResponse(entries=entries, errors=errors, truncated=False)
