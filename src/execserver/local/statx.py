"""File birth time through Linux `statx` (Python 3.11's `os.stat` does not expose it)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from collections.abc import Callable

_AT_FDCWD = -100
_AT_SYMLINK_NOFOLLOW = 0x100
_STATX_BTIME = 0x800
_BTIME_OFFSET = 80  # struct statx: stx_btime {i64 tv_sec; u32 tv_nsec; ...}
_MASK_OFFSET = 0
_BUFFER_BYTES = 256


def _load() -> Callable[[int, bytes, int, int, ctypes.Array[ctypes.c_char]], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.statx
    except (OSError, AttributeError):
        return None
    function.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_void_p,
    ]
    function.restype = ctypes.c_int
    return function


_statx = _load()


def birth_time_ms(path: bytes, *, follow_symlinks: bool = True) -> int:
    """Milliseconds since the epoch of the file's creation, or 0 when unknown (like the
    reference, which reports 0 when the filesystem has no birth time)."""
    if _statx is None:
        return 0
    buffer = ctypes.create_string_buffer(_BUFFER_BYTES)
    flags = 0 if follow_symlinks else _AT_SYMLINK_NOFOLLOW
    if _statx(_AT_FDCWD, os.fsencode(path), flags, _STATX_BTIME, buffer) != 0:
        return 0
    return decode_birth_time_ms(buffer.raw)


def decode_birth_time_ms(buffer: bytes) -> int:
    """The birth time in a `struct statx` the kernel filled, or 0 when its mask says there is
    none. The kernel writes in the machine's byte order, so the fields are read natively."""
    mask: int = struct.unpack_from("=I", buffer, _MASK_OFFSET)[0]
    if not mask & _STATX_BTIME:
        return 0
    seconds: int
    nanos: int
    seconds, nanos = struct.unpack_from("=qI", buffer, _BTIME_OFFSET)
    return max(0, seconds * 1000 + nanos // 1_000_000)
