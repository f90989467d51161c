"""The protobuf codec of `codex.exec_server.relay.v1.RelayMessageFrame` (RELAY.md §4).

Decoding follows prost, as the codex binaries do: fields in any order, the last occurrence of
a scalar wins, a repeated `body` member of the same kind merges into the earlier one while a
different kind replaces it, unknown fields (groups included) are skipped, a known field with
the wrong wire type and a varint longer than ten bytes are errors, and `uint32` values are
truncated to 32 bits. Encoding omits default values and writes fields in number order.
`peek()` is the relay's hot path: it reads the envelope without touching the payload.

Both decoders first try the layout every encoder writes (prost and ours: version 1, the stream
id, one body member ending the frame; a data body with its fields in number order, each at
most once) with a few index checks; any other layout, and any malformed input, goes through
the general decoder, so results and errors are the same either way. Pure data: no I/O.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

_U32_MAX = 0xFFFF_FFFF
_U64_MASK = 0xFFFF_FFFF_FFFF_FFFF
_MAX_GROUP_DEPTH = 100

# Wire types.
_VARINT = 0
_I64 = 1
_LEN = 2
_SGROUP = 3
_EGROUP = 4
_I32 = 5
_WIRE_TYPE_NAMES = (
    "Varint",
    "SixtyFourBit",
    "LengthDelimited",
    "StartGroup",
    "EndGroup",
    "ThirtyTwoBit",
)


class FrameError(ValueError):
    """Bytes that are not a `RelayMessageFrame` (prost would refuse them), or a value that
    cannot be encoded. `str()` names the field, prost style: `RelayData.seq: invalid varint`."""


class Kind(IntEnum):
    """The `body` oneof members; each value is the field number on the wire."""

    DATA = 5
    ACK = 6
    RESUME = 7
    RESET = 8
    HEARTBEAT = 9
    HANDSHAKE = 10


@dataclass(frozen=True, slots=True)
class Data:
    """`RelayData`: one encrypted record (the endpoints require segment 0 of 1)."""

    seq: int
    payload: bytes
    segment_index: int = 0
    segment_count: int = 1


@dataclass(frozen=True, slots=True)
class Ack:
    """`RelayAck` (never sent by codex 0.169/0.171; ignored on receipt)."""


@dataclass(frozen=True, slots=True)
class Resume:
    """`RelayResume`: the harness sends it once, first, with `next_seq` 0."""

    next_seq: int = 0


@dataclass(frozen=True, slots=True)
class Reset:
    """`RelayReset`: the stream is over; `reason` is unauthenticated text."""

    reason: str


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """`RelayHeartbeat` (never sent by codex 0.169/0.171; ignored on receipt)."""


@dataclass(frozen=True, slots=True)
class Handshake:
    """`RelayHandshake`: one Noise handshake message."""

    payload: bytes


Body = Data | Ack | Resume | Reset | Heartbeat | Handshake


@dataclass(frozen=True, slots=True)
class Frame:
    """`RelayMessageFrame`: one WebSocket message between an endpoint and the relay."""

    stream_id: str
    body: Body
    version: int = 1
    ack: int = 0
    ack_bits: int = 0


class Envelope(NamedTuple):
    """What the relay routes by: the frame's stream id, body kind and version."""

    stream_id: str
    kind: Kind
    version: int


_KIND_OF: dict[type[Body], Kind] = {
    Data: Kind.DATA,
    Ack: Kind.ACK,
    Resume: Kind.RESUME,
    Reset: Kind.RESET,
    Heartbeat: Kind.HEARTBEAT,
    Handshake: Kind.HANDSHAKE,
}
_MESSAGE_NAMES = {
    Kind.DATA: "RelayData",
    Kind.ACK: "RelayAck",
    Kind.RESUME: "RelayResume",
    Kind.RESET: "RelayReset",
    Kind.HEARTBEAT: "RelayHeartbeat",
    Kind.HANDSHAKE: "RelayHandshake",
}
_FRAME = "RelayMessageFrame"
_BODY_FIELD_NAMES = {
    Kind.DATA: "data",
    Kind.ACK: "ack_frame",
    Kind.RESUME: "resume",
    Kind.RESET: "reset",
    Kind.HEARTBEAT: "heartbeat",
    Kind.HANDSHAKE: "handshake",
}


# --- encoding -------------------------------------------------------------------------------


_ONE_BYTE_VARINTS = tuple(bytes((value,)) for value in range(0x80))


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _ONE_BYTE_VARINTS[value]
    if value < 0x4000:
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _u32(name: str, value: int) -> int:
    if not 0 <= value <= _U32_MAX:
        raise FrameError(f"{name}: {value} is out of range for uint32")
    return value


def _uint_field(tag: int, value: int) -> bytes:
    return b"" if value == 0 else bytes((tag << 3,)) + _varint(value)


def _len_field(tag: int, value: bytes) -> bytes:
    return b"" if not value else bytes((tag << 3 | _LEN,)) + _varint(len(value)) + value


def _encode_body(body: Body) -> bytes:
    if isinstance(body, Data):
        return b"".join(
            (
                _uint_field(1, _u32("RelayData.seq", body.seq)),
                _uint_field(2, _u32("RelayData.segment_index", body.segment_index)),
                _uint_field(3, _u32("RelayData.segment_count", body.segment_count)),
                _len_field(4, body.payload),
            )
        )
    if isinstance(body, Resume):
        return _uint_field(1, _u32("RelayResume.next_seq", body.next_seq))
    if isinstance(body, Reset):
        return _len_field(1, body.reason.encode())
    if isinstance(body, Handshake):
        return _len_field(1, body.payload)
    return b""  # Ack, Heartbeat


def encode_frame(frame: Frame) -> bytes:
    """Encode `frame` as prost does: defaults omitted, fields in number order.

    Raises:
        FrameError: an integer is outside the uint32 range.
    """
    kind = _KIND_OF[type(frame.body)]
    body = _encode_body(frame.body)
    return b"".join(
        (
            _uint_field(1, _u32("RelayMessageFrame.version", frame.version)),
            _len_field(2, frame.stream_id.encode()),
            _uint_field(3, _u32("RelayMessageFrame.ack", frame.ack)),
            _uint_field(4, _u32("RelayMessageFrame.ack_bits", frame.ack_bits)),
            # A message-typed oneof member is present even when empty (`3a 00`).
            bytes((kind << 3 | _LEN,)),
            _varint(len(body)),
            body,
        )
    )


def encode_data(stream_id: str, seq: int, payload: bytes) -> bytes:
    """A version-1 `data` frame (segment 0 of 1), byte-identical to `encode_frame`.

    Raises:
        FrameError: `seq` is outside the uint32 range.
    """
    size = len(payload)
    if 0 < seq <= _U32_MAX and size:  # every record but a stream's first: no field omitted
        seq_varint = _varint(seq)
        size_varint = _varint(size)
        # One join: the payload (up to a 61 KiB record) is copied once.
        return b"".join(
            (
                _data_frame_prefix(stream_id),
                _varint(len(seq_varint) + len(size_varint) + size + 4),
                b"\x08",
                seq_varint,
                b"\x18\x01\x22",
                size_varint,
                payload,
            )
        )
    seq_field = _uint_field(1, _u32("RelayData.seq", seq))
    payload_head = b"\x22" + _varint(size) if size else b""
    body_length = len(seq_field) + 2 + len(payload_head) + size
    return b"".join(
        (
            _data_frame_prefix(stream_id),
            _varint(body_length),
            seq_field,
            b"\x18\x01",
            payload_head,
            payload,
        )
    )


@functools.lru_cache(maxsize=512)
def _data_frame_prefix(stream_id: str) -> bytes:
    """`version = 1`, the stream id and the `data` key: the start of every data frame of a
    stream (cached: a stream sends many)."""
    return b"".join((b"\x08\x01", _len_field(2, stream_id.encode()), b"\x2a"))


def encode_reset(stream_id: str, reason: str) -> bytes:
    """A version-1 `reset` frame, byte-identical to `encode_frame`."""
    body = _len_field(1, reason.encode())
    return b"".join(
        (b"\x08\x01", _len_field(2, stream_id.encode()), b"\x42", _varint(len(body)), body)
    )


# --- decoding -------------------------------------------------------------------------------


def _read_varint(
    data: bytes | bytearray | memoryview, pos: int, end: int, where: str
) -> tuple[int, int]:
    """Decode a varint at `pos`; prost's rules: at most ten bytes, the tenth at most 1."""
    if pos + 1 < end:  # one or two bytes: lengths and seqs of every frame, without the loop
        byte = data[pos]
        if byte < 0x80:
            return byte, pos + 1
        second = data[pos + 1]
        if second < 0x80:
            return (byte & 0x7F) | second << 7, pos + 2
    value = 0
    shift = 0
    for count in range(10):
        if pos >= end:
            raise FrameError(f"{where}: invalid varint")
        byte = data[pos]
        pos += 1
        if count == 9 and byte > 1:
            raise FrameError(f"{where}: invalid varint")
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value & _U64_MASK, pos
        shift += 7
    raise FrameError(f"{where}: invalid varint")  # pragma: no cover - the loop returns or raises


def _read_key(
    data: bytes | bytearray | memoryview, pos: int, end: int, where: str
) -> tuple[int, int, int]:
    """(field number, wire type, next position) of the key at `pos`."""
    key, pos = _read_varint(data, pos, end, where)
    if key > _U32_MAX:
        raise FrameError(f"{where}: invalid key value: {key}")
    wire_type = key & 7
    if wire_type > _I32:
        raise FrameError(f"{where}: invalid wire type value: {wire_type}")
    tag = key >> 3
    if tag == 0:
        raise FrameError(f"{where}: invalid tag value: 0")
    return tag, wire_type, pos


def _read_len(
    data: bytes | bytearray | memoryview, pos: int, end: int, where: str
) -> tuple[int, int]:
    """(start, stop) of the length-delimited value whose length prefix is at `pos`."""
    length, pos = _read_varint(data, pos, end, where)
    if length > end - pos:
        raise FrameError(f"{where}: buffer underflow")
    return pos, pos + length


def _skip(
    data: bytes | bytearray | memoryview, pos: int, end: int, key: tuple[int, int], where: str
) -> int:
    """Skip the value of the unknown field `key` = (number, wire type); a group is skipped up
    to its matching end tag."""
    tag, wire_type = key
    if wire_type == _VARINT:
        return _read_varint(data, pos, end, where)[1]
    if wire_type == _I64:
        if end - pos < 8:
            raise FrameError(f"{where}: buffer underflow")
        return pos + 8
    if wire_type == _I32:
        if end - pos < 4:
            raise FrameError(f"{where}: buffer underflow")
        return pos + 4
    if wire_type == _LEN:
        return _read_len(data, pos, end, where)[1]
    if wire_type == _EGROUP:
        raise FrameError(f"{where}: unexpected end group tag")
    # A start group: skip nested fields until the end tag with the same number. Nested groups
    # are tracked on a stack (never Python recursion: a frame may hold 256 KiB of them).
    open_groups = [tag]
    while open_groups:
        if pos >= end:
            raise FrameError(f"{where}: buffer underflow")
        inner_tag, inner_type, pos = _read_key(data, pos, end, where)
        if inner_type == _EGROUP:
            if inner_tag != open_groups.pop():
                raise FrameError(f"{where}: unexpected end group tag")
        elif inner_type == _SGROUP:
            open_groups.append(inner_tag)
            if len(open_groups) > _MAX_GROUP_DEPTH:
                raise FrameError(f"{where}: recursion limit reached")
        else:
            pos = _skip(data, pos, end, (inner_tag, inner_type), where)
    return pos


def _expect(where: str, wire_type: int, expected: int) -> None:
    if wire_type != expected:
        raise FrameError(
            f"{where}: invalid wire type: {_WIRE_TYPE_NAMES[wire_type]} "
            f"(expected {_WIRE_TYPE_NAMES[expected]})"
        )


def _utf8(data: bytes | bytearray | memoryview, start: int, stop: int, where: str) -> str:
    try:
        return bytes(data[start:stop]).decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(f"{where}: invalid string value: data is not UTF-8 encoded") from None


# Per body kind: its varint fields and its length-delimited fields (number -> name).
_BODY_FIELDS: dict[Kind, tuple[dict[int, str], dict[int, str]]] = {
    Kind.DATA: ({1: "seq", 2: "segment_index", 3: "segment_count"}, {4: "payload"}),
    Kind.ACK: ({}, {}),
    Kind.RESUME: ({1: "next_seq"}, {}),
    Kind.RESET: ({}, {1: "reason"}),
    Kind.HEARTBEAT: ({}, {}),
    Kind.HANDSHAKE: ({}, {1: "payload"}),
}


def _fields_of(body: Body) -> tuple[dict[int, int], dict[int, bytes]]:
    if isinstance(body, Data):
        ints = {1: body.seq, 2: body.segment_index, 3: body.segment_count}
        return ints, {4: body.payload}
    if isinstance(body, Resume):
        return {1: body.next_seq}, {}
    if isinstance(body, Reset):
        return {}, {1: body.reason.encode()}
    if isinstance(body, Handshake):
        return {}, {1: body.payload}
    return {}, {}


def _merge_body(
    kind: Kind, previous: Body | None, data: bytes | bytearray | memoryview, pos: int, end: int
) -> Body:
    """Decode one body member, merged into `previous` when that is the same kind (prost)."""
    name = _MESSAGE_NAMES[kind]
    same = previous is not None and _KIND_OF[type(previous)] is kind
    ints, blobs = _fields_of(previous) if same and previous is not None else ({}, {})
    int_names, blob_names = _BODY_FIELDS[kind]
    while pos < end:
        tag, wire_type, pos = _read_key(data, pos, end, name)
        if tag in int_names:
            where = f"{name}.{int_names[tag]}"
            _expect(where, wire_type, _VARINT)
            value, pos = _read_varint(data, pos, end, where)
            ints[tag] = value & _U32_MAX
        elif tag in blob_names:
            where = f"{name}.{blob_names[tag]}"
            _expect(where, wire_type, _LEN)
            start, pos = _read_len(data, pos, end, where)
            if kind is Kind.RESET:
                _utf8(data, start, pos, where)
            blobs[tag] = bytes(data[start:pos])
        else:
            pos = _skip(data, pos, end, (tag, wire_type), name)
    if kind is Kind.DATA:
        return Data(
            seq=ints.get(1, 0),
            payload=blobs.get(4, b""),
            segment_index=ints.get(2, 0),
            segment_count=ints.get(3, 0),
        )
    if kind is Kind.RESUME:
        return Resume(next_seq=ints.get(1, 0))
    if kind is Kind.RESET:
        return Reset(reason=blobs.get(1, b"").decode())
    if kind is Kind.HANDSHAKE:
        return Handshake(payload=blobs.get(1, b""))
    return Ack() if kind is Kind.ACK else Heartbeat()


_KIND_OF_KEY: dict[int, Kind] = {kind << 3 | _LEN: kind for kind in Kind}
"""The key byte of each `body` member (all length-delimited) -> its kind."""
_CANONICAL_HEAD = b"\x08\x01\x12"
"""`version = 1`, then the key of `stream_id`: how every encoder starts a frame."""


def _canonical_envelope(data: bytes | bytearray | memoryview) -> tuple[str, Kind, int, int] | None:
    """(stream id, kind, body start, body end) of a frame laid out as the encoders write it:
    `08 01 12 <len> <id> <body key> <len> <body>` with the body ending the frame. None for any
    other layout or anything malformed (the general decoder then decides)."""
    end = len(data)
    if data[:3] != _CANONICAL_HEAD:
        return None
    try:
        length = data[3]
        if length >= 0x80:
            return None
        pos = 4 + length
        stream_id = str(data[4:pos], "utf-8")
        kind = _KIND_OF_KEY.get(data[pos])
        if kind is None:
            return None
        length = data[pos + 1]
        if length < 0x80:
            start = pos + 2
        else:
            length, start = _read_varint(data, pos + 1, end, _FRAME)
    except (IndexError, UnicodeDecodeError, FrameError):
        return None
    if start + length != end:
        return None
    return stream_id, kind, start, end


def _canonical_data(data: bytes | bytearray | memoryview, pos: int, end: int) -> Data | None:
    """A data body whose fields come in number order, each at most once; else None."""
    seq = segment_index = segment_count = 0
    payload = b""
    try:
        if pos < end and data[pos] == 0x08:
            seq, pos = _read_varint(data, pos + 1, end, _FRAME)
        if pos < end and data[pos] == 0x10:
            segment_index, pos = _read_varint(data, pos + 1, end, _FRAME)
        if pos < end and data[pos] == 0x18:
            segment_count, pos = _read_varint(data, pos + 1, end, _FRAME)
        if pos < end and data[pos] == 0x22:
            start, pos = _read_len(data, pos + 1, end, _FRAME)
            payload = bytes(data[start:pos])
    except FrameError:
        return None
    if pos != end:
        return None
    return Data(
        seq=seq & _U32_MAX,
        payload=payload,
        segment_index=segment_index & _U32_MAX,
        segment_count=segment_count & _U32_MAX,
    )


def read_data(data: bytes) -> tuple[str, int, memoryview] | None:
    """(stream id, seq, payload) of a version-1 `data` frame as every encoder lays it out
    (segment 0 of 1, a non-empty payload), the payload a view of `data` (no copy); None for
    anything else, which `decode_frame()` then decides. The receive hot path of both ends:
    `_canonical_envelope` and the data body read in one pass.
    """
    if data[:3] != _CANONICAL_HEAD:
        return None
    end = len(data)
    try:
        pos = 4 + data[3]
        if data[3] >= 0x80 or data[pos] != 0x2A:  # a long stream id, or not a data body
            return None
        stream_id = str(data[4:pos], "utf-8")
        length, pos = _read_varint(data, pos + 1, end, _FRAME)
        if pos + length != end:
            return None
        seq = 0
        if data[pos] == 0x08:
            seq, pos = _read_varint(data, pos + 1, end, _FRAME)
        if data[pos : pos + 3] != b"\x18\x01\x22":  # segment_count = 1, then the payload key
            return None
        size, start = _read_varint(data, pos + 3, end, _FRAME)
    except (IndexError, UnicodeDecodeError, FrameError):
        return None
    if start + size != end or not size:
        return None
    return stream_id, seq & _U32_MAX, memoryview(data)[start:end]


def decode_frame(data: bytes | bytearray | memoryview) -> Frame:
    """Decode one `RelayMessageFrame` as prost would.

    Raises:
        FrameError: the bytes are not a valid frame, or no `body` member is present
            (`"missing body"`).
    """
    envelope = _canonical_envelope(data)
    if envelope is not None and envelope[1] is Kind.DATA:
        stream_id, _, start, end = envelope
        body = _canonical_data(data, start, end)
        if body is not None:
            return Frame(stream_id=stream_id, body=body)
    return _decode_frame(data)


def _decode_frame(data: bytes | bytearray | memoryview) -> Frame:
    """`decode_frame()` for any layout."""
    end = len(data)
    pos = 0
    version = ack = ack_bits = 0
    stream_id = ""
    body: Body | None = None
    while pos < end:
        tag, wire_type, pos = _read_key(data, pos, end, _FRAME)
        if tag in (1, 3, 4):
            where = f"{_FRAME}.{('version', '', 'ack', 'ack_bits')[tag - 1]}"
            _expect(where, wire_type, _VARINT)
            value, pos = _read_varint(data, pos, end, where)
            value &= _U32_MAX
            if tag == 1:
                version = value
            elif tag == 3:
                ack = value
            else:
                ack_bits = value
        elif tag == 2:
            where = f"{_FRAME}.stream_id"
            _expect(where, wire_type, _LEN)
            start, pos = _read_len(data, pos, end, where)
            stream_id = _utf8(data, start, pos, where)
        elif Kind.DATA <= tag <= Kind.HANDSHAKE:
            kind = Kind(tag)
            where = f"{_FRAME}.{_BODY_FIELD_NAMES[kind]}"
            _expect(where, wire_type, _LEN)
            start, pos = _read_len(data, pos, end, where)
            try:
                body = _merge_body(kind, body, data, start, pos)
            except FrameError as exc:
                raise FrameError(f"{where}: {exc}") from None
        else:
            pos = _skip(data, pos, end, (tag, wire_type), _FRAME)
    if body is None:
        raise FrameError("missing body")
    return Frame(stream_id=stream_id, body=body, version=version, ack=ack, ack_bits=ack_bits)


def peek(data: bytes | bytearray | memoryview) -> Envelope:
    """Read the envelope of a frame (stream id, body kind, version) without copying the
    payload; the body's own fields are not checked.

    Raises:
        FrameError: the envelope is malformed or has no `body` member.
    """
    envelope = _canonical_envelope(data)
    if envelope is not None:
        return Envelope(envelope[0], envelope[1], 1)
    return _peek(data)


def _peek(data: bytes | bytearray | memoryview) -> Envelope:
    """`peek()` for any layout."""
    end = len(data)
    pos = 0
    version = 0
    stream_id = ""
    kind: Kind | None = None
    while pos < end:
        tag, wire_type, pos = _read_key(data, pos, end, _FRAME)
        if tag == 1:
            _expect(f"{_FRAME}.version", wire_type, _VARINT)
            version, pos = _read_varint(data, pos, end, f"{_FRAME}.version")
            version &= _U32_MAX
        elif tag == 2:
            _expect(f"{_FRAME}.stream_id", wire_type, _LEN)
            start, pos = _read_len(data, pos, end, f"{_FRAME}.stream_id")
            stream_id = _utf8(data, start, pos, f"{_FRAME}.stream_id")
        elif Kind.DATA <= tag <= Kind.HANDSHAKE:
            kind = Kind(tag)
            where = f"{_FRAME}.{_BODY_FIELD_NAMES[kind]}"
            _expect(where, wire_type, _LEN)
            pos = _read_len(data, pos, end, where)[1]
        elif tag in (3, 4):
            where = f"{_FRAME}.{'ack' if tag == 3 else 'ack_bits'}"
            _expect(where, wire_type, _VARINT)
            pos = _read_varint(data, pos, end, where)[1]
        else:
            pos = _skip(data, pos, end, (tag, wire_type), _FRAME)
    if kind is None:
        raise FrameError("missing body")
    return Envelope(stream_id, kind, version)


__all__ = [
    "Ack",
    "Body",
    "Data",
    "Envelope",
    "Frame",
    "FrameError",
    "Handshake",
    "Heartbeat",
    "Kind",
    "Reset",
    "Resume",
    "decode_frame",
    "encode_data",
    "encode_frame",
    "encode_reset",
    "peek",
    "read_data",
]
