"""Standard padded base64 exactly as the reference accepts it, with its error texts.

The reference decodes with Rust's `base64` crate (standard alphabet, canonical padding, no
trailing bits). Python's decoder is lenient in places, so the C fast path is checked for the
three things it lets through, and a slow path names the first offending byte like the crate does.
Pure data: no I/O.
"""

from __future__ import annotations

import binascii

_PAD = 0x3D
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_VALUE: dict[int, int] = {c: i for i, c in enumerate(_ALPHABET)}


class Base64Error(ValueError):
    """Invalid base64; `str(exc)` is the reference's message (e.g. `Invalid padding`)."""


def decode(text: str | bytes) -> bytes:
    """Decode canonical padded base64 or raise `Base64Error` with the reference's wording."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    if len(data) % 4 == 0:
        try:
            out = binascii.a2b_base64(data, strict_mode=True)
        except binascii.Error:
            pass
        else:
            pad = len(data) - len(data.rstrip(b"="))
            # Python also accepts surplus padding (`QUJD====`) and non-zero unused bits.
            if pad <= 2 and len(out) == len(data) // 4 * 3 - pad and _canonical_tail(data, pad):
                return out
    _explain(data)
    raise Base64Error("Invalid padding")  # unreachable in practice: _explain always raises


def encode(data: bytes) -> str:
    """Encode bytes as standard padded base64 text."""
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _canonical_tail(data: bytes, pad: int) -> bool:
    # Python ignores bits that do not fit in the decoded bytes; the crate rejects them.
    if pad == 0:
        return True
    if pad == 2:
        return _VALUE[data[-3]] & 0x0F == 0
    return _VALUE[data[-2]] & 0x03 == 0


def _explain(data: bytes) -> None:
    """Raise the crate's error for `data`, scanning the way it does."""
    n = len(data)
    rem = n % 4
    # A lone trailing symbol can never decode: the crate names it first if it is not even in
    # the alphabet (`aGk=\n` -> symbol 10 at offset 4, not the earlier `=`).
    if rem == 1 and data[-1] != _PAD and data[-1] not in _VALUE:
        raise Base64Error(f"Invalid symbol {data[-1]}, offset {n - 1}.")
    body_end = n - rem if rem else max(n - 4, 0)
    for i in range(body_end):
        b = data[i]
        if b not in _VALUE:
            raise Base64Error(f"Invalid symbol {b}, offset {i}.")
    morsels: list[int] = []
    padding = 0
    first_pad = 0
    last_symbol = 0
    for i, b in enumerate(data[body_end:]):
        if b == _PAD:
            if i % 4 < 2:
                bad = body_end + (first_pad if padding else i)
                raise Base64Error(f"Invalid symbol {b}, offset {bad}.")
            if padding == 0:
                first_pad = i
            padding += 1
            continue
        if padding:
            raise Base64Error(f"Invalid symbol {_PAD}, offset {body_end + first_pad}.")
        value = _VALUE.get(b)
        if value is None:
            raise Base64Error(f"Invalid symbol {b}, offset {body_end + i}.")
        morsels.append(value)
        last_symbol = b
    if len(morsels) == 1:
        raise Base64Error(f"Invalid input length: {n}")
    if (padding + len(morsels)) % 4 != 0:
        raise Base64Error("Invalid padding")
    if morsels:
        unused_bits = {2: 4, 3: 2}.get(len(morsels), 0)
        if morsels[-1] & ((1 << unused_bits) - 1):
            raise Base64Error(
                f"Invalid last symbol {last_symbol}, offset {body_end + len(morsels) - 1}."
            )
