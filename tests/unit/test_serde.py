"""Params decoding and serde-worded errors (messages captured from codex exec-server 0.169.0)."""

from __future__ import annotations

from typing import Any

import pytest

from execserver.compat.rust import rust_debug_str
from execserver.protocol.params import ParamsError, decode_params, decode_unit
from execserver.protocol.process import (
    ProcessReadParams,
    ProcessSignalParams,
    ProcessStartParams,
    ProcessTerminateParams,
    ProcessWriteParams,
)
from execserver.protocol.session import InitializeParams

READ_CASES: list[tuple[Any, str]] = [
    ({"processId": True}, "invalid type: boolean `true`, expected a string"),
    ({"processId": [1]}, "invalid type: sequence, expected a string"),
    ({"processId": {"a": 1}}, "invalid type: map, expected a string"),
    ({"processId": 1.5}, "invalid type: number, expected a string"),
    ({"processId": -3}, "invalid type: number, expected a string"),
    ({"processId": "x", "afterSeq": "s"}, 'invalid type: string "s", expected u64'),
    ({"processId": "x", "afterSeq": -1}, "invalid number"),
    ({"processId": "x", "afterSeq": 1.5}, "invalid number"),
    ({"processId": "x", "afterSeq": True}, "invalid type: boolean `true`, expected u64"),
    ({"processId": "x", "afterSeq": 18446744073709551616}, "invalid number"),
    ({"processId": "x", "waitMs": []}, "invalid type: sequence, expected u64"),
    ({"processId": "x", "maxBytes": {}}, "invalid type: map, expected usize"),
    ({"afterSeq": "s"}, 'invalid type: string "s", expected u64'),
    ({"afterSeq": 1}, "missing field `processId`"),
    ({"processId": None}, "invalid type: null, expected a string"),
    ("str", 'invalid type: string "str", expected struct ReadParams'),
    (5, "invalid type: number, expected struct ReadParams"),
    ([], "invalid length 0, expected struct ReadParams with 4 elements"),
    (["x"], "invalid length 1, expected struct ReadParams with 4 elements"),
    (["x", 1, 2, 3, 4], "invalid length 5, expected fewer elements in array"),
    (None, "invalid type: null, expected struct ReadParams"),
]


@pytest.mark.parametrize(("params", "message"), READ_CASES)
def test_serde_read_params_errors(params: Any, message: str) -> None:
    """process/read params errors read exactly like the reference's."""
    with pytest.raises(ParamsError) as info:
        decode_params(params, ProcessReadParams)
    assert str(info.value) == message


OTHER_CASES: list[tuple[type, Any, str]] = [
    (InitializeParams, {}, "missing field `clientName`"),
    (InitializeParams, None, "invalid type: null, expected struct InitializeParams"),
    (InitializeParams, [], "invalid length 0, expected struct InitializeParams with 2 elements"),
    (
        ProcessTerminateParams,
        [],
        "invalid length 0, expected struct TerminateParams with 1 element",
    ),
    (
        ProcessSignalParams,
        {"processId": "x", "signal": "kill"},
        "unknown variant `kill`, expected `interrupt`",
    ),
    (ProcessWriteParams, {"processId": "x", "chunk": "QQ", "writeId": "w"}, "Invalid padding"),
    (ProcessWriteParams, {"processId": "x", "chunk": "QQ=="}, "missing field `writeId`"),
    (
        ProcessStartParams,
        {"processId": "p", "argv": ["true"], "cwd": "file:///tmp", "env": {"A": 5}, "tty": False},
        "invalid type: number, expected a string",
    ),
    (
        ProcessStartParams,
        {
            "processId": "p",
            "argv": ["true"],
            "cwd": "file:///tmp",
            "env": {},
            "tty": False,
            "envPolicy": {
                "inherit": "x",
                "ignoreDefaultExcludes": False,
                "exclude": [],
                "set": {},
                "includeOnly": [],
            },
        },
        "unknown variant `x`, expected one of `core`, `all`, `none`",
    ),
    (
        ProcessStartParams,
        {
            "processId": "p",
            "argv": ["true"],
            "cwd": "file:///tmp",
            "env": {},
            "tty": False,
            "envPolicy": "x",
        },
        'invalid type: string "x", expected struct ExecEnvPolicy',
    ),
    (
        ProcessStartParams,
        {"argv": ["true"], "cwd": "/tmp"},
        "invalid URI: relative URL without a base",
    ),
]


@pytest.mark.parametrize(("params_type", "params", "message"), OTHER_CASES)
def test_serde_other_params_errors(params_type: type, params: Any, message: str) -> None:
    """Errors of nested structs, enums, base64 fields and URIs are worded like serde's."""
    with pytest.raises(ParamsError) as info:
        decode_params(params, params_type)
    assert str(info.value) == message


def test_serde_decodes_valid_params() -> None:
    """Valid params decode to the struct, unknown members ignored, arrays positional."""
    params = decode_params({"processId": "p", "afterSeq": 3, "unknown": [1]}, ProcessReadParams)
    assert params == ProcessReadParams(process_id="p", after_seq=3)
    assert decode_params(["p", 1, None, 5], ProcessReadParams) == ProcessReadParams(
        process_id="p", after_seq=1, max_bytes=None, wait_ms=5
    )
    write = decode_params({"processId": "x", "chunk": "aGk=", "writeId": "w"}, ProcessWriteParams)
    assert bytes(write.chunk) == b"hi"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"a": 1}, "invalid type: map, expected unit"),
        ([], "invalid type: sequence, expected unit"),
        ("s", 'invalid type: string "s", expected unit'),
        (5, "invalid type: number, expected unit"),
    ],
)
def test_serde_unit_params(params: Any, message: str) -> None:
    """Unit params accept absent/null/{} and reject everything else."""
    decode_unit(None)
    decode_unit({})
    with pytest.raises(ParamsError) as info:
        decode_unit(params)
    assert str(info.value) == message


def test_serde_rust_debug_quoting() -> None:
    """Strings in messages are quoted like Rust's {:?}."""
    assert rust_debug_str('a"b\\c\n\t\r\0') == '"a\\"b\\\\c\\n\\t\\r\\0"'
    assert rust_debug_str("é\x01\u200b") == '"é\\u{1}\\u{200b}"'
