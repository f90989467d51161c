"""compat/serde and compat/rust: serde's wording over both deserializers we emulate.

`POSITIONAL_CASES` were captured from codex exec-server 0.169.0 (`-32602` messages for params in
their positional, array form): serde reads a struct's elements in order, so a wrong element is
reported before a short array, and only then are extra elements refused.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec
import pytest

from execserver.compat import serde
from execserver.compat.rust import display_f64, rust_trim
from execserver.protocol.http import HttpRequestParams
from execserver.protocol.params import ParamsError, decode_params
from execserver.protocol.process import ProcessReadParams, ProcessTerminateParams
from execserver.protocol.session import InitializeParams

POSITIONAL_CASES: list[tuple[type, Any, str]] = [
    (ProcessReadParams, [5], "invalid type: number, expected a string"),
    (ProcessReadParams, ["x", True], "invalid type: boolean `true`, expected u64"),
    (ProcessReadParams, ["x", 1, "s"], 'invalid type: string "s", expected usize'),
    (ProcessReadParams, ["x", 1, 2, 3, 4], "invalid length 5, expected fewer elements in array"),
    (ProcessReadParams, [5, 1, 2, 3, 4], "invalid type: number, expected a string"),
    (ProcessTerminateParams, [5, 6], "invalid type: number, expected a string"),
    (ProcessTerminateParams, ["x", 6], "invalid length 2, expected fewer elements in array"),
    (
        ProcessTerminateParams,
        [],
        "invalid length 0, expected struct TerminateParams with 1 element",
    ),
    (InitializeParams, [5], "invalid type: number, expected a string"),
    (InitializeParams, ["c", None, 5], "invalid length 3, expected fewer elements in array"),
]

_REQUEST = {"method": "GET", "url": "http://127.0.0.1:1/", "requestId": "r"}
HEADER_CASES: list[tuple[Any, str]] = [
    ([["a"]], "invalid length 1, expected struct HttpHeader with 3 elements"),
    ([[1, "b"]], "invalid type: number, expected a string"),
    ([["a", "b", None, 5]], "invalid length 4, expected fewer elements in array"),
    ([["a", 5]], "invalid type: number, expected a string"),
]


@pytest.mark.parametrize(("params_type", "params", "message"), POSITIONAL_CASES)
def test_serde_positional_params_match_reference(
    params_type: type, params: Any, message: str
) -> None:
    """Array-form params: elements in order, then the length, as the reference words them."""
    with pytest.raises(ParamsError) as info:
        decode_params(params, params_type)
    assert str(info.value) == message


@pytest.mark.parametrize(("headers", "message"), HEADER_CASES)
def test_serde_positional_headers_match_reference(headers: Any, message: str) -> None:
    """A header's `valueEnvVar` has `#[serde(default)]`: the array form may omit it only."""
    with pytest.raises(ParamsError) as info:
        decode_params({**_REQUEST, "headers": headers}, HttpRequestParams)
    assert str(info.value) == message


def test_serde_positional_default_member_may_be_omitted() -> None:
    """`[name, value]` is a whole header (the defaulted member is left out)."""
    params = decode_params({**_REQUEST, "headers": [["a", "b"]]}, HttpRequestParams)
    assert [(h.name, h.value, h.value_env_var) for h in params.headers] == [("a", "b", None)]


# --- the TOML format ------------------------------------------------------------------------


class Inner(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    rust_defaults: ClassVar[frozenset[str]] = frozenset({"tags"})

    tags: list[str] = msgspec.field(default_factory=list)


class Outer(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    rust_name: ClassVar[str] = "OuterToml"
    rust_defaults: ClassVar[frozenset[str]] = frozenset({"inner"})

    name: str
    inner: Inner | None = None
    size: str | None = None
    env: dict[str, str] | None = None


TOML_CASES: list[tuple[Any, str, tuple[str, ...]]] = [
    ({"name": 1}, "invalid type: integer `1`, expected a string", ("name",)),
    ({"name": 1.0}, "invalid type: floating point `1.0`, expected a string", ("name",)),
    (
        {"name": 1e300},
        "invalid type: floating point `1" + "0" * 300 + ".0`, expected a string",
        ("name",),
    ),
    (
        {"name": "a", "zz": 1},
        "unknown field `zz`, expected one of `name`, `inner`, `size`, `env`",
        (),
    ),
    (
        {"zz": 1, "name": 2},
        "unknown field `zz`, expected one of `name`, `inner`, `size`, `env`",
        (),
    ),
    ({"size": "s"}, "missing field `name`", ()),
    ({"name": "a", "inner": {"x": 1}}, "unknown field `x`, expected `tags`", ("inner",)),
    (
        {"name": "a", "inner": {"tags": [1]}},
        "invalid type: integer `1`, expected a string",
        ("inner", "tags"),
    ),
    (
        {"name": "a", "env": {"a.b": True}},
        "invalid type: boolean `true`, expected a string",
        ("env", "a.b"),
    ),
    ({"name": "a", "env": []}, "invalid type: sequence, expected a map", ("env",)),
    # The array form: elements in order, defaulted members may be missing, extra ones ignored.
    ({"name": ["a"]}, "invalid type: sequence, expected a string", ("name",)),
    ([1], "invalid type: integer `1`, expected a string", ()),
    (["a"], "invalid length 2, expected struct OuterToml with 4 elements", ()),
    (["a", [["t"]], "s"], "invalid length 3, expected struct OuterToml with 4 elements", ()),
    (["a", {"q": 1}], "unknown field `q`, expected `tags`", ()),
]


@pytest.mark.parametrize(("value", "message", "path"), TOML_CASES)
def test_serde_toml_format_words_errors_like_the_toml_crate(
    value: Any, message: str, path: tuple[str, ...]
) -> None:
    """Values named as the toml crate presents them; the path holds map keys only."""
    error = serde.explain(value, Outer, serde.TOML)
    assert error is not None
    assert (error.message, error.path) == (message, path)
    with pytest.raises(serde.SerdeError) as info:
        serde.from_value(value, Outer, serde.TOML)
    assert (str(info.value), info.value.path) == (message, path)


def test_serde_toml_format_reads_array_forms_and_ignores_extra_elements() -> None:
    """serde builds structs from arrays anywhere; the toml crate leaves extra elements unread."""
    value = ["a", [["x"], 1], "s", {"K": "v"}, "extra"]
    assert serde.from_value(value, Outer, serde.TOML) == Outer(
        name="a", inner=Inner(tags=["x"]), size="s", env={"K": "v"}
    )


def test_serde_json_format_refuses_extra_elements() -> None:
    """serde_json's `Value` refuses elements past a struct's fields."""
    error = serde.explain(["a", None, "s", None, "extra"], Outer, serde.JSON_VALUE)
    assert error is not None
    assert error.message == "invalid length 5, expected fewer elements in array"


def test_serde_unknown_field_and_variant_wording() -> None:
    """One, two and more expected names; none at all."""
    assert serde.unknown_field("x", ["a"]) == "unknown field `x`, expected `a`"
    assert serde.unknown_field("x", ["a", "b"]) == "unknown field `x`, expected `a` or `b`"
    assert serde.unknown_field("x", ["a", "b", "c"]) == (
        "unknown field `x`, expected one of `a`, `b`, `c`"
    )
    assert serde.unknown_field("x", []) == "unknown field `x`, there are no fields"
    assert serde.unknown_variant("x", ()) == "unknown variant `x`, there are no variants"
    assert serde.unknown_variant("x", ("a", "b")) == "unknown variant `x`, expected `a` or `b`"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.5, "1.5"),
        (2.0, "2"),
        (1e30, "1000000000000000000000000000000"),
        (1e-7, "0.0000001"),
        (123456789012345680000.0, "123456789012345680000"),
        (-0.0, "-0"),
        (float("nan"), "NaN"),
        (float("-inf"), "-inf"),
    ],
)
def test_rust_display_f64(value: float, text: str) -> None:
    """Rust's f64 Display: shortest round-trip digits, never an exponent."""
    assert display_f64(value) == text


def test_rust_trim_keeps_what_rust_keeps() -> None:
    """str::trim strips Unicode White_Space, not the C0 separators Python's strip() takes."""
    assert rust_trim("\u3000\t x \u2028") == "x"
    assert rust_trim("\x1cx\x1f") == "\x1cx\x1f"
