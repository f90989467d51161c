"""Base64 decoding: accepts exactly what the reference accepts, and words errors like it."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from execserver.protocol import b64
from execserver.protocol.b64 import Base64Error, decode, encode

# Captured from codex exec-server 0.169.0 (process/write chunk errors).
REFERENCE_ERRORS = {
    "!": "Invalid symbol 33, offset 0.",
    "QQ": "Invalid padding",
    "QQ=": "Invalid padding",
    "QR==": "Invalid last symbol 82, offset 1.",
    "QQ===": "Invalid symbol 61, offset 2.",
    "Q": "Invalid input length: 1",
    "QUJD=": "Invalid symbol 61, offset 4.",
    "QU JD": "Invalid symbol 32, offset 2.",
    "QUJDRA": "Invalid padding",
    "=QUJ": "Invalid symbol 61, offset 0.",
    "QUJD\nRA==": "Invalid symbol 10, offset 4.",
    "QUI=QUI=": "Invalid symbol 61, offset 3.",
    "-_-_": "Invalid symbol 45, offset 0.",
    "QUJDRA=": "Invalid padding",
    "QUJDR": "Invalid input length: 5",
    "QUJDRA=A": "Invalid symbol 61, offset 6.",
    "QUJ=": "Invalid last symbol 74, offset 2.",
    "Q===": "Invalid symbol 61, offset 1.",
    "====": "Invalid symbol 61, offset 0.",
    "QUJDR===": "Invalid symbol 61, offset 5.",
    "QQ=A": "Invalid symbol 61, offset 2.",
    "QUJDRU=": "Invalid padding",
    "QUJDRUY": "Invalid padding",
    "QUJDRUZ=": "Invalid last symbol 90, offset 6.",
    "QUJDRUZHS": "Invalid input length: 9",
    "Q=": "Invalid symbol 61, offset 1.",
    "QUJDRUZHSA": "Invalid padding",
    "QUJDRUZHSB==": "Invalid last symbol 66, offset 9.",
    "=": "Invalid symbol 61, offset 0.",
    "==": "Invalid symbol 61, offset 0.",
    "QQ==QQ==": "Invalid symbol 61, offset 2.",
    "QUJD====": "Invalid symbol 61, offset 4.",
    "é": "Invalid symbol 195, offset 0.",
}


@pytest.mark.parametrize(("text", "message"), sorted(REFERENCE_ERRORS.items()))
def test_b64_rejects_like_the_reference(text: str, message: str) -> None:
    """Each invalid input fails with the reference's exact message."""
    with pytest.raises(Base64Error) as info:
        decode(text)
    assert str(info.value) == message


@pytest.mark.parametrize("text", ["", "QQ==", "QUI=", "QUJD", "QUJDRA==", "QUJDRUZH"])
def test_b64_accepts_canonical_input(text: str) -> None:
    """Canonical padded base64 decodes to the standard library's result."""
    assert decode(text) == base64.b64decode(text)


@given(st.binary(max_size=300))
def test_b64_round_trips(data: bytes) -> None:
    """encode() output always decodes back to the same bytes."""
    assert decode(encode(data)) == data
    assert encode(data) == base64.b64encode(data).decode()


def _outcome(text: str) -> bytes | str:
    try:
        return decode(text)
    except Base64Error as exc:
        return f"error: {exc}"


@given(st.text(alphabet="QUJDRAZab+/=\n -é", max_size=24) | st.binary(max_size=40).map(encode))
def test_b64_short_and_long_decoders_agree(text: str) -> None:
    """Short texts go through binascii, long ones through pybase64: each decoder, forced on
    every text, gives the same bytes or the same error."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(b64, "_SHORT", 10**9)
        short = _outcome(text)
        patch.setattr(b64, "_SHORT", 0)
        long = _outcome(text)
    assert short == long
