"""The Rust `uuid` crate's text parsing, for the errors the reference reports when a UUID member
of its params does not parse (`metadata.threadId` of `process/start`). Pure, stdlib only.

Accepted forms: 32 hex digits; or the hyphenated 8-4-4-4-12 form, bare, in braces, or after
`urn:uuid:`; hex digits in either case. The messages below were taken from the reference's
answers: a character position is 1-based and counts from after the braces or the `urn:uuid:`
prefix; the length of a too long or too short last group is counted in the whole input.
"""

from __future__ import annotations

__all__ = ["uuid_error"]

_HEX = frozenset("0123456789abcdefABCDEF")
_GROUPS = (8, 4, 4, 4, 12)
_URN = "urn:uuid:"


def _hyphenated(text: str) -> bool:
    parts = text.split("-")
    return [len(p) for p in parts] == list(_GROUPS) and all(set(p) <= _HEX for p in parts)


def _parses(text: str) -> bool:
    if len(text) == 32:
        return set(text) <= _HEX
    if len(text) == 36:
        return _hyphenated(text)
    if len(text) == 38 and text.startswith("{") and text.endswith("}"):
        return _hyphenated(text[1:-1])
    if len(text) == 45 and text.startswith(_URN):
        return _hyphenated(text[len(_URN) :])
    return False


def uuid_error(text: str) -> str | None:
    """None if `text` is a UUID, else the crate's message saying what is wrong with it."""
    if _parses(text):
        return None
    body, simple = text, True
    if len(text) >= 2 and text.startswith("{") and text.endswith("}"):
        body, simple = text[1:-1], False
    elif text.startswith(_URN):
        body, simple = text[len(_URN) :], False
    hyphens: list[int] = []
    for index, char in enumerate(body):
        if char == "-":
            hyphens.append(index)
        elif char not in _HEX:
            return (
                "invalid character: expected an optional prefix of `urn:uuid:` followed by "
                f"[0-9a-fA-F-], found `{char}` at {index + 1}"
            )
    if not hyphens and simple:
        return f"invalid length: expected length 32 for simple format, found {len(text)}"
    if len(hyphens) != 4:
        return f"invalid group count: expected 5, found {len(hyphens) + 1}"
    start = 0
    for group, hyphen in enumerate(hyphens):
        if hyphen - start != _GROUPS[group]:
            return (
                f"invalid group length in group {group}: expected {_GROUPS[group]}, "
                f"found {hyphen - start}"
            )
        start = hyphen + 1
    # The first four groups fit: the last one is too long or too short.
    return f"invalid group length in group 4: expected 12, found {len(text) - 24}"
