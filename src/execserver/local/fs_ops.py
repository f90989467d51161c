"""Filesystem operations on this host, with the reference's semantics and error texts.

Blocking functions on native byte paths; callers run them off the event loop. Failures are
`OSError`s (rendered by `errors.io_error`) or `RpcError`s carrying the reference's wording.
Two deliberate improvements: `write_file` replaces regular files atomically, and `copy`
refuses to copy a file onto itself (the reference truncates it to zero bytes). Operations that
may wait on a FIFO, socket or device (`read_file`, `write_file`, `copy`) are generators that
yield a `Wait` instead of blocking (see `blocking.py`); every file they open is opened
non-blocking, so no open waits for a peer.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Callable

from execserver.errors import CopyRefused, InternalError, InvalidRequest
from execserver.local.blocking import BlockingOp, Ready, Wait
from execserver.local.statx import birth_time_ms
from execserver.protocol.file_system import DirectoryEntry, FileAttributes, FileMetadata

READ_CHUNK_BYTES = 4 * 1024 * 1024
WAITING_OPS = frozenset({"read_file", "write_file", "copy"})
"""The operations that are generators (they may wait on a FIFO, socket or device)."""
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

    Opened non-blocking, so a FIFO cannot hang the open, and left so: a "regular" file that
    streams (/proc/kmsg) answers EAGAIN instead of blocking a read. Without `follow_symlinks`,
    a symlink anywhere in the path fails (ENOTDIR in the middle, ELOOP last).
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
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_file(
    path: bytes, *, follow_symlinks: bool = True, grow: Callable[[int], None] | None = None
) -> BlockingOp[bytes]:
    """The whole file. `grow(total)` is told the size before it is held (the size the file
    claims first, then what arrived) and raises to stop a read that is too large: files such
    as /proc/self/pagemap claim 0 bytes and never end."""
    fd = open_regular_file(path, follow_symlinks=follow_symlinks)
    try:
        size = os.fstat(fd).st_size
        if grow is not None:
            grow(size)
        parts: list[bytes] = []
        total = 0
        while True:
            # One read of the whole size in the common case; keep going if the file grew.
            want = max(size + 1, READ_CHUNK_BYTES) if not parts else READ_CHUNK_BYTES
            if grow is not None and parts:
                grow(total + want)
            try:
                chunk = os.read(fd, want)
            except BlockingIOError:
                yield Wait(fd, Ready.READABLE, path)
                continue
            if not chunk:
                break
            total += len(chunk)
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


# Where a temporary file cannot be made, the file is written in place (as the reference does).
_NO_TEMP_FILE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.EDQUOT)
# Filesystems without unnamed temporary files (O_TMPFILE) get a named one.
_NO_UNNAMED_TEMP = (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT)


def write_file(path: bytes, data: bytes, *, follow_symlinks: bool = True) -> BlockingOp[None]:
    """Write `data` to `path`, replacing a regular file atomically, so readers never see a
    half-written file: the data goes into an unnamed temporary file in the same directory
    (O_TMPFILE; mode and ownership of the old file kept), which is then linked in under a
    temporary name and renamed over the target (a new file is linked in directly). A crash
    before the link leaves nothing behind; only the instant between link and rename can leave
    a `.NAME.execserver-<hex>` file. Without O_TMPFILE, a named temporary file is written.

    Non-regular targets (devices, FIFOs) are written in place, opened non-blocking: a FIFO
    without a reader fails with ENXIO, and a full one is waited for (`Wait`). If a temporary
    file cannot be created (a directory we may not write to), the file is written in place
    like the reference does. A rename gives the path a new inode: other hard links keep the
    old content.
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
        yield from _write_in_place(target, data)
        return
    directory = os.path.dirname(target) or b"."
    try:
        fd = os.open(directory, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno in _NO_TEMP_FILE:
            yield from _write_in_place(target, data)
            return
        if exc.errno not in _NO_UNNAMED_TEMP:
            raise
        _write_named_temp(target, data, existing)
        return
    try:
        _fill(fd, data, existing)
        if not _link_unnamed(fd, target, existing):
            _write_named_temp(target, data, existing)  # no /proc to link through
    finally:
        os.close(fd)


def _fill(fd: int, data: bytes, existing: os.stat_result | None) -> None:
    """Write a new (regular, so never blocking) file and give it the old file's mode/owner."""
    _write_regular(fd, data)
    if existing is not None:
        os.fchmod(fd, stat.S_IMODE(existing.st_mode))
        if (existing.st_uid, existing.st_gid) != (os.geteuid(), os.getegid()):
            with contextlib.suppress(OSError):
                os.fchown(fd, existing.st_uid, existing.st_gid)


def _temp_name(target: bytes) -> bytes:
    directory, name = os.path.split(target)
    return os.path.join(directory, b"." + name + b".execserver-" + secrets.token_hex(6).encode())


def _link(fd: int, name: bytes) -> bool:
    """linkat() the open (unnamed) file `fd` to `name` through /proc (os.link's plain form
    would link the /proc symlink itself); False if /proc is not mounted."""
    try:
        proc = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        os.link(str(fd), name, src_dir_fd=proc, follow_symlinks=True)
    finally:
        os.close(proc)
    return True


def _link_unnamed(fd: int, target: bytes, existing: os.stat_result | None) -> bool:
    """Give the unnamed file `fd` the name `target`; False if /proc is not there to do it."""
    if existing is None:
        try:
            return _link(fd, target)
        except FileExistsError:
            pass  # created meanwhile: replace it like an existing file
    temp = _temp_name(target)
    if not _link(fd, temp):
        return False
    try:
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return True


def _write_named_temp(target: bytes, data: bytes, existing: os.stat_result | None) -> None:
    temp = _temp_name(target)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        try:
            _fill(fd, data, existing)
        finally:
            os.close(fd)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _write_in_place(path: bytes, data: bytes) -> BlockingOp[None]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NONBLOCK, 0o666)
    try:
        yield from _write_all(fd, data, path)
    finally:
        os.close(fd)


def _write_regular(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _write_all(fd: int, data: bytes, path: bytes) -> BlockingOp[None]:
    """Write everything to a non-blocking fd, waiting while it is full."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            yield Wait(fd, Ready.WRITABLE, path)
            continue
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


def copy(source: bytes, destination: bytes, *, recursive: bool) -> BlockingOp[None]:
    st = os.lstat(source)
    if stat.S_ISDIR(st.st_mode):
        if not recursive:
            raise CopyRefused("directory_without_recursive")
        if _inside(destination, st):
            raise CopyRefused("into_itself")
        yield from _copy_tree(source, destination)
    elif stat.S_ISLNK(st.st_mode):
        _copy_symlink(source, destination)
    elif stat.S_ISREG(st.st_mode):
        yield from _copy_file(source, destination, st)
    else:
        raise CopyRefused("unsupported_type")


def _inside(destination: bytes, directory: os.stat_result) -> bool:
    """Whether `destination` is `directory` or below it, by device and inode: a bind mount or
    symlink alias of the directory is caught as well as its own path."""
    current = os.path.realpath(destination)
    while True:
        try:
            st = os.stat(current)
        except OSError:
            st = None  # not there yet: its parents decide
        if st is not None and (st.st_dev, st.st_ino) == (directory.st_dev, directory.st_ino):
            return True
        parent = os.path.dirname(current)
        if parent == current:
            return False
        current = parent


def _copy_symlink(source: bytes, destination: bytes) -> None:
    # Never replaces an existing destination (EEXIST), like the reference.
    os.symlink(os.readlink(source), destination)


def _copy_file(source: bytes, destination: bytes, st: os.stat_result) -> BlockingOp[None]:
    with contextlib.suppress(FileNotFoundError):
        if os.path.samefile(source, destination):
            # The reference truncates the file to zero bytes here; we refuse instead.
            raise CopyRefused("same_file")
    # Non-blocking: the source may have been swapped for a FIFO since it was looked at, and
    # the destination may be one (no reader: ENXIO; a full one is waited for).
    fd_in = os.open(source, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd_in).st_mode):
            raise CopyRefused("unsupported_type")
        fd_out = os.open(
            destination,
            os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NONBLOCK,
            0o666,
        )
        try:
            yield from _copy_contents(fd_in, fd_out, st.st_size, destination)
            os.fchmod(fd_out, stat.S_IMODE(st.st_mode))
        finally:
            os.close(fd_out)
    finally:
        os.close(fd_in)


def _copy_contents(fd_in: int, fd_out: int, size: int, destination: bytes) -> BlockingOp[None]:
    try:
        while os.copy_file_range(fd_in, fd_out, max(size, READ_CHUNK_BYTES)):
            pass
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    while chunk := os.read(fd_in, READ_CHUNK_BYTES):
        yield from _write_all(fd_out, chunk, destination)


def _copy_tree(source: bytes, destination: bytes) -> BlockingOp[None]:
    """Merge `source`'s contents into `destination` (created if missing), depth first without
    recursion (any depth); a directory met twice by device and inode is not entered again."""
    seen: set[tuple[int, int]] = set()
    pending = [(source, destination)]
    while pending:
        src_dir, dst_dir = pending.pop()
        os.makedirs(dst_dir, exist_ok=True)
        created = os.stat(dst_dir)
        seen.add((created.st_dev, created.st_ino))
        with os.scandir(src_dir) as listing:
            children = [(entry.name, entry.stat(follow_symlinks=False)) for entry in listing]
        subdirectories = []
        for name, st in children:
            src, dst = os.path.join(src_dir, name), os.path.join(dst_dir, name)
            if stat.S_ISDIR(st.st_mode):
                if (st.st_dev, st.st_ino) not in seen:
                    subdirectories.append((src, dst))
            elif stat.S_ISLNK(st.st_mode):
                _copy_symlink(src, dst)
            elif stat.S_ISREG(st.st_mode):
                yield from _copy_file(src, dst, st)
            # Special files (FIFOs, sockets, devices) inside a directory are skipped.
        pending.extend(reversed(subdirectories))
