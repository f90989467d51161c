"""JSON-RPC envelopes as the reference speaks them: no `jsonrpc` member, `error` before `id`.

`decode_message()` (the server's side) turns one transport message into a `Request`,
`Notification` or `ClientResponse`, or raises `EnvelopeError` with the serde text the reference
would print. `decode_from_server()` (the client's side) reads what a server sends: a
`Response` or a `Notification`, with `result` and `params` left raw for a typed decode.
The fast path is msgspec; the exact serde_json emulation in `json_syntax` runs only when the
fast path fails or a cheap check says the text may hold something serde rejects (nesting,
value count, duplicate keys). Encoders build the compact output frames. Pure data: no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec

from execserver.compat import json_syntax
from execserver.compat.serde import unexpected
from execserver.protocol.base import enc_hook

RequestId = int | str

I64_MIN = -(2**63)
I64_MAX = 2**63 - 1
U64_MAX = 2**64 - 1
U128_MAX = 2**128 - 1
I128_MIN = -(2**127)
_MAX_DEPTH_CONTAINERS = json_syntax.MAX_DEPTH - 1


class EnvelopeError(ValueError):
    """The message is not a JSON-RPC message; `str(exc)` is serde's detail text."""


@dataclass(slots=True)
class TraceContext:
    """W3C trace context carried in the optional `trace` member."""

    traceparent: str | None = None
    tracestate: str | None = None


class Request(msgspec.Struct):
    """A request as the server reads it. A struct rather than a dataclass: msgspec builds it
    in C, without the Python frame of a dataclass's `__init__` (one per message received)."""

    id: RequestId
    method: str
    params: Any
    trace: TraceContext | None


class Notification(msgspec.Struct):
    method: str
    params: Any


@dataclass(slots=True)
class ClientResponse:
    """A response or error object sent by the client: the answer to a server request (a
    `network/policyRequest`), or a protocol violation when it answers none."""

    id: RequestId
    result: Any = None
    error: ErrorObject | None = None


Message = Request | Notification | ClientResponse


@dataclass(slots=True)
class ErrorObject:
    code: int
    message: str
    data: Any = None


@dataclass(slots=True)
class Response:
    """A server's answer as a client reads it: `result` raw (JSON text), or `error`."""

    id: RequestId | None
    result: msgspec.Raw | None
    error: ErrorObject | None


_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder(enc_hook=enc_hook)


def decode_message(data: bytes) -> Message:
    """Decode and classify one message; raise `EnvelopeError` for anything else."""
    if len(data) > _FEW_VALUES_TEXT and _may_hold_too_many_values(data):
        # The exact scan stops at the first value past the limit: a huge `[0,0,...]` costs
        # a few hundred thousand values of work, not a full decode (and a walk) of millions.
        return _decode_slow(data)
    try:
        obj = _decoder.decode(data)
    except (msgspec.DecodeError, RecursionError):  # msgspec's depth limit is a RecursionError
        return _decode_slow(data)
    if _may_violate_limits(data, obj):
        _scan(data)  # raises the exact serde error, if there is one
    return classify(obj)


def _decode_slow(data: bytes) -> Message:
    end = _scan(data)
    try:
        obj = _decoder.decode(data[:end])
    except msgspec.DecodeError:
        # serde accepted what msgspec refused: numbers past msgspec's range (`1e400`, integers
        # of thousands of digits), which the reference keeps as arbitrary-precision numbers.
        obj = _decode_wide_numbers(data[:end])
    message = classify(obj)
    try:
        json_syntax.check_trailing(data, end)
    except json_syntax.JsonSyntaxError as exc:
        raise EnvelopeError(exc.message) from None
    return message


def _wide_int(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:  # more digits than int() converts: only its sign and size matter
        return float(text)


def _decode_wide_numbers(data: bytes) -> Any:
    """Decode text `json_syntax` validated (so UTF-8, no lone surrogates, no NaN or Infinity
    literals) whose numbers msgspec cannot hold. Out-of-range numbers become infinite floats,
    which every consumer treats as the reference treats an arbitrary-precision number that fits
    nothing: `invalid number` for integer fields, `invalid type: number, ...` elsewhere."""
    try:
        return json.loads(data, parse_int=_wide_int)
    except (ValueError, RecursionError) as exc:  # not expected after the scan; stay an envelope
        raise EnvelopeError(str(exc)) from None


def _scan(data: bytes) -> int:
    try:
        return json_syntax.scan_value(data)
    except json_syntax.JsonSyntaxError as exc:
        raise EnvelopeError(exc.message) from None


_FEW_VALUES_TEXT = 2 * json_syntax.MAX_JSON_VALUES
"""Text this short cannot hold too many values: each needs a byte and a separator."""


def _may_hold_too_many_values(data: bytes) -> bool:
    """Cheap bound (C-speed byte counts) on the number of JSON values of a text longer than
    `_FEW_VALUES_TEXT`: every value but the first of a container follows a comma, the first
    follows its container's opening bracket. Commas and brackets inside strings only make the
    bound looser."""
    bound = data.count(b",")
    if bound > json_syntax.MAX_JSON_VALUES:
        return True
    return bound + data.count(b"[") + data.count(b"{") + 1 > json_syntax.MAX_JSON_VALUES


_LONG_STRING = 4096
"""Strings at least this long are cut out of the text before the raw scans below."""
_ODD_KEY_END = re.compile(rb'\\":|"[ \t\n\r]')
"""An escaped quote before a colon, or whitespace after a quote: text the key count above
cannot vouch for."""
_ODD_KEY_END_BYTES = b" \t\n\r\\"
"""The bytes `_ODD_KEY_END` needs (whitespace, a backslash): text without any cannot match,
which one `translate` tells far sooner than the regex's search (most requests are compact)."""


_SHORT_TEXT = 2 * (_MAX_DEPTH_CONTAINERS + 1)
"""Text shorter than this cannot nest too deep (a container takes two bytes), hold too many
values or a long string: only its keys need counting."""


def _may_violate_limits(data: bytes, obj: Any) -> bool:
    """Cheap test for what msgspec accepts but serde_json rejects: deep nesting, too many
    values, duplicate keys. False means the message certainly has none of them."""
    if type(obj) is not dict and type(obj) is not list:  # a scalar: nothing to repeat or nest
        return False
    if len(data) < _SHORT_TEXT:  # most requests: only the duplicate-key test applies
        keys = _key_count(obj)
        text = data
    else:
        long_strings: list[str] = []
        values, keys, depth = _stats(obj, 1, long_strings)
        if depth > _MAX_DEPTH_CONTAINERS or values > json_syntax.MAX_JSON_VALUES:
            return True
        # Long string values (file contents, base64) hold no structure: scan only the rest.
        text = _without_plain_strings(data, long_strings) if long_strings else data
    # Every key of compact JSON ends with `":`; a count that differs from the decoded key count
    # means a key was repeated (or the text is spaced/escaped oddly: let the exact scan decide).
    if text.count(b'":') != keys:
        return True
    if len(text.translate(None, _ODD_KEY_END_BYTES)) == len(text):
        return False
    return _ODD_KEY_END.search(text) is not None


def _without_plain_strings(data: bytes, strings: list[str]) -> bytes:
    """`data` with the contents of these strings removed where each is a string token without
    escapes: found by a prefix that starts alphanumeric right after a quote (in valid JSON that
    quote opens a string, or is escaped, which the backslash check rejects) and cut up to the
    next quote, with no backslash in between."""
    cuts: list[tuple[int, int]] = []
    for value in strings:
        prefix = value[:64]
        if not (prefix.isascii() and prefix[0].isalnum()) or '"' in prefix or "\\" in prefix:
            continue
        start = data.find(prefix.encode())
        if start <= 0 or data[start - 1] != 0x22:
            continue
        end = data.find(b'"', start)
        if end < 0 or data.find(b"\\", start, end) >= 0:
            continue
        cuts.append((start, end))
    if not cuts:
        return data
    cuts.sort()
    kept: list[bytes] = []
    position = 0
    for start, end in cuts:
        if start >= position:  # the same token may be found twice
            kept.append(data[position:start])
            position = end
    kept.append(data[position:])
    return b"".join(kept)


def _stats(obj: Any, depth: int, long_strings: list[str]) -> tuple[int, int, int]:
    """(values, keys, max container depth) of a decoded JSON value; collects long strings.

    msgspec decodes to exactly `dict`, `list` and `str`, so the checks are by `type()` (cheaper
    than `isinstance` on this every-message path)."""
    children: Iterable[Any]
    kind = type(obj)
    if kind is dict:
        keys, children = len(obj), obj.values()
    elif kind is list:
        keys, children = 0, obj
    else:
        if kind is str and len(obj) >= _LONG_STRING:
            long_strings.append(obj)
        return 1, 0, depth - 1
    values, deepest = 1, depth
    for item in children:
        kind = type(item)
        if kind is dict or kind is list:
            v, k, d = _stats(item, depth + 1, long_strings)
            values, keys, deepest = values + v, keys + k, max(deepest, d)
        else:
            values += 1
            if kind is str and len(item) >= _LONG_STRING:
                long_strings.append(item)
    return values, keys, deepest


_CONTAINERS = frozenset((dict, list))


def _key_count(obj: dict[str, Any] | list[Any]) -> int:
    """The keys of every object in a decoded JSON container (`_stats` without the rest)."""
    items: Iterable[Any]
    if type(obj) is dict:
        count, items = len(obj), obj.values()
    else:
        count, items = 0, obj
    if _CONTAINERS.isdisjoint(map(type, items)):  # no container inside (params): a C-level scan
        return count
    for item in items:
        if type(item) is dict or type(item) is list:
            count += _key_count(item)
    return count


def classify(obj: Any) -> Message:
    """Sort a decoded value into request / notification / client response like the reference."""
    if not isinstance(obj, dict):
        raise EnvelopeError("expected a JSON-RPC object")
    if "method" in obj:
        if "id" in obj:
            return _request(obj)
        return _notification(obj)
    if "result" in obj:
        return _client_response(obj, ("id",))
    return _client_response(obj, ("error", "id"))


def _request(obj: dict[str, Any]) -> Request:
    request_id = obj["id"]
    method = obj["method"]
    kind = type(request_id)
    valid_id = kind is str or (kind is int and I64_MIN <= request_id <= I64_MAX)
    if valid_id and type(method) is str and "trace" not in obj:
        # What `_checked_request` returns for a valid untraced request, without its checks.
        return Request(request_id, method, obj.get("params"), None)
    return _checked_request(obj)


def _checked_request(obj: dict[str, Any]) -> Request:
    """A request whose members are checked in their order, so the first bad one is the one
    named (serde's order)."""
    request_id: RequestId = 0
    method = ""
    trace: TraceContext | None = None
    for key, value in obj.items():
        if key == "id":
            request_id = parse_request_id(value)
        elif key == "method":
            method = _string(value)
        elif key == "trace":
            trace = parse_trace(value)
    return Request(request_id, method, obj.get("params"), trace)


def _notification(obj: dict[str, Any]) -> Notification:
    return Notification(_string(obj["method"]), obj.get("params"))


def _client_response(obj: dict[str, Any], required: tuple[str, ...]) -> ClientResponse:
    request_id: RequestId = 0
    error: ErrorObject | None = None
    for key, value in obj.items():
        if key == "id":
            request_id = parse_request_id(value)
        elif key == "error" and "error" in required:
            _check_error_object(value)
            error = ErrorObject(value["code"], value["message"], value.get("data"))
    for name in required:
        if name not in obj:
            raise EnvelopeError(f"missing field `{name}`")
    return ClientResponse(request_id, obj.get("result"), error)


def _check_error_object(value: Any) -> None:
    if not isinstance(value, dict):
        raise EnvelopeError(f"invalid type: {unexpected(value)}, expected struct JSONRPCErrorError")
    for key, item in value.items():
        if key == "code" and (isinstance(item, bool) or not isinstance(item, int)):
            raise EnvelopeError(f"invalid type: {unexpected(item)}, expected i64")
        if key == "message":
            _string(item)
    for name in ("code", "message"):
        if name not in value:
            raise EnvelopeError(f"missing field `{name}`")


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise EnvelopeError(f"invalid type: {unexpected(value)}, expected a string")
    return value


def parse_request_id(value: Any) -> RequestId:
    """A JSON-RPC id: a string or an integer in the i64 range, echoed with its type."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if I64_MIN <= value <= I64_MAX:
            return value
        # Numbers outside u64/i64 cannot even be buffered by serde's untagged-enum machinery;
        # past u128/i128 they are not integers to it at all (no variant matches).
        if U64_MAX < value <= U128_MAX:
            raise EnvelopeError(f"invalid type: integer `{value}` as u128, expected any value")
        if I128_MIN <= value < I64_MIN:
            raise EnvelopeError(f"invalid type: integer `{value}` as i128, expected any value")
    raise EnvelopeError("data did not match any variant of untagged enum RequestId")


def parse_trace(value: Any) -> TraceContext | None:
    """The optional W3C `trace` member; malformed values are envelope errors on requests."""
    if value is None:
        return None
    if isinstance(value, dict):
        parent = value.get("traceparent")
        state = value.get("tracestate")
        for key, item in value.items():
            if key in ("traceparent", "tracestate") and item is not None:
                _string(item)
        return TraceContext(parent, state)
    if isinstance(value, list):
        if len(value) > 2:
            raise EnvelopeError(f"invalid length {len(value)}, expected fewer elements in array")
        items = [None if item is None else _string(item) for item in value] + [None, None]
        return TraceContext(items[0], items[1])
    raise EnvelopeError(f"invalid type: {unexpected(value)}, expected struct W3cTraceContext")


# -- encoding ---------------------------------------------------------------------------------


class _ResultEnvelope(msgspec.Struct):
    id: RequestId
    result: Any


class _ErrorBody(msgspec.Struct, omit_defaults=True, kw_only=True):
    # The reference's field order: `data` (when present) between `code` and `message`.
    code: int
    data: Any = None
    message: str


class _ErrorEnvelope(msgspec.Struct):
    error: _ErrorBody
    id: RequestId


class _NotificationEnvelope(msgspec.Struct):
    method: str
    params: Any


# Envelopes are encoded in one pass (no concatenation of large payloads).


def encode_result(request_id: RequestId, result: Any) -> bytes:
    """`{"id":ID,"result":R}` with `result` any msgspec-encodable value."""
    return _encoder.encode(_ResultEnvelope(request_id, result))


def encode_error(request_id: RequestId, code: int, message: str, data: Any = None) -> bytes:
    """`{"error":{"code":C,"message":M},"id":ID}`: error first, as the reference orders it."""
    return _encoder.encode(
        _ErrorEnvelope(_ErrorBody(code=code, data=data, message=message), request_id)
    )


def encode_notification(method: str, params: Any) -> bytes:
    """`{"method":M,"params":P}`."""
    return _encoder.encode(_NotificationEnvelope(method, params))


class _RequestEnvelope(msgspec.Struct, omit_defaults=True):
    id: RequestId
    method: str
    params: Any
    trace: dict[str, str] | None = None


def encode_request(
    request_id: RequestId, method: str, params: Any, trace: dict[str, str] | None = None
) -> bytes:
    """`{"id":ID,"method":M,"params":P}` (client side), with `"trace":{...}` when given."""
    return _encoder.encode(_RequestEnvelope(request_id, method, params, trace or None))


_ABSENT = msgspec.Raw(b"")
NULL = msgspec.Raw(b"null")


class _FromServer(msgspec.Struct):
    id: int | str | None = None
    method: str | None = None
    params: msgspec.Raw = _ABSENT  # (msgspec.Raw cannot be part of a union)
    result: msgspec.Raw = _ABSENT
    error: dict[str, Any] | None = None


_from_server = msgspec.json.Decoder(_FromServer)


def decode_from_server(data: bytes) -> Response | Notification:
    """Classify a message from a server; raise `EnvelopeError` if it is neither a response nor
    a notification. Notification params and results stay raw (`NULL` when absent)."""
    try:
        message = _from_server.decode(data)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise EnvelopeError(str(exc)) from None
    if message.method is not None and message.id is None:
        return Notification(message.method, message.params if len(message.params) else NULL)
    if message.error is not None:
        error = message.error
        code = error.get("code", -32603)
        return Response(
            message.id,
            None,
            ErrorObject(
                code if isinstance(code, int) else -32603,
                str(error.get("message", "")),
                error.get("data"),
            ),
        )
    if message.method is not None:
        raise EnvelopeError("a request from the server (servers only answer and notify)")
    return Response(message.id, message.result if len(message.result) else NULL, None)


def encode_value(value: Any) -> bytes:
    """Compact JSON for any wire value."""
    return _encoder.encode(value)
