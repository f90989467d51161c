"""Tests for execserver.protocol.json_syntax against details captured from codex 0.169.0.

tests/data/json_syntax_cases.json holds inputs and the `<serde detail>` the reference sent back
for them (text after "...exec-server websocket 127.0.0.1:PORT: "). Details with a position are
syntax errors this module must reproduce exactly; `trailing characters` comes from
check_trailing; any other detail (`expected a JSON-RPC object`, `missing field ...`) means the
reference parsed the first value and failed later, so scan_value must accept it.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from execserver.compat.json_syntax import (
    MAX_DEPTH,
    MAX_JSON_VALUES,
    JsonSyntaxError,
    check_trailing,
    scan_value,
)
from execserver.protocol import jsonrpc
from execserver.protocol.jsonrpc import EnvelopeError, decode_message

CORPUS_PATH = Path(__file__).resolve().parents[1] / "data" / "json_syntax_cases.json"
_POSITIONED = re.compile(r" at line \d+ column \d+$")


def _load_corpus() -> list[dict[str, str]]:
    cases: list[dict[str, str]] = json.loads(CORPUS_PATH.read_text(encoding="utf-8"))
    return cases


CORPUS = _load_corpus()


def outcome(data: bytes, max_values: int = MAX_JSON_VALUES) -> str | None:
    """The syntax detail the reference would send (scan, then the trailing check), or None when
    the bytes are exactly one JSON value plus whitespace."""
    try:
        end = scan_value(data, max_values=max_values)
    except JsonSyntaxError as exc:
        return exc.message
    try:
        check_trailing(data, end)
    except JsonSyntaxError as exc:
        return exc.message
    return None


# -- the captured corpus ----------------------------------------------------------------------


def test_corpus_is_large_and_well_formed() -> None:
    assert len(CORPUS) >= 80
    seen: set[tuple[str, str]] = set()
    for case in CORPUS:
        assert set(case) == {"input_b64", "detail", "frame"}
        assert case["frame"] in ("text", "binary")
        raw = base64.b64decode(case["input_b64"], validate=True)
        if case["frame"] == "text":
            raw.decode("utf-8")  # the websocket layer would refuse the frame otherwise
        key = (case["input_b64"], case["frame"])
        assert key not in seen
        seen.add(key)


@pytest.mark.parametrize(
    "case", CORPUS, ids=[f"{i:03d}-{c['detail'][:40]}" for i, c in enumerate(CORPUS)]
)
def test_reference_corpus(case: dict[str, str]) -> None:
    data = base64.b64decode(case["input_b64"])
    detail = case["detail"]
    if detail.startswith("trailing characters"):
        end = scan_value(data)
        with pytest.raises(JsonSyntaxError) as info:
            check_trailing(data, end)
        assert info.value.message == detail
    elif _POSITIONED.search(detail):
        with pytest.raises(JsonSyntaxError) as info:
            scan_value(data)
        assert info.value.message == detail
        assert str(info.value) == detail
    else:
        # The reference got past the syntax stage; classification failed afterwards.
        end = scan_value(data)
        assert 0 < end <= len(data)


# -- behaviours worth naming (all observed on the reference) -----------------------------------

NAMED: list[tuple[str, bytes, str | None]] = [
    ("empty frame", b"", "EOF while parsing a value at line 1 column 0"),
    ("whitespace only", b" \t\r ", "EOF while parsing a value at line 1 column 4"),
    ("newlines only", b"\n\n\n", "EOF while parsing a value at line 4 column 0"),
    ("utf-8 BOM is not whitespace", b"\xef\xbb\xbf{}", "expected value at line 1 column 1"),
    ("\\u0000 escape is fine", b'["\\u0000"]', None),
    (
        "unpaired low surrogate",
        b'["\\udc00"]',
        "lone leading surrogate in hex escape at line 1 column 8",
    ),
    ("unpaired high surrogate", b'["\\ud800"]', "unexpected end of hex escape at line 1 column 9"),
    ("1e400 is accepted", b"[1e400]", None),
    ("-0 is accepted", b"[-0]", None),
    ("long number is accepted", b"[" + b"9" * 5000 + b"]", None),
    ("[1,]", b"[1,]", "trailing comma at line 1 column 4"),
    ("{,}", b"{,}", "key must be a string at line 1 column 2"),
    ('{"a":1,}', b'{"a":1,}', "trailing comma at line 1 column 8"),
    (
        "nested duplicate",
        b'{"a":[{"b":1,"b":2}]}',
        "duplicate JSON object key `b` at line 1 column 16",
    ),
    ("same key in sibling objects", b'{"a":{"b":1},"b":{"b":1}}', None),
    (
        "duplicate via escape",
        b'{"a":1,"\\u0061":2}',
        "duplicate JSON object key `a` at line 1 column 15",
    ),
    (
        "duplicate key shown raw",
        b'{"a\\nb":1,"a\\nb":2}',
        "duplicate JSON object key `a\nb` at line 1 column 16",
    ),
    (
        "duplicate before `}` eats it",
        b'{"a":1,"a"}',
        "duplicate JSON object key `a` at line 1 column 11",
    ),
    (
        "duplicate skips whitespace",
        b'{"a":1,"a"\n\n  }',
        "duplicate JSON object key `a` at line 3 column 3",
    ),
    ("\\r is not a line break", b"\r\n\r\n [x", "expected value at line 3 column 3"),
    ("tab is one column", b"\t\tx", "expected value at line 1 column 3"),
    ("columns count bytes (2-byte char)", '["é", x]'.encode(), "expected value at line 1 column 8"),
    (
        "columns count bytes (3-byte chars)",
        '["日本", x]'.encode(),
        "expected value at line 1 column 12",
    ),
    ("invalid utf-8 in a string", b'["\xff"]', "invalid unicode code point at line 1 column 4"),
    (
        "invalid utf-8 judged at the closing quote",
        b'["\xc3\\n\xa9"]',
        "invalid unicode code point at line 1 column 7",
    ),
    ("escape errors win over utf-8", b'["\xff\\x"]', "invalid escape at line 1 column 5"),
    ("hex escape judged after 4 bytes", b'["\\u12"]', "invalid escape at line 1 column 8"),
    ("127 nested is fine", b"[" * 127 + b"]" * 127, None),
    ("128th bracket", b"[" * 128, "recursion limit exceeded at line 1 column 128"),
    ("128th bracket after spaces", b" [" * 130, "recursion limit exceeded at line 1 column 256"),
    ("tru", b"tru", "EOF while parsing a value at line 1 column 3"),
    ("nulL", b"nulL", "expected ident at line 1 column 4"),
    ("01", b"[01]", "invalid number at line 1 column 3"),
    ("1.", b"[1.]", "invalid number at line 1 column 4"),
    (".5", b"[.5]", "expected value at line 1 column 2"),
    ("1e", b"[1e]", "invalid number at line 1 column 4"),
    ("+1", b"[+1]", "expected value at line 1 column 2"),
    ("-", b"-", "EOF while parsing a value at line 1 column 1"),
    ("trailing characters", b'{"id":1} x', "trailing characters at line 1 column 10"),
    ("trailing whitespace is fine", b"{} \t\r\n", None),
]


@pytest.mark.parametrize(("data", "detail"), [c[1:] for c in NAMED], ids=[c[0] for c in NAMED])
def test_named_behaviour(data: bytes, detail: str | None) -> None:
    assert outcome(data) == detail


def test_error_carries_line_and_column() -> None:
    with pytest.raises(JsonSyntaxError) as info:
        scan_value(b'{\n  "a": x}')
    assert (info.value.line, info.value.column) == (2, 8)
    assert isinstance(info.value, ValueError)


def test_max_depth_documents_serde_budget() -> None:
    assert MAX_DEPTH == 128
    deepest = b'{"a":' * (MAX_DEPTH - 2) + b"[]" + b"}" * (MAX_DEPTH - 2)
    assert outcome(deepest) is None
    assert outcome(b'{"a":' * (MAX_DEPTH - 1) + b"[]") == (
        f"recursion limit exceeded at line 1 column {5 * (MAX_DEPTH - 1) + 1}"
    )


def test_end_index_excludes_trailing_content() -> None:
    data = b'  {"a": [1, 2]}  \n x'
    assert scan_value(data) == data.index(b"}") + 1
    assert scan_value(b"123 456") == 3
    assert scan_value(b"0x") == 1  # the number stops; what follows is check_trailing's business


# -- the value-count limit (generated; expectations captured from the reference) ------------------

N = MAX_JSON_VALUES
L = f"JSON-RPC message exceeds the limit of {N} JSON values"


def _ones(k: int) -> str:
    return ",".join(["1"] * k)


def _array(total_values: int, last: str = "1") -> str:
    return "[" + ",".join(["1"] * (total_values - 2) + [last]) + "]"


LIMIT_CASES: list[tuple[str, Callable[[], str], str | None]] = [
    ("exactly the limit", lambda: _array(N), None),
    ("one over", lambda: _array(N + 1), f"{L} at line 1 column 524287"),
    ("one over, string", lambda: _array(N + 1, '"abcdef"'), f"{L} at line 1 column 524287"),
    ("one over, array", lambda: _array(N + 1, "[7,8]"), f"{L} at line 1 column 524287"),
    ("one over, object", lambda: _array(N + 1, '{"k":5}'), f"{L} at line 1 column 524287"),
    ("one over, long number", lambda: _array(N + 1, "12345"), f"{L} at line 1 column 524287"),
    ("before whitespace", lambda: "[" + _ones(N - 1) + ",   1]", f"{L} at line 1 column 524290"),
    ("offender is a comma", lambda: "[" + _ones(N - 1) + ",,]", f"{L} at line 1 column 524288"),
    (
        "offender is a comma, spaces",
        lambda: "[" + _ones(N - 1) + ", , 5]",
        f"{L} at line 1 column 524290",
    ),
    ("offender is garbage", lambda: "[" + _ones(N - 1) + ",x]", f"{L} at line 1 column 524287"),
    (
        "string error after the limit",
        lambda: "[" + _ones(N - 1) + ',"\\x"]',
        f"{L} at line 1 column 524287",
    ),
    (
        "map value after spaces",
        lambda: "[" + _ones(N - 2) + ',{"k":   5}]',
        f"{L} at line 1 column 524293",
    ),
    (
        "map value is a `}`",
        lambda: "[" + _ones(N - 2) + ',{"k":  }]',
        f"{L} at line 1 column 524293",
    ),
    ("map value is EOF", lambda: "[" + _ones(N - 2) + ',{"k":  ', f"{L} at line 1 column 524292"),
    (
        "map value is a `]`",
        lambda: "[" + _ones(N - 2) + ',{"k":]}]',
        f"{L} at line 1 column 524290",
    ),
    (
        "map value across lines",
        lambda: "[" + _ones(N - 2) + ',{"k":\n\n  ,}]',
        f"{L} at line 3 column 2",
    ),
    (
        "second member",
        lambda: "[" + _ones(N - 3) + ',{"k":1,"j":2}]',
        f"{L} at line 1 column 524294",
    ),
    ("first member", lambda: "[" + _ones(N - 2) + ',{"k" : 1}]', f"{L} at line 1 column 524292"),
    (
        "first member, no value",
        lambda: "[" + _ones(N - 2) + ',{"k" :}]',
        f"{L} at line 1 column 524292",
    ),
    ("first element", lambda: "[" + _ones(N - 2) + ",[1]]", f"{L} at line 1 column 524286"),
    (
        "first element on next line",
        lambda: "[" + _ones(N - 2) + ",[  \n 1]]",
        f"{L} at line 2 column 1",
    ),
    (
        "first element is a comma",
        lambda: "[" + _ones(N - 2) + ",[  ,]]",
        f"{L} at line 1 column 524289",
    ),
    ("nested, exactly the limit", lambda: "[" + _ones(N - 3) + ",[[]]]", None),
    ("nested, one over", lambda: "[" + _ones(N - 2) + ",[[]]]", f"{L} at line 1 column 524286"),
    (
        "limit before depth",
        lambda: "[" + _ones(N - 1) + "," + "[" * 200,
        f"{L} at line 1 column 524287",
    ),
    (
        "duplicate key before limit",
        lambda: "[" + _ones(N - 3) + ',{"k":1,"k":2}]',
        "duplicate JSON object key `k` at line 1 column 524293",
    ),
    (
        "escaped key",
        lambda: "[" + _ones(N - 3) + ',{"k":1,"\\u006b2":2}]',
        f"{L} at line 1 column 524300",
    ),
    (
        "trailing comma is found first",
        lambda: "[" + _ones(N - 1) + ",]",
        "trailing comma at line 1 column 524288",
    ),
    (
        "EOF is found first",
        lambda: "[" + _ones(N - 1) + ",",
        "EOF while parsing a value at line 1 column 524287",
    ),
    ("one over, unterminated", lambda: "[" + _ones(N), f"{L} at line 1 column 524287"),
    (
        "multi-line",
        lambda: "[\n" + ",\n".join(["1"] * (N - 1)) + ",\n  1]",
        f"{L} at line 262145 column 2",
    ),
    ("keys do not count", lambda: "{" + ",".join(f'"k{i}":1' for i in range(N - 1)) + "}", None),
    (
        "object one over",
        lambda: "{" + ",".join(f'"k{i}":1' for i in range(N)) + "}",
        f"{L} at line 1 column 3034617",
    ),
    (
        "limit before late duplicate",
        lambda: "{" + ",".join(f'"k{i}":1' for i in range(N)) + ',"k0":1}',
        f"{L} at line 1 column 3034617",
    ),
]


@pytest.mark.parametrize(
    ("build", "detail"), [c[1:] for c in LIMIT_CASES], ids=[c[0] for c in LIMIT_CASES]
)
def test_value_limit_matches_reference(build: Callable[[], str], detail: str | None) -> None:
    data = build().encode()
    if detail is None:
        scan_value(data)  # the reference's complaint was about the message shape, not syntax
    else:
        assert outcome(data) == detail


@pytest.mark.parametrize(
    ("data", "limit", "detail"),
    [
        (b"[1,2]", 3, None),
        (b"[1,2,3]", 3, "JSON-RPC message exceeds the limit of 3 JSON values at line 1 column 5"),
        (
            b'{"a":{"b":1}}',
            2,
            "JSON-RPC message exceeds the limit of 2 JSON values at line 1 column 10",
        ),
        (b'{"a":{}}', 2, None),
        (b"[[]]", 1, "JSON-RPC message exceeds the limit of 1 JSON values at line 1 column 1"),
        (b"7", 1, None),
    ],
)
def test_custom_value_limit(data: bytes, limit: int, detail: str | None) -> None:
    assert outcome(data, max_values=limit) == detail


def test_limit_must_admit_the_top_level_value() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        scan_value(b"1", max_values=0)


# -- valid JSON: never raises, returns the stdlib's end index --------------------------------------

_TEXT = st.text(st.characters(codec="utf-8"), max_size=12)  # no lone surrogates
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT
)
_JSON_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_TEXT, inner, max_size=5),
    max_leaves=40,
)
_WHITESPACE = st.text(alphabet=" \t\r\n", max_size=4)


_LAYOUTS = st.tuples(
    _WHITESPACE,
    _WHITESPACE,
    st.booleans(),
    st.sampled_from([None, 0, 2, "\t", "\r\n"]),
    st.sampled_from([None, (",", ":"), (" , ", " : "), (",\n", ":\t")]),
)


@settings(max_examples=300, deadline=None)
@given(value=_JSON_VALUES, layout=_LAYOUTS)
def test_valid_json_is_accepted(
    value: Any,
    layout: tuple[str, str, bool, int | str | None, tuple[str, str] | None],
) -> None:
    lead, tail, ensure_ascii, indent, separators = layout
    doc = json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators)
    text = lead + doc + tail
    data = text.encode("utf-8")
    _, stdlib_end = json.JSONDecoder().raw_decode(text, len(lead))
    expected_end = len(text[:stdlib_end].encode("utf-8"))
    assert scan_value(data) == expected_end
    check_trailing(data, expected_end)


_JSONISH = st.lists(
    st.sampled_from(
        [
            b"[",
            b"]",
            b"{",
            b"}",
            b",",
            b":",
            b'"',
            b"\\",
            b"u",
            b"d800",
            b"dc00",
            b"0",
            b"1",
            b"-",
            b"+",
            b".",
            b"e",
            b" ",
            b"\n",
            b"\r",
            b"\t",
            b"true",
            b"nul",
            b"a",
            b"\x00",
            b"\xff",
            b"\xc3\xa9",
            b'"a"',
            b'"a":1',
        ]
    ),
    max_size=16,
).map(b"".join)


@settings(max_examples=500, deadline=None)
@given(data=_JSONISH | st.binary(max_size=24))
def test_never_accepts_what_the_stdlib_rejects(data: bytes) -> None:
    # Soundness: anything accepted here is JSON by the stdlib's (more lenient) standard too, and
    # every failure is a JsonSyntaxError with a position.
    try:
        end = scan_value(data)
        check_trailing(data, end)
    except JsonSyntaxError as exc:
        assert _POSITIONED.search(exc.message) or exc.message.startswith("JSON-RPC message")
        return
    json.loads(data)


# -- large inputs on the error path (speed is measured by bench/, not asserted here) --------


def test_value_limit_on_a_large_array() -> None:
    data = _array(N + 1).encode()
    with pytest.raises(JsonSyntaxError):
        scan_value(data)


def test_early_error_in_huge_message() -> None:
    data = b'{"id":1,"method":"x","params":"\\x' + b"a" * (64 << 20)
    with pytest.raises(JsonSyntaxError, match="invalid escape at line 1 column 33"):
        scan_value(data)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("tail", "detail"),
    [
        (b'\x01"}', "control character (\\u0000-\\u001F) found while parsing a string"),
        (b'\xff"}', "invalid unicode code point"),
        (b'"} x', "trailing characters"),
    ],
)
def test_late_error_in_huge_string(tail: bytes, detail: str) -> None:
    data = b'{"id":1,"method":"x","params":"' + "é".encode() * (32 << 20) + tail
    assert (outcome(data) or "").startswith(detail + " at line 1 column ")


_LONG = base64.b64encode(bytes(range(256)) * 64).decode()


@pytest.mark.parametrize(
    ("template", "rejected"),
    [
        ('{"id":1,"method":"m","params":{"d":"@"}}', False),
        ('{"id":1,"method":"m","params":{"d":"@","d":1}}', True),
        ('{"id":1,"method":"m","params":{"d":"@","e":"@"},"id":2}', True),
        ('{"id":1,"method":"m","params":{"d":"@\\"x","e":1,"e":2}}', True),
        ('{"id":1,"method":"m","params":{"d":"@\\n","d":"@"}}', True),
        ('{"id":1,"method":"m","params":{"d":"x\\"@","d":1}}', True),
        ('{"id":1,"method":"m","params":{"d":"@" ,"d":1}}', True),
    ],
)
def test_duplicate_keys_found_next_to_long_strings(template: str, rejected: bool) -> None:
    """The fast path skips long plain strings when scanning; duplicates are still caught."""
    text = template.replace("@", _LONG).encode()
    if rejected:
        with pytest.raises(EnvelopeError, match="duplicate JSON object key"):
            decode_message(text)
    else:
        assert decode_message(text).method == "m"  # type: ignore[union-attr]


@pytest.mark.parametrize("space", [" ", "\t", "\n", "\r"])
def test_duplicate_key_hidden_by_whitespace_before_its_colon(space: str) -> None:
    """A key spaced from its colon is not in the fast key count, so the count matches the
    decoded keys although one is repeated: the whitespace sends it to the exact scan."""
    text = f'{{"id":1,"method":"m","params":{{"a":1,"a"{space}:2}}}}'.encode()
    with pytest.raises(EnvelopeError, match="duplicate JSON object key `a`"):
        decode_message(text)


_ids = st.one_of(
    st.integers(-(2**64), 2**64),
    st.sampled_from([-(2**63), 2**63 - 1, -(2**63) - 1, 2**63]),
    st.text(max_size=5),
    st.booleans(),
    st.floats(allow_nan=False),
    st.none(),
)


@settings(max_examples=300, deadline=None)
@given(
    request_id=_ids,
    method=st.one_of(st.text(max_size=8), st.integers(), st.none()),
    trace=st.one_of(st.just("absent"), st.none(), st.integers(), st.just({"traceparent": "x"})),
    params=st.one_of(
        st.just("absent"), st.none(), st.dictionaries(st.text(max_size=3), st.integers())
    ),
)
def test_request_fast_path_agrees_with_the_checked_one(
    request_id: Any, method: Any, trace: Any, params: Any
) -> None:
    """A request's members are read at once when they are plainly valid; the result (or the
    error) is the member-by-member check's."""
    obj: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if trace != "absent":
        obj["trace"] = trace
    if params != "absent":
        obj["params"] = params

    def outcome(read: Callable[[dict[str, Any]], Any]) -> Any:
        try:
            return read(obj)
        except EnvelopeError as exc:
            return ("error", str(exc))

    assert outcome(jsonrpc._request) == outcome(jsonrpc._checked_request)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(st.lists(_json_values, max_size=4) | st.dictionaries(st.text(max_size=3), _json_values))
def test_key_count_of_a_short_message_is_the_full_walks(value: list[Any] | dict[str, Any]) -> None:
    """Short messages only count keys; the count is the full walk's."""
    assert jsonrpc._key_count(value) == jsonrpc._stats(value, 1, [])[1]
