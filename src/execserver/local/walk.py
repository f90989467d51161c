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
    root_link = os.lstat(root_path)
    root_stat = os.stat(root_path)  # a dangling or looping root fails even when not following
    entries: list[WalkEntry] = []
    errors: list[WalkError] = []
    is_link = stat.S_ISLNK(root_link.st_mode)
    if not stat.S_ISDIR(root_stat.st_mode) or (is_link and not options.follow_directory_symlinks):
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
            # Entries are addressed through their URI, as the reference does: a name that is not
            # UTF-8 becomes a lossy path that does not exist, and is reported as an error.
            child_uri = current.uri.child(name)
            child_path = child_uri.native_path()
            try:
                st = os.lstat(child_path)
            except OSError as exc:
                errors.append(WalkError(path=child_uri, message=os_error_text(exc.errno or 0)))
                continue
            is_link = stat.S_ISLNK(st.st_mode)
            if is_link:
                try:
                    st = os.stat(child_path)
                except OSError:
                    continue  # dangling or looping links are not even counted
            if examined >= options.max_entries:
                return FsWalkResponse(entries=entries, errors=errors, truncated=True)
            examined += 1
            if is_link and not (options.follow_directory_symlinks and stat.S_ISDIR(st.st_mode)):
                continue
            if stat.S_ISDIR(st.st_mode):
                entries.append(WalkEntry(path=child_uri, kind="directory"))
                identity = (st.st_dev, st.st_ino)
                hidden = child_uri.uri.rsplit("/", 1)[1].startswith(".")
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
