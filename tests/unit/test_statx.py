"""local/statx: decoding the birth time out of a `struct statx` buffer."""

from __future__ import annotations

import os
import struct
import sys
import time
from pathlib import Path

import pytest

from execserver.local.statx import birth_time_ms, decode_birth_time_ms

_STATX_BTIME = 0x800
_BTIME_OFFSET = 80


def _statx_buffer(mask: int, seconds: int, nanos: int, order: str = "=") -> bytes:
    """A 256-byte `struct statx` with only `stx_mask` and `stx_btime` set."""
    buffer = bytearray(256)
    struct.pack_into(f"{order}I", buffer, 0, mask)
    struct.pack_into(f"{order}qI", buffer, _BTIME_OFFSET, seconds, nanos)
    return bytes(buffer)


def test_statx_decodes_birth_time_in_native_byte_order() -> None:
    """The mask and the timestamp are read in the machine's byte order, as the kernel wrote
    them."""
    buffer = _statx_buffer(_STATX_BTIME | 0x7FF, 1_700_000_000, 123_456_789)
    assert decode_birth_time_ms(buffer) == 1_700_000_000_123


def test_statx_decoding_does_not_assume_little_endian() -> None:
    """A buffer in the opposite byte order reads as something else (so the order is native)."""
    foreign = ">" if sys.byteorder == "little" else "<"
    buffer = _statx_buffer(_STATX_BTIME, 1_700_000_000, 0, order=foreign)
    assert decode_birth_time_ms(buffer) != 1_700_000_000_000


def test_statx_without_birth_time_in_mask_is_zero() -> None:
    """A filesystem without birth times clears STATX_BTIME in the mask: 0, like the reference."""
    assert decode_birth_time_ms(_statx_buffer(0x7FF, 1_700_000_000, 5)) == 0


def test_statx_birth_time_before_the_epoch_is_zero() -> None:
    """Negative birth times are reported as 0."""
    assert decode_birth_time_ms(_statx_buffer(_STATX_BTIME, -5, 0)) == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="statx is Linux-only")
def test_statx_birth_time_of_a_new_file_is_now_or_unknown(tmp_path: Path) -> None:
    """A file created now has a birth time within the last minute, or 0 (no btime support)."""
    path = tmp_path / "born"
    path.write_bytes(b"")
    born = birth_time_ms(os.fsencode(path))
    assert born == 0 or abs(born - time.time() * 1000) < 60_000
