"""Filesystem operations on this host, with the reference's semantics and error texts.

Blocking functions on native byte paths; callers run them off the event loop. Failures are
`OSError`s (rendered by `errors.io_error`) or `RpcError`s carrying the reference's wording.
Two deliberate improvements: `write_file` replaces regular files atomically, and `copy`
refuses to copy a file onto itself (the reference truncates it to zero bytes).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat

from execserver.errors import CopyRefused, InternalError, InvalidRequest
from execserver.local.statx import birth_time_ms
from execserver.protocol.file_system import DirectoryEntry, FileAttributes, FileMetadata

READ_CHUNK_BYTES = 4 * 1024 * 1024
_MAX_SYMLINK_HOPS = 40


def display(path: bytes) -> str:
    """A native path the way Rust's `Path::display` prints it (lossy UTF-8)."""
    return path.decode("utf-8", "replace")


def not_a_file(path: bytes) -> InvalidRequest:
    return InvalidRequest(f"path `{display(path)}` is not a file")


def _os_error(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def open_regular_file(path: bytes, *, follow_symlinks: bool = True) -> int:
    """Open a regular file for reading; anything else is `path ... is not a file`.

    Opened non-blocking first so a FIFO cannot hang us, then switched back to blocking. Without
    `follow_symlinks`, a symlink anywhere in the path fails (ENOTDIR in the middle, ELOOP last).
    """
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK
    if not follow_symlinks:
        check_no_follow(path)
        flags |= os.O_NOFOLLOW
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            if follow_symlinks:
                raise not_a_file(path)
            raise InvalidRequest("path is not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_file(path: bytes, *, follow_symlinks: bool = True) -> bytes:
    fd = open_regular_file(path, follow_symlinks=follow_symlinks)
    try:
        size = os.fstat(fd).st_size
        parts: list[bytes] = []
        while True:
            # One read of the whole size in the common case; keep going if the file grew.
            chunk = os.read(fd, max(size + 1, READ_CHUNK_BYTES) if not parts else READ_CHUNK_BYTES)
            if not chunk:
                break
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)
    finally:
        os.close(fd)


def _resolve_final_symlinks(path: bytes) -> bytes:
    """Follow symlinks in the last component (writes go to the link's target)."""
    for _ in range(_MAX_SYMLINK_HOPS):
        try:
            target = os.readlink(path)
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOENT):
                return path  # not a symlink, or nothing there yet
            raise
        path = os.path.join(os.path.dirname(path), target)
    raise _os_error(errno.ELOOP)


def write_file(path: bytes, data: bytes, *, follow_symlinks: bool = True) -> None:
    """Write `data` to `path`, replacing a regular file atomically (temp file + rename in the
    same directory, mode and ownership kept), so readers never see a half-written file.

    Non-regular targets (devices, FIFOs) are written in place. If a temporary file cannot be
    created (a directory we may not write to), the file is written in place like the
    reference does. A rename gives the path a new inode: other hard links keep the old
    content.
    """
    if follow_symlinks:
        target = _resolve_final_symlinks(path)
    else:
        found = check_no_follow(path)
        if found is not None and stat.S_ISLNK(found.st_mode):
            raise _os_error(errno.ELOOP)
        target = path
    try:
        existing: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        existing = None
    if existing is not None and stat.S_ISDIR(existing.st_mode):
        raise _os_error(errno.EISDIR)
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        _write_in_place(target, data)
        return
    directory, name = os.path.split(target)
    temp = os.path.join(directory, b"." + name + b".execserver-" + secrets.token_hex(6).encode())
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.EDQUOT):
            _write_in_place(target, data)
            return
        raise
    try:
        try:
            _write_all(fd, data)
            if existing is not None:
                os.fchmod(fd, stat.S_IMODE(existing.st_mode))
                if (existing.st_uid, existing.st_gid) != (os.geteuid(), os.getegid()):
                    with contextlib.suppress(OSError):
                        os.fchown(fd, existing.st_uid, existing.st_gid)
        finally:
            os.close(fd)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _write_in_place(path: bytes, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def create_directory(path: bytes, *, recursive: bool = True, follow_symlinks: bool = True) -> None:
    if not follow_symlinks:
        found = check_no_follow(path)
        if found is not None and stat.S_ISLNK(found.st_mode) and recursive:
            raise _os_error(errno.ENOTDIR)
    if recursive:
        os.makedirs(path, exist_ok=True)
    else:
        os.mkdir(path)


def check_no_follow(path: bytes) -> os.stat_result | None:
    """Resolve `path` without following any symlink, like an O_NOFOLLOW walk does: a symlink
    in the middle is ENOTDIR. Returns the final component's lstat (None if it is missing), and
    leaves a symlink as the final component to the caller."""
    parts = [p for p in path.split(b"/") if p]
    current = b""
    for index, part in enumerate(parts):
        current += b"/" + part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            if index == len(parts) - 1:
                return None
            raise
        if stat.S_ISLNK(st.st_mode) and index < len(parts) - 1:
            raise _os_error(errno.ENOTDIR)
        if index == len(parts) - 1:
            return st
    return os.lstat(b"/")


def _no_symlink(st: os.stat_result | None) -> None:
    if st is not None and stat.S_ISLNK(st.st_mode):
        raise InvalidRequest("path contains a symbolic link")


def get_metadata(path: bytes, *, follow_symlinks: bool = True) -> FileMetadata:
    if follow_symlinks:
        link = os.lstat(path)
        st = os.stat(path) if stat.S_ISLNK(link.st_mode) else link
        # The reference reports no birth time when it follows symlinks (std's metadata()).
        created = 0
    else:
        found = check_no_follow(path)
        _no_symlink(found)
        if found is None:
            raise _os_error(errno.ENOENT)
        st = link = found
        created = birth_time_ms(path, follow_symlinks=False)
    return FileMetadata(
        is_directory=stat.S_ISDIR(st.st_mode),
        is_file=stat.S_ISREG(st.st_mode),
        is_symlink=stat.S_ISLNK(link.st_mode),
        size=st.st_size,
        created_at_ms=created,
        modified_at_ms=st.st_mtime_ns // 1_000_000,
    )


def get_attributes(path: bytes) -> FileAttributes:
    """Permission bits and access/modification times (extension `fs/getAttributes`)."""
    st = os.stat(path)
    return FileAttributes(
        mode=stat.S_IMODE(st.st_mode),
        accessed_at_ns=st.st_atime_ns,
        modified_at_ns=st.st_mtime_ns,
    )


def set_attributes(
    path: bytes,
    *,
    mode: int | None = None,
    accessed_at_ns: int | None = None,
    modified_at_ns: int | None = None,
) -> None:
    """Change the permission bits and/or times that are given (extension `fs/setAttributes`)."""
    if mode is not None and mode > 0o7777:
        raise InvalidRequest(f"fs/setAttributes mode {mode:o} has bits beyond 7777")
    if mode is not None:
        os.chmod(path, mode)
    if accessed_at_ns is not None or modified_at_ns is not None:
        if accessed_at_ns is None or modified_at_ns is None:
            st = os.stat(path)
            accessed_at_ns = st.st_atime_ns if accessed_at_ns is None else accessed_at_ns
            modified_at_ns = st.st_mtime_ns if modified_at_ns is None else modified_at_ns
        os.utime(path, ns=(accessed_at_ns, modified_at_ns))


def canonicalize(path: bytes) -> bytes:
    return os.path.realpath(path, strict=True)


def read_directory(path: bytes) -> list[DirectoryEntry]:
    """Entries in directory order; entries whose metadata fails (dangling links) are skipped."""
    entries = []
    with os.scandir(path) as listing:
        for entry in listing:
            # The type from readdir (d_type) answers without a stat, except for symlinks (and
            # filesystems that report no type), whose target is looked up.
            try:
                if entry.is_symlink():
                    mode = entry.stat(follow_symlinks=True).st_mode
                    is_directory, is_file = stat.S_ISDIR(mode), stat.S_ISREG(mode)
                else:
                    is_directory = entry.is_dir(follow_symlinks=False)
                    is_file = entry.is_file(follow_symlinks=False)
            except OSError:
                continue
            entries.append(DirectoryEntry(display(entry.name), is_directory, is_file))
    return entries


def remove(
    path: bytes, *, recursive: bool = True, force: bool = True, follow_symlinks: bool = True
) -> None:
    if recursive and not follow_symlinks:
        raise InternalError("recursive no-follow removal is unsupported")
    try:
        if follow_symlinks:
            st = os.lstat(path)
        else:
            found = check_no_follow(path)
            _no_symlink(found)
            if found is None:
                raise _os_error(errno.ENOENT)
            st = found
    except FileNotFoundError:
        if force:
            return
        raise
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)  # a symlink is removed itself, never its target
    elif recursive:
        shutil.rmtree(path)
    else:
        os.rmdir(path)


def copy(source: bytes, destination: bytes, *, recursive: bool) -> None:
    st = os.lstat(source)
    if stat.S_ISDIR(st.st_mode):
        if not recursive:
            raise CopyRefused("directory_without_recursive")
        real_source = os.path.realpath(source)
        real_destination = os.path.realpath(destination)
        if real_destination == real_source or real_destination.startswith(real_source + b"/"):
            raise CopyRefused("into_itself")
        _copy_tree(source, destination)
    elif stat.S_ISLNK(st.st_mode):
        _copy_symlink(source, destination)
    elif stat.S_ISREG(st.st_mode):
        _copy_file(source, destination, st)
    else:
        raise CopyRefused("unsupported_type")


def _copy_symlink(source: bytes, destination: bytes) -> None:
    # Never replaces an existing destination (EEXIST), like the reference.
    os.symlink(os.readlink(source), destination)


def _copy_file(source: bytes, destination: bytes, st: os.stat_result) -> None:
    with contextlib.suppress(FileNotFoundError):
        if os.path.samefile(source, destination):
            # The reference truncates the file to zero bytes here; we refuse instead.
            raise CopyRefused("same_file")
    fd_in = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fd_out = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        try:
            _copy_contents(fd_in, fd_out, st.st_size)
            os.fchmod(fd_out, stat.S_IMODE(st.st_mode))
        finally:
            os.close(fd_out)
    finally:
        os.close(fd_in)


def _copy_contents(fd_in: int, fd_out: int, size: int) -> None:
    try:
        while os.copy_file_range(fd_in, fd_out, max(size, READ_CHUNK_BYTES)):
            pass
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    while chunk := os.read(fd_in, READ_CHUNK_BYTES):
        _write_all(fd_out, chunk)


def _copy_tree(source: bytes, destination: bytes) -> None:
    """Merge `source`'s contents into `destination` (created if missing)."""
    os.makedirs(destination, exist_ok=True)
    with os.scandir(source) as listing:
        children = [(entry.name, entry.stat(follow_symlinks=False)) for entry in listing]
    for name, st in children:
        src, dst = os.path.join(source, name), os.path.join(destination, name)
        if stat.S_ISDIR(st.st_mode):
            _copy_tree(src, dst)
        elif stat.S_ISLNK(st.st_mode):
            _copy_symlink(src, dst)
        elif stat.S_ISREG(st.st_mode):
            _copy_file(src, dst, st)
        # Special files (FIFOs, sockets, devices) inside a directory are skipped.
