"""Write a TOML document (the values `tomllib` reads) in the layout codex's executor uses.

`environmentConfig/read` sends each configuration layer back as TOML text; clients parse it, so
any valid TOML would do, but the differential tests compare the text, so the layout follows
what the reference writes:

* in every table, plain values first (in document order), then its sub-tables and arrays of
  tables (in document order), depth first; a blank line before every header;
* a header only for tables that hold a plain value or nothing at all (a table holding only
  tables is implied by its children's headers); inline tables become sub-tables and arrays
  whose items are all tables become arrays of tables, except inside an inline array;
* bare keys where the key allows it, else a quoted key (the string rules below, one line);
* strings as basic strings, unless that needs escapes a literal string avoids (`"` or `\\` on
  one line; `\\` or `\"\"\"` across lines) and a literal string can hold the text; multi-line
  strings (containing a newline) start with a newline after the opening quotes;
* floats in plain decimal notation (never an exponent), with `.0` when integral; `inf`,
  `-inf`, `nan`; dates and times in RFC 3339 with a `T`, fractional seconds without
  trailing zeros and `Z` for a zero offset.

Pure: stdlib only, no I/O.
"""

from __future__ import annotations

import datetime
import decimal
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

__all__ = ["dumps", "format_float", "format_key", "format_string"]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")
_SHORT_ESCAPES = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def dumps(document: Mapping[str, Any]) -> str:
    """The TOML text of `document` (a `tomllib` result, or any mapping of TOML values)."""
    text = "".join(_table_lines(document, (), header=False, array_item=False))
    return text.removeprefix("\n")


def _is_table(value: Any) -> bool:
    return isinstance(value, Mapping)


def _is_array_of_tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_table(item) for item in value)


def _table_lines(
    table: Mapping[str, Any], path: tuple[str, ...], *, header: bool, array_item: bool
) -> Iterator[str]:
    plain = [(k, v) for k, v in table.items() if not _is_table(v) and not _is_array_of_tables(v)]
    nested = [(k, v) for k, v in table.items() if _is_table(v) or _is_array_of_tables(v)]
    dotted = ".".join(format_key(part) for part in path)
    if array_item:
        yield f"\n[[{dotted}]]\n"
    elif header and (plain or not nested):
        yield f"\n[{dotted}]\n"
    for key, value in plain:
        yield f"{format_key(key)} = {format_value(value)}\n"
    for key, value in nested:
        if _is_table(value):
            yield from _table_lines(value, (*path, key), header=True, array_item=False)
        else:
            for item in value:
                yield from _table_lines(item, (*path, key), header=True, array_item=True)


def format_key(key: str) -> str:
    """A key: bare when it can be, else quoted on one line."""
    if _BARE_KEY.match(key):
        return key
    return format_string(key, multiline_allowed=False)


def format_value(value: Any) -> str:
    """An inline value (a table here is an inline table)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return format_string(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return format_datetime(value)
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        items = ", ".join(f"{format_key(k)} = {format_value(v)}" for k, v in value.items())
        return "{ " + items + " }"
    if isinstance(value, Sequence):
        return "[" + ", ".join(format_value(item) for item in value) + "]"
    raise TypeError(f"not a TOML value: {type(value).__name__}")


def format_float(value: float) -> str:
    """Rust's `Display` of an f64 (positional, shortest round trip), with `.0` when integral."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = format(decimal.Decimal(repr(value)), "f")
    if "." not in text:
        text += ".0"
    return text


def format_datetime(value: datetime.datetime | datetime.date | datetime.time) -> str:
    if isinstance(value, datetime.datetime):
        text = value.date().isoformat() + "T" + _time(value.timetz())
        offset = value.utcoffset()
        if offset is None:
            return text
        return text + _offset(offset)
    if isinstance(value, datetime.date):
        return value.isoformat()
    return _time(value)


def _time(value: datetime.time) -> str:
    text = f"{value.hour:02}:{value.minute:02}:{value.second:02}"
    if value.microsecond:
        text += "." + f"{value.microsecond:06}".rstrip("0")
    return text


def _offset(offset: datetime.timedelta) -> str:
    minutes = int(offset.total_seconds()) // 60
    if minutes == 0:
        return "Z"
    sign = "+" if minutes > 0 else "-"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02}:{minutes % 60:02}"


def _literal_allowed(text: str) -> bool:
    """A literal string holds no control characters but tab (and newline across lines)."""
    return not any((ord(ch) < 0x20 and ch not in "\t\n") or ord(ch) == 0x7F for ch in text)


def format_string(text: str, *, multiline_allowed: bool = True) -> str:
    """A string value (or, with `multiline_allowed=False`, a quoted key)."""
    multiline = multiline_allowed and "\n" in text
    if multiline:
        wants_literal = "\\" in text or '"""' in text
        if (
            wants_literal
            and _literal_allowed(text)
            and "'''" not in text
            and not text.endswith("'")
        ):
            return "'''\n" + text + "'''"
        return '"""\n' + _escape(text, multiline=True) + '"""'
    wants_literal = "\\" in text or '"' in text
    if wants_literal and _literal_allowed(text) and "\n" not in text:
        if "'" not in text:
            return "'" + text + "'"
        if multiline_allowed and "'''" not in text and not text.endswith("'"):
            return "'''" + text + "'''"
    return '"' + _escape(text, multiline=False) + '"'


def _escape(text: str, *, multiline: bool) -> str:
    out: list[str] = []
    quotes = 0
    for ch in text:
        if ch == '"':
            if multiline:
                # Raw quotes, except one that would close the string (a third in a row).
                quotes += 1
                out.append('\\"' if quotes == 3 else '"')
                if quotes == 3:
                    quotes = 0
                continue
            out.append('\\"')
            continue
        quotes = 0
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\n" and multiline:
            out.append("\n")
        elif ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return "".join(out)
