"""Rust's standard formatting where the reference's messages show it: ``{:?}`` of a str, ``Display``
of an f64, and ``str::trim``. Pure, stdlib only.
"""

from __future__ import annotations

import math
import unicodedata
from decimal import Decimal
from typing import Final

__all__ = ["WHITESPACE", "display_f64", "rust_debug_str", "rust_trim"]


def rust_debug_str(text: str) -> str:
    """Quote `text` like Rust's `{:?}` for str."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[ch])
        elif code < 0x20 or code == 0x7F or (code > 0x7F and _non_printable(ch)):
            out.append(f"\\u{{{code:x}}}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


_SIMPLE_ESCAPES: Final = {
    "\t": "\\t",
    "\r": "\\r",
    "\n": "\\n",
    "\\": "\\\\",
    '"': '\\"',
    "\0": "\\0",
}


def _non_printable(ch: str) -> bool:
    category = unicodedata.category(ch)
    return category in {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Mn", "Me"} or (
        category == "Zs" and ch != " "
    )


def display_f64(value: float) -> str:
    """Rust's ``Display`` for f64: the shortest digits that round-trip, never an exponent."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    text = format(Decimal(repr(value)), "f")
    # repr keeps a ".0" on integral values ("2.0"), which Rust does not print.
    return text.rstrip("0").rstrip(".") if "." in text else text


# Rust's char::is_whitespace (Unicode White_Space), which str::trim strips. Python's str.strip()
# also strips U+001C..U+001F, which Rust keeps.
WHITESPACE: Final = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def rust_trim(text: str) -> str:
    """Rust's ``str::trim``."""
    return text.strip(WHITESPACE)
