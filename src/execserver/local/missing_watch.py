"""`fs/watchMissing` on this host: tell once when missing paths appear or a present one changes.

A watch is one inotify instance (ctypes, Linux) read by the event loop, so it never blocks it.
It watches the nearest existing ancestor of every missing path and the present path itself, and
fires on the first event that names a missing path or one of its ancestors (a directory created
on the way, the ancestor itself changed, removed or moved) or the present path itself (changed,
written, removed, moved). Reads and opens do not count. Whether a path can be watched at all is
decided with `lstat`, as the reference does: a missing path that exists (even as a dangling
symlink), an ancestor that is not a real directory, or a present path that is missing or a
symlink make the watch refuse (`None`).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import os
import stat
import struct
from collections.abc import Sequence

from execserver.protocol.pathuri import PathUri, PathUriError

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_DONT_FOLLOW = 0x02000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

# Changes, never accesses (a read or an open of a watched path does not fire).
WATCH_MASK = (
    IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_DONT_FOLLOW
)
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, name length

_libc: ctypes.CDLL | None = None


def _inotify() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        _libc = libc
    return _libc


def _lstat(path: bytes) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None


def _watch_point(path: bytes) -> bytes | None:
    """The nearest existing ancestor of a missing `path`, if it is a real directory."""
    current = path
    while True:
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent
        info = _lstat(current)
        if info is not None:
            return current if stat.S_ISDIR(info.st_mode) else None


def _is_at_or_above(ancestor: bytes, path: bytes) -> bool:
    return path == ancestor or path.startswith(ancestor.rstrip(b"/") + b"/")


class LocalMissingWatch:
    """One armed watch (see the module docstring). Create with `watch_missing()`."""

    def __init__(
        self, fd: int, dirs: dict[int, bytes], missing: list[bytes], present: bytes | None
    ):
        self._fd: int | None = fd
        self._dirs = dirs
        self._missing = missing
        self._present = present
        self._fired = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().add_reader(fd, self._on_readable)

    def _relevant(self, path: bytes) -> bool:
        if self._present is not None and path == self._present:
            return True
        return any(_is_at_or_above(path, missing) for missing in self._missing)

    def _on_readable(self) -> None:
        assert self._fd is not None
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            self._fire(True)
            return
        offset = 0
        while offset + _EVENT.size <= len(data):
            wd, mask, _, length = _EVENT.unpack_from(data, offset)
            raw_name = data[offset + _EVENT.size : offset + _EVENT.size + length]
            offset += _EVENT.size + length
            if mask & IN_Q_OVERFLOW:
                self._fire(True)  # events were lost: assume one of them mattered
                return
            base = self._dirs.get(wd)
            if base is None or mask & IN_IGNORED:
                continue
            name = raw_name.rstrip(b"\0")
            path = os.path.join(base, name) if name else base
            if self._relevant(path):
                self._fire(True)
                return

    def _fire(self, changed: bool) -> None:
        if not self._fired.done():
            self._fired.set_result(changed)
        self._release()

    def _release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)

    async def wait(self) -> bool:
        """True once the watched state changed; False if the watch was closed first.

        Cancellation: safe (the watch stays armed).
        """
        return await asyncio.shield(self._fired)

    async def aclose(self) -> None:
        """Stop watching; a pending `wait()` returns False. Cancellation: closed anyway."""
        if not self._fired.done():
            self._fired.set_result(False)
        self._release()


def watch_missing(missing: Sequence[PathUri], present: PathUri | None) -> LocalMissingWatch | None:
    """Arm a watch, or None when it cannot watch (see the module docstring)."""
    try:
        missing_paths = [uri.native_path() for uri in missing]
        present_path = None if present is None else present.native_path()
    except PathUriError:
        return None
    if not missing_paths:
        return None
    points: set[bytes] = set()
    for path in missing_paths:
        if _lstat(path) is not None:
            return None
        point = _watch_point(path)
        if point is None:
            return None
        points.add(point)
    if present_path is not None:
        info = _lstat(present_path)
        if info is None or stat.S_ISLNK(info.st_mode):
            return None
        points.add(present_path)
    libc = _inotify()
    fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    if fd < 0:
        return None
    dirs: dict[int, bytes] = {}
    for point in sorted(points):
        wd = libc.inotify_add_watch(fd, point, WATCH_MASK)
        if wd < 0:
            err = ctypes.get_errno()
            os.close(fd)
            if err in (errno.ENOENT, errno.EACCES, errno.ENOTDIR, errno.ENOSPC, errno.EPERM):
                return None
            raise OSError(err, os.strerror(err))
        dirs[wd] = point
    watch = LocalMissingWatch(fd, dirs, missing_paths, present_path)
    # A change between the checks above and the watches being in place would go unseen.
    if any(_lstat(path) is not None for path in missing_paths) or (
        present_path is not None and _lstat(present_path) is None
    ):
        watch._fire(True)
    return watch
