"""How the reference (Rust, serde) renders values in error messages. Pure data."""

from __future__ import annotations

import unicodedata
from typing import Any


def unexpected(value: Any, *, content: bool = False) -> str:
    """serde's `Unexpected` rendering of a JSON value.

    Params are deserialised from an arbitrary-precision JSON value, where numbers print as plain
    `number`; inside internally tagged enums serde buffers values first (`content`), and then
    numbers print with their value and null as `unit value`.
    """
    if value is None:
        return "unit value" if content else "null"
    if isinstance(value, bool):
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int):
        return f"integer `{value}`" if content else "number"
    if isinstance(value, float):
        return f"floating point `{value!r}`" if content else "number"
    if isinstance(value, str):
        return f"string {rust_debug_str(value)}"
    if isinstance(value, list):
        return "sequence"
    return "map"


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


_SIMPLE_ESCAPES = {"\t": "\\t", "\r": "\\r", "\n": "\\n", "\\": "\\\\", '"': '\\"', "\0": "\\0"}


def _non_printable(ch: str) -> bool:
    category = unicodedata.category(ch)
    return category in {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Mn", "Me"} or (
        category == "Zs" and ch != " "
    )


def unknown_variant(value: str, variants: tuple[str, ...]) -> str:
    """serde's message for an enum tag that is not one of `variants` (declaration order)."""
    names = [f"`{v}`" for v in variants]
    if len(names) == 1:
        expected = names[0]
    elif len(names) == 2:
        expected = f"{names[0]} or {names[1]}"
    else:
        expected = "one of " + ", ".join(names)
    return f"unknown variant `{value}`, expected {expected}"
