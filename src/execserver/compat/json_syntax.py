"""serde_json's syntax errors, byte for byte: its grammar, error texts and positions, plus the
reference's nesting, duplicate-key and value-count limits (PROTOCOL.md §2.1, §2.4). Used on the
error path of inbound JSON-RPC parsing (`protocol.jsonrpc`). Pure, stdlib only.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable
from typing import Final, cast

__all__ = [
    "MAX_DEPTH",
    "MAX_JSON_VALUES",
    "JsonSyntaxError",
    "check_trailing",
    "scan_value",
]

MAX_JSON_VALUES: Final = 262_144
"""More JSON values than this in one message (scalars, arrays and objects; keys excluded)
is rejected."""

MAX_DEPTH: Final = 128
"""serde_json's initial remaining-depth budget. Every `[`/`{` spends one unit and the bracket
that spends the last one is rejected, so at most ``MAX_DEPTH - 1`` (127) containers may be open
at once and the 128th nested opening bracket fails with ``recursion limit exceeded``."""

# serde_json error texts (serde_json::error::ErrorCode's Display).
_EOF_LIST: Final = "EOF while parsing a list"
_EOF_OBJECT: Final = "EOF while parsing an object"
_EOF_STRING: Final = "EOF while parsing a string"
_EOF_VALUE: Final = "EOF while parsing a value"
_EXPECTED_COLON: Final = "expected `:`"
_EXPECTED_LIST_COMMA_OR_END: Final = "expected `,` or `]`"
_EXPECTED_OBJECT_COMMA_OR_END: Final = "expected `,` or `}`"
_EXPECTED_IDENT: Final = "expected ident"
_EXPECTED_VALUE: Final = "expected value"
_INVALID_ESCAPE: Final = "invalid escape"
_INVALID_NUMBER: Final = "invalid number"
_INVALID_CODE_POINT: Final = "invalid unicode code point"
_CONTROL_CHARACTER: Final = "control character (\\u0000-\\u001F) found while parsing a string"
_KEY_MUST_BE_STRING: Final = "key must be a string"
_LONE_LEADING_SURROGATE: Final = "lone leading surrogate in hex escape"
_TRAILING_COMMA: Final = "trailing comma"
_TRAILING_CHARACTERS: Final = "trailing characters"
_UNEXPECTED_END_OF_HEX: Final = "unexpected end of hex escape"
_RECURSION_LIMIT: Final = "recursion limit exceeded"

_WS: Final = re.compile(rb"[ \t\n\r]*")
# The longest run of string body serde_json accepts without comment: plain bytes and escapes that
# decode cleanly (surrogates only as a leading+trailing pair). Possessive, so a long body never
# backtracks. Whatever stops it (quote, EOF, control byte, bad escape) is judged by `_string`.
_STRING_BODY_SRC: Final = (
    rb'(?:[^"\\\x00-\x1f]++|\\["\\/bfnrt]|\\u(?![dD][89a-fA-F])[0-9a-fA-F]{4}'
    rb"|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2})*+"
)
_STRING_BODY: Final = re.compile(_STRING_BODY_SRC)
_DIGITS: Final = re.compile(rb"[0-9]*")
_HEX4: Final = re.compile(rb"[0-9a-fA-F]{4}")

# The lookahead refuses any number that serde_json would keep scanning into an error (leading
# zero, `1.`, `1e`, ...); such input falls back to the exact emulation in `_number`.
# The atomic group keeps a long digit run from being backtracked through one digit at a time.
_NUMBER_SRC: Final = rb"(?>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)(?![.eE0-9])"
_SCALAR_SRC: Final = rb'(?:("' + _STRING_BODY_SRC + rb'")|' + _NUMBER_SRC + rb"|true|false|null)"
_NUMBER: Final = re.compile(_NUMBER_SRC)
# Fast paths for the bulk of large messages: one regex call per plain element or member.
# Anything they do not match is handed to the exact slow path at the same index.
_ARRAY_NEXT: Final = re.compile(rb"[ \t\n\r]*,[ \t\n\r]*" + _SCALAR_SRC)
_OBJECT_NEXT: Final = re.compile(
    rb'[ \t\n\r]*,[ \t\n\r]*"(' + _STRING_BODY_SRC + rb')"[ \t\n\r]*:[ \t\n\r]*' + _SCALAR_SRC
)
_PLAIN_KEY: Final = re.compile(rb'"([^"\\\x00-\x1f]*+)"')

_UTF8_CHUNK: Final = 1 << 20

_Matcher = Callable[[bytes, int], "re.Match[bytes]"]
# These patterns accept the empty string, so match() never returns None; the casts say so once
# instead of at every call site on the hot path.
_ws: Final = cast(_Matcher, _WS.match)
_string_body: Final = cast(_Matcher, _STRING_BODY.match)
_digits: Final = cast(_Matcher, _DIGITS.match)


class JsonSyntaxError(ValueError):
    """A parse failure whose `message` is the reference's `<serde detail>` text."""

    message: str
    line: int | None
    column: int | None

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


def _error_at(data: bytes, reason: str, index: int) -> JsonSyntaxError:
    # serde_json's SliceRead position: lines are counted by '\n' only ('\r' is an ordinary byte)
    # and the column is the number of *bytes* between the line start and `index`.
    line_start = data.rfind(b"\n", 0, index) + 1
    line = data.count(b"\n", 0, line_start) + 1
    column = index - line_start
    return JsonSyntaxError(f"{reason} at line {line} column {column}", line, column)


def _peek_error_at(data: bytes, reason: str, index: int) -> JsonSyntaxError:
    # Errors about a byte serde_json only peeked at are reported one byte further on, capped
    # at the end of input (so EOF errors land on the input length either way).
    return _error_at(data, reason, min(len(data), index + 1))


def _key_identity(body: bytes) -> bytes:
    """The decoded key as UTF-8, given the raw body of a key already validated by serde's rules."""
    if b"\\" not in body:
        return body
    # Validation already ruled out lone surrogates and bad UTF-8, so the stdlib decoder agrees
    # with serde_json on what the escapes mean (a surrogate pair becomes one code point).
    decoded: str = json.loads('"' + body.decode("utf-8") + '"')
    return decoded.encode("utf-8")


def check_trailing(data: bytes, end: int) -> None:
    """Raise JsonSyntaxError('trailing characters at line L column C') if anything but JSON
    whitespace follows `end`."""
    index = _ws(data, end).end()
    if index < len(data):
        raise _peek_error_at(data, _TRAILING_CHARACTERS, index)


def scan_value(data: bytes, *, max_values: int = MAX_JSON_VALUES) -> int:
    """Parse one JSON value from the start of data (leading whitespace allowed) with serde_json's
    rules and the limits above; return the index just past it. Raise JsonSyntaxError with the
    reference's exact text."""
    if max_values < 1:
        raise ValueError("max_values must be at least 1 (the top-level value counts)")
    return _Scanner(data, max_values).run()


class _Scanner:
    """One pass over `data` that follows serde_json's deserialize_any control flow.

    The stack holds one entry per open container: None for an array, the set of keys seen so
    far (as UTF-8 bytes of the decoded key) for an object.
    """

    __slots__ = ("_utf8_checked", "data", "limit_reason", "max_values", "n")

    def __init__(self, data: bytes, max_values: int) -> None:
        self.data = data
        self.n = len(data)
        self.max_values = max_values
        self.limit_reason = f"JSON-RPC message exceeds the limit of {max_values} JSON values"
        # data[:_utf8_checked] is known to be valid UTF-8; -1 until first needed.
        self._utf8_checked = -1

    # -- errors raised from inside the reference's visitor (limits, duplicate keys) -------------

    def _visitor_error(self, reason: str, in_array: bool, index: int) -> JsonSyntaxError:
        # These errors carry no position when raised. serde_json's deserialize_any still runs
        # end_seq/end_map on the failing container before stamping the *current* index onto the
        # error, and those calls skip whitespace and may consume one closing bracket or comma.
        data, n = self.data, self.n
        j = _ws(data, index).end()
        if j < n:
            c = data[j]
            if in_array:
                if c == 0x5D:  # ]
                    j += 1
                elif c == 0x2C:  # ,
                    j = _ws(data, j + 1).end()
            elif c == 0x7D:  # }
                j += 1
        return _error_at(data, reason, j)

    # -- UTF-8 -----------------------------------------------------------------------------

    def _utf8_valid_before(self, end: int) -> bool:
        """True if data[:end] holds no invalid UTF-8.

        Only string bodies can contain non-ASCII bytes by the time this is asked (anything else
        is already a syntax error), so a bad byte before `end` lies in the string being checked.
        serde_json validates a string after unescaping it; escapes are ASCII and expand to whole
        characters, so that verdict equals the verdict on the raw bytes. The prefix is validated
        incrementally so that an early error in a huge message stays cheap.
        """
        checked = self._utf8_checked
        if checked < 0:
            checked = self.n if self.data.isascii() else 0
            self._utf8_checked = checked
        if end <= checked:
            return True
        view = memoryview(self.data)
        n = self.n
        while checked < end:
            target = min(n, max(end, checked + max(checked, _UTF8_CHUNK)))
            try:
                _, consumed = codecs.utf_8_decode(view[checked:target], "strict", target == n)
            except UnicodeDecodeError as exc:
                self._utf8_checked = checked + exc.start
                return checked + exc.start >= end
            checked += consumed
            self._utf8_checked = checked
        return True

    # -- strings ---------------------------------------------------------------------------

    def _hex4(self, index: int) -> tuple[int, int]:
        data = self.data
        if index + 4 > self.n:
            raise _error_at(data, _EOF_STRING, self.n)
        digits = data[index : index + 4]
        # serde_json consumes all four bytes before judging them.
        if _HEX4.fullmatch(digits) is None:
            raise _error_at(data, _INVALID_ESCAPE, index + 4)
        return index + 4, int(digits, 16)

    def _escape(self, index: int) -> int:
        """Validate the escape whose backslash precedes `index`; return the index after it."""
        data, n = self.data, self.n
        if index >= n:
            raise _error_at(data, _EOF_STRING, n)
        c = data[index]
        index += 1
        if c in b'"\\/bfnrt':
            return index
        if c != 0x75:  # u
            raise _error_at(data, _INVALID_ESCAPE, index)
        index, unit = self._hex4(index)
        if 0xDC00 <= unit <= 0xDFFF:
            # serde_json names a lone *trailing* surrogate this way too.
            raise _error_at(data, _LONE_LEADING_SURROGATE, index)
        if 0xD800 <= unit <= 0xDBFF:
            for expected in b"\\u":
                if index >= n:
                    raise _error_at(data, _EOF_STRING, n)
                if data[index] != expected:
                    raise _error_at(data, _UNEXPECTED_END_OF_HEX, index + 1)
                index += 1
            index, unit = self._hex4(index)
            if not 0xDC00 <= unit <= 0xDFFF:
                raise _error_at(data, _LONE_LEADING_SURROGATE, index)
        return index

    def _string(self, index: int) -> int:
        """Validate a string whose opening quote precedes `index`; return the index after it."""
        data, n = self.data, self.n
        while True:
            index = _string_body(data, index).end()
            if index >= n:
                raise _error_at(data, _EOF_STRING, n)
            c = data[index]
            if c == 0x22:  # "
                break
            if c == 0x5C:  # backslash
                index = self._escape(index + 1)
                continue
            raise _error_at(data, _CONTROL_CHARACTER, index + 1)
        if not self._utf8_valid_before(index):
            raise _error_at(data, _INVALID_CODE_POINT, index + 1)
        return index + 1

    def _key(self, index: int) -> tuple[int, bytes]:
        """Parse an object key starting at its quote; return (index after it, decoded UTF-8)."""
        data = self.data
        m = _PLAIN_KEY.match(data, index)
        if m is not None and self._utf8_valid_before(m.end()):
            return m.end(), m.group(1)
        end = self._string(index + 1)
        return end, _key_identity(data[index + 1 : end - 1])

    # -- scalars ---------------------------------------------------------------------------

    def _number(self, index: int) -> int:
        """Scan a number starting at `index` ('-' or a digit) the way serde_json's
        arbitrary_precision scanner does (no range check, so `1e999` is accepted)."""
        data, n = self.data, self.n
        m = _NUMBER.match(data, index)
        if m is not None:
            return m.end()
        if data[index] == 0x2D:  # -
            index += 1
        if index >= n:
            raise _error_at(data, _EOF_VALUE, n)
        c = data[index]
        index += 1
        if c == 0x30:  # 0
            if index < n and 0x30 <= data[index] <= 0x39:
                raise _peek_error_at(data, _INVALID_NUMBER, index)
        elif 0x31 <= c <= 0x39:
            index = _digits(data, index).end()
        else:
            raise _error_at(data, _INVALID_NUMBER, index)
        if index < n and data[index] == 0x2E:  # .
            index += 1
            after = _digits(data, index).end()
            if after == index:
                raise _peek_error_at(data, _INVALID_NUMBER if index < n else _EOF_VALUE, index)
            index = after
        if index < n and data[index] in b"eE":
            index += 1
            if index < n and data[index] in b"+-":
                index += 1
            if index >= n:
                raise _error_at(data, _EOF_VALUE, n)
            c = data[index]
            index += 1
            if not 0x30 <= c <= 0x39:
                raise _error_at(data, _INVALID_NUMBER, index)
            index = _digits(data, index).end()
        return index

    def _ident(self, index: int, word: bytes) -> int:
        data, n = self.data, self.n
        if data.startswith(word, index):
            return index + len(word)
        index += 1
        for expected in word[1:]:
            if index >= n:
                raise _error_at(data, _EOF_VALUE, n)
            if data[index] != expected:
                raise _error_at(data, _EXPECTED_IDENT, index + 1)
            index += 1
        raise AssertionError("unreachable: startswith() already matched")  # pragma: no cover

    # -- driver ----------------------------------------------------------------------------

    def run(self) -> int:
        data, n, max_values = self.data, self.n, self.max_values
        stack: list[set[bytes] | None] = []
        # The reference counts each value (pre-order) before serde_json looks at its first byte,
        # so an over-limit value is reported even when that value is itself malformed. A map
        # value is counted right after its colon, before the whitespace that follows it.
        count = 1  # the top-level value
        i = 0
        while True:
            # Parse the value at i (deserialize_any). The caller has already counted it.
            i = _ws(data, i).end()
            if i >= n:
                raise _peek_error_at(data, _EOF_VALUE, i)
            c = data[i]
            if c == 0x22:  # "
                i = self._string(i + 1)
            elif c in (0x5B, 0x7B):  # [ {
                if len(stack) + 1 >= MAX_DEPTH:
                    raise _peek_error_at(data, _RECURSION_LIMIT, i)
                j = _ws(data, i + 1).end()
                if c == 0x5B:
                    stack.append(None)
                    if j >= n:
                        raise _peek_error_at(data, _EOF_LIST, j)
                    if data[j] != 0x5D:
                        count += 1
                        if count > max_values:
                            raise self._visitor_error(self.limit_reason, True, j)
                        i = j
                        continue
                    i = j + 1
                    stack.pop()
                else:
                    keys: set[bytes] = set()
                    stack.append(keys)
                    if j >= n:
                        raise _peek_error_at(data, _EOF_OBJECT, j)
                    if data[j] != 0x7D:
                        if data[j] != 0x22:
                            raise _peek_error_at(data, _KEY_MUST_BE_STRING, j)
                        i = self._member(j, keys)
                        count += 1
                        if count > max_values:
                            raise self._visitor_error(self.limit_reason, False, i)
                        continue
                    i = j + 1
                    stack.pop()
            elif c == 0x2D or 0x30 <= c <= 0x39:  # - 0-9
                i = self._number(i)
            elif c == 0x74:  # t
                i = self._ident(i, b"true")
            elif c == 0x66:  # f
                i = self._ident(i, b"false")
            elif c == 0x6E:  # n
                i = self._ident(i, b"null")
            else:
                raise _peek_error_at(data, _EXPECTED_VALUE, i)

            # The value is complete: advance the enclosing containers until one needs a value.
            while stack:
                top = stack[-1]
                if top is None:
                    while count < max_values:
                        m = _ARRAY_NEXT.match(data, i)
                        if m is None or (m.start(1) >= 0 and not self._utf8_valid_before(m.end())):
                            break
                        count += 1
                        i = m.end()
                    j = _ws(data, i).end()
                    if j >= n:
                        raise _peek_error_at(data, _EOF_LIST, j)
                    c = data[j]
                    if c == 0x5D:  # ]
                        i = j + 1
                        stack.pop()
                        continue
                    if c != 0x2C:  # ,
                        raise _peek_error_at(data, _EXPECTED_LIST_COMMA_OR_END, j)
                    j = _ws(data, j + 1).end()
                    if j >= n:
                        raise _peek_error_at(data, _EOF_VALUE, j)
                    if data[j] == 0x5D:
                        raise _peek_error_at(data, _TRAILING_COMMA, j)
                    count += 1
                    if count > max_values:
                        raise self._visitor_error(self.limit_reason, True, j)
                    i = j
                    break
                while count < max_values:
                    m = _OBJECT_NEXT.match(data, i)
                    if m is None or not self._utf8_valid_before(m.end()):
                        break
                    key = _key_identity(m.group(1))
                    if key in top:
                        break
                    top.add(key)
                    count += 1
                    i = m.end()
                j = _ws(data, i).end()
                if j >= n:
                    raise _peek_error_at(data, _EOF_OBJECT, j)
                c = data[j]
                if c == 0x7D:  # }
                    i = j + 1
                    stack.pop()
                    continue
                if c != 0x2C:  # ,
                    raise _peek_error_at(data, _EXPECTED_OBJECT_COMMA_OR_END, j)
                j = _ws(data, j + 1).end()
                if j >= n:
                    raise _peek_error_at(data, _EOF_VALUE, j)
                c = data[j]
                if c != 0x22:
                    raise _peek_error_at(
                        data, _TRAILING_COMMA if c == 0x7D else _KEY_MUST_BE_STRING, j
                    )
                i = self._member(j, top)
                count += 1
                if count > max_values:
                    raise self._visitor_error(self.limit_reason, False, i)
                break
            else:
                return i

    def _member(self, index: int, keys: set[bytes]) -> int:
        """Parse `"key" :` starting at the quote; return the index just after the colon."""
        data, n = self.data, self.n
        index, key = self._key(index)
        if key in keys:
            # The reference prints the decoded key verbatim (no escaping) between backticks.
            shown = key.decode("utf-8")
            raise self._visitor_error(f"duplicate JSON object key `{shown}`", False, index)
        keys.add(key)
        index = _ws(data, index).end()
        if index >= n:
            raise _peek_error_at(data, _EOF_OBJECT, index)
        if data[index] != 0x3A:  # :
            raise _peek_error_at(data, _EXPECTED_COLON, index)
        return index + 1
