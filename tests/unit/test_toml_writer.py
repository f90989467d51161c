"""The TOML writer of `environmentConfig/read` (local/toml_writer.py): layouts and string
styles as the reference writes them (the expected texts were captured from codex 0.171)."""

from __future__ import annotations

import datetime
import tomllib

import pytest

from execserver.local.toml_writer import dumps, format_float, format_key, format_string


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("it's", '"it\'s"'),
        ("it's\\x", "'''it's\\x'''"),
        ("a'''b\\", "\"a'''b\\\\\""),
        ("end'\\", "'''end'\\'''"),
        ('x"y', "'x\"y'"),
        ('a\nb"', '"""\na\nb""""'),
        ('a\n"""b', "'''\na\n\"\"\"b'''"),
        ("\x7f\x1b\b\f\r", '"\\u007F\\u001B\\b\\f\\r"'),
        ("tab\tonly", '"tab\\tonly"'),
        ("back\\slash\nnl", "'''\nback\\slash\nnl'''"),
        ("", '""'),
        ("a\n", '"""\na\n"""'),
        ("it''s\\", "'''it''s\\'''"),
        ('q"\\', "'q\"\\'"),
        ("héllo ✓", '"héllo ✓"'),
    ],
)
def test_string_styles_match_the_reference(value: str, expected: str) -> None:
    """Basic strings unless a literal one avoids escapes; multi-line strings start on a new
    line; the text always parses back to the value."""
    assert format_string(value) == expected
    assert tomllib.loads(f"v = {expected}")["v"] == value


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("plain_key-1", "plain_key-1"),
        ("quoted key", '"quoted key"'),
        ("a.b", '"a.b"'),
        ("k\\ey", "'k\\ey'"),
        ("k'ey", '"k\'ey"'),
        ('k"ey', "'k\"ey'"),
        ("", '""'),
        ("ü", '"ü"'),
        ("k\ney", '"k\\ney"'),
    ],
)
def test_keys_are_bare_or_quoted_on_one_line(key: str, expected: str) -> None:
    """Keys are bare when TOML allows it, else a one-line quoted string."""
    assert format_key(key) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1e-7, "0.0000001"),
        (1e10, "10000000000.0"),
        (3.0, "3.0"),
        (-0.0, "-0.0"),
        (float("nan"), "nan"),
        (float("-inf"), "-inf"),
        (0.1, "0.1"),
        (123456789.123, "123456789.123"),
        (5e-324, "0." + "0" * 323 + "5"),
    ],
)
def test_floats_are_written_like_rust_display(value: float, expected: str) -> None:
    """Plain decimal notation (no exponent), shortest round trip, `.0` when integral."""
    assert format_float(value) == expected


def test_document_layout_matches_the_reference() -> None:
    """Plain values first, then tables and arrays of tables in document order; headers only
    where needed; inline tables become sub-tables, arrays of tables `[[...]]`."""
    source = """\
num = 42
arr_inline = [{a = 1}, {b = "x"}]
mixed = [1, {a = 1}]
dotted.key = "v"
inline = { x = 1, y = { z = 2 } }
"a.b" = "dot in key"
date = 1979-05-27T07:32:00.5+01:30
ldate = 1979-05-27
ltime = 07:32:00.120

[mcp_servers.foo]
command = "echo"
env = { A = "1" }

[[arrtab]]
name = "two"
sub = { k = 1 }

[empty]

[t2]
arr = [{ a = [{ b = 1 }] }]
"""
    expected = """\
num = 42
mixed = [1, { a = 1 }]
"a.b" = "dot in key"
date = 1979-05-27T07:32:00.5+01:30
ldate = 1979-05-27
ltime = 07:32:00.12

[[arr_inline]]
a = 1

[[arr_inline]]
b = "x"

[dotted]
key = "v"

[inline]
x = 1

[inline.y]
z = 2

[mcp_servers.foo]
command = "echo"

[mcp_servers.foo.env]
A = "1"

[[arrtab]]
name = "two"

[arrtab.sub]
k = 1

[empty]

[[t2.arr]]

[[t2.arr.a]]
b = 1
"""
    document = tomllib.loads(source)
    assert dumps(document) == expected
    assert tomllib.loads(dumps(document)) == document


def test_zero_offset_is_written_as_z() -> None:
    """tomllib cannot tell `Z` from `+00:00`; both are written `Z` (the reference keeps
    `+00:00` as written: a known, documented difference)."""
    value = datetime.datetime(1979, 5, 27, 7, 32, tzinfo=datetime.UTC)
    assert dumps({"d": value}) == "d = 1979-05-27T07:32:00Z\n"


def test_empty_tables() -> None:
    """An empty table still gets its header; a document of nothing is empty."""
    assert dumps({"model": "gpt-5", "tbl": {}}) == 'model = "gpt-5"\n\n[tbl]\n'
    assert dumps({"mcp_servers": {}}) == "[mcp_servers]\n"
    assert dumps({}) == ""
