"""Standard padded base64 exactly as the reference accepts it, with its error texts.

The reference decodes with Rust's `base64` crate (standard alphabet, canonical padding, no
trailing bits). Python's decoder is lenient in places, so the C fast path is checked for the
three things it lets through, and a slow path names the first offending byte like the crate does.
Pure data: no I/O.
"""

from __future__ import annotations

import binascii

import pybase64

_PAD = 0x3D
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_VALUE: dict[int, int] = {c: i for i, c in enumerate(_ALPHABET)}


class Base64Error(ValueError):
    """Invalid base64; `str(exc)` is the reference's message (e.g. `Invalid padding`)."""


_SHORT = 256
"""Texts shorter than this go through `binascii` (a third of pybase64's time up to about 200
symbols, and a third of its cost with the caches cold: a keystroke's `process/write`), longer
ones through pybase64's SIMD decoder."""


def decode(text: str | bytes) -> bytes:
    """Decode canonical padded base64 or raise `Base64Error` with the reference's wording."""
    if len(text) % 4 == 0:
        try:
            # Both refuse anything outside the alphabet and misplaced `=` (strict mode, and
            # `validate`); neither checks the unused bits of a padded end (below).
            if len(text) < _SHORT:
                out = binascii.a2b_base64(text, strict_mode=True)
            else:
                out = pybase64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            pass
        else:
            if len(out) == len(text) // 4 * 3:  # no padding, so no unused bits to check
                return out
            tail = text[-2:] if isinstance(text, bytes) else text[-2:].encode("ascii")
            pad = tail.count(b"=")
            # It still accepts non-zero unused bits (`QUJ=`), which the crate rejects.
            if len(out) == len(text) // 4 * 3 - pad and _canonical_tail(text[-3:], pad):
                return out
    _explain(text.encode("utf-8") if isinstance(text, str) else text)
    raise Base64Error("Invalid padding")  # unreachable in practice: _explain always raises


def encode(data: bytes) -> str:
    """Encode bytes as standard padded base64 text."""
    return pybase64.b64encode_as_string(data)


def _canonical_tail(tail: str | bytes, pad: int) -> bool:
    """Whether the bits a final group leaves unused are zero (the last 3 symbols given)."""
    if pad == 0:
        return True
    symbols = tail.encode("ascii") if isinstance(tail, str) else tail
    if pad == 2:
        return _VALUE[symbols[-3]] & 0x0F == 0
    return _VALUE[symbols[-2]] & 0x03 == 0


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
