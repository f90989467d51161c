"""The `uuid` crate's parse errors, as the reference reports them for `metadata.threadId`
(every row was answered so by codex exec-server 0.171.0)."""

from __future__ import annotations

import pytest

from execserver.compat.uuid_text import uuid_error

U = "01a24b6f-5086-7bf3-a8f5-429081499670"
CHAR = "invalid character: expected an optional prefix of `urn:uuid:` followed by [0-9a-fA-F-], "


@pytest.mark.parametrize("text", [U, U.upper(), U.replace("-", ""), f"urn:uuid:{U}", f"{{{U}}}"])
def test_accepted_forms(text: str) -> None:
    assert uuid_error(text) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("t1", CHAR + "found `t` at 1"),
        ("", "invalid length: expected length 32 for simple format, found 0"),
        (U[:-1], "invalid group length in group 4: expected 12, found 11"),
        (U + "0", "invalid group length in group 4: expected 12, found 13"),
        (U[:-1] + "g", CHAR + "found `g` at 36"),
        (U[:23] + "_" + U[24:], CHAR + "found `_` at 24"),
        (U[:9] + U[10:13] + "-" + U[14:], "invalid group length in group 1: expected 4, found 3"),
        (U[:8] + "5" + U[8:], "invalid group length in group 0: expected 8, found 9"),
        (U + "-", "invalid group count: expected 5, found 6"),
        ("\u00e9", CHAR + "found `\u00e9` at 1"),
        (f"{{{U}0}}", "invalid group length in group 4: expected 12, found 15"),
        (f"{{{U[:-1]}}}", "invalid group length in group 4: expected 12, found 13"),
        (f"urn:uuid:{U[:-1]}g", CHAR + "found `g` at 36"),
        (f"{{{U[:-1]}g}}", CHAR + "found `g` at 36"),
        ("{" + U, CHAR + "found `{` at 1"),
        ("urn:uuid:", "invalid group count: expected 5, found 1"),
        ("-" * 36, "invalid group count: expected 5, found 37"),
        ("0" * 31, "invalid length: expected length 32 for simple format, found 31"),
    ],
)
def test_errors(text: str, message: str) -> None:
    assert uuid_error(text) == message
