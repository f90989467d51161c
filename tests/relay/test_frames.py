"""The RelayMessageFrame codec: golden bytes (RELAY.md §4), prost's decoding rules, round trips."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from execserver.relay import frames
from execserver.relay.frames import (
    Ack,
    Body,
    Data,
    Envelope,
    Frame,
    FrameError,
    Handshake,
    Heartbeat,
    Kind,
    Reset,
    Resume,
    decode_frame,
    encode_data,
    encode_frame,
    encode_reset,
    peek,
    read_data,
)

SID = "65af7fd3-ad8c-4f1a-be0b-17fe69329d1a"
SID_FIELD = b"\x12\x24" + SID.encode()
HEAD = b"\x08\x01" + SID_FIELD


def varint(value: int) -> bytes:
    """An independent varint encoder (the oracle for these tests)."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_len(tag: int, value: bytes) -> bytes:
    return varint(tag << 3 | 2) + varint(len(value)) + value


def field_varint(tag: int, value: int) -> bytes:
    return varint(tag << 3) + varint(value)


def split_fields(data: bytes) -> list[bytes]:
    """The top-level fields of an encoded frame, each as its raw bytes."""
    fields = []
    pos = 0
    while pos < len(data):
        start = pos
        key = 0
        shift = 0
        while True:
            byte = data[pos]
            pos += 1
            key |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        if key & 7 == 0:
            while data[pos] & 0x80:
                pos += 1
            pos += 1
        else:
            length = 0
            shift = 0
            while True:
                byte = data[pos]
                pos += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if byte < 0x80:
                    break
            pos += length
        fields.append(data[start:pos])
    return fields


# --- golden bytes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (Frame(SID, Resume()), HEAD + b"\x3a\x00"),
        (Frame(SID, Data(0, b"abc")), HEAD + b"\x2a\x07\x18\x01\x22\x03abc"),
        (Frame(SID, Data(5, b"abc")), HEAD + b"\x2a\x09\x08\x05\x18\x01\x22\x03abc"),
        (Frame(SID, Data(300, b"x")), HEAD + b"\x2a\x08\x08\xac\x02\x18\x01\x22\x01x"),
        (
            Frame(SID, Reset("noise_relay_protocol_error")),
            HEAD + b"\x42\x1c\x0a\x1anoise_relay_protocol_error",
        ),
        (Frame(SID, Handshake(b"\x01\x02")), HEAD + b"\x52\x04\x0a\x02\x01\x02"),
        (Frame(SID, Ack()), HEAD + b"\x32\x00"),
        (Frame(SID, Heartbeat()), HEAD + b"\x4a\x00"),
        (Frame(SID, Resume(), ack=1, ack_bits=2), HEAD + b"\x18\x01\x20\x02\x3a\x00"),
        (Frame(SID, Resume(), version=0), SID_FIELD + b"\x3a\x00"),
        (Frame("", Ack(), version=0), b"\x32\x00"),
    ],
    ids=[
        "resume",
        "data-seq0",
        "data-seq5",
        "data-seq300",
        "reset",
        "handshake",
        "ack",
        "heartbeat",
        "acks",
        "version0",
        "empty",
    ],
)
def test_frames_encode_golden_bytes(frame: Frame, expected: bytes) -> None:
    """Encoding omits defaults and writes fields in number order, byte for byte like prost."""
    assert encode_frame(frame) == expected
    assert decode_frame(expected) == frame


def test_frames_resume_frame_matches_relay_md() -> None:
    """The resume frame of RELAY.md §4: `08 01 12 24 <36-byte uuid> 3a 00`."""
    encoded = encode_frame(Frame(SID, Resume()))
    assert encoded.hex(" ")[:11] == "08 01 12 24"
    assert encoded[4:40] == SID.encode()
    assert encoded[40:] == b"\x3a\x00"


def test_frames_fast_encoders_match_the_general_one() -> None:
    """encode_data and encode_reset produce exactly encode_frame's bytes."""
    for seq in (0, 1, 127, 128, 16383, 16384, 2**21, 2**32 - 1):
        for size in (0, 1, 127, 128, 16383, 16384, 61456):
            payload = b"p" * size
            assert encode_data(SID, seq, payload) == encode_frame(Frame(SID, Data(seq, payload)))
    assert encode_reset(SID, "harness_disconnected") == encode_frame(
        Frame(SID, Reset("harness_disconnected"))
    )


@pytest.mark.parametrize(
    "frame",
    [
        Frame(SID, Data(2**32, b"x")),
        Frame(SID, Data(0, b"x", segment_count=-1)),
        Frame(SID, Resume(), version=2**32),
        Frame(SID, Resume(next_seq=-1)),
    ],
)
def test_frames_encode_refuses_values_outside_uint32(frame: Frame) -> None:
    """A value outside uint32 cannot be encoded."""
    with pytest.raises(FrameError, match="out of range for uint32"):
        encode_frame(frame)


# --- prost's decoding rules -------------------------------------------------------------------


def test_frames_decode_accepts_fields_in_any_order() -> None:
    """Fields may come in any order; the body may precede the stream id and version."""
    data = field_len(5, field_varint(1, 7) + field_len(4, b"p")) + SID_FIELD + b"\x08\x01"
    assert decode_frame(data) == Frame(SID, Data(7, b"p", segment_count=0))


def test_frames_decode_skips_unknown_fields_of_every_wire_type() -> None:
    """Unknown fields (varint, fixed64, length-delimited, group, fixed32) are skipped."""
    unknown = (
        field_varint(11, 99)
        + varint(12 << 3 | 1)
        + b"\x00" * 8
        + field_len(13, b"junk")
        + varint(14 << 3 | 3)
        + field_varint(1, 5)
        + varint(15 << 3 | 3)
        + varint(15 << 3 | 4)
        + varint(14 << 3 | 4)
        + varint(16 << 3 | 5)
        + b"\x00" * 4
    )
    inner_unknown = field_varint(9, 1)
    data = unknown + HEAD + field_len(7, inner_unknown) + unknown
    assert decode_frame(data) == Frame(SID, Resume())
    assert peek(data) == Envelope(SID, Kind.RESUME, 1)


def test_frames_decode_unknown_body_member_is_missing_body() -> None:
    """Field 11 is not a body member: such a frame has no body (the executor says so too)."""
    with pytest.raises(FrameError, match=r"^missing body$"):
        decode_frame(HEAD + field_len(11, b""))
    with pytest.raises(FrameError, match=r"^missing body$"):
        peek(HEAD)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            HEAD + field_len(5, field_len(3, b"x")),
            "RelayData.segment_count: invalid wire type: LengthDelimited (expected Varint)",
        ),
        (
            HEAD + field_varint(5, 1),
            "RelayMessageFrame.data: invalid wire type: Varint (expected LengthDelimited)",
        ),
        (
            field_len(1, b"\x01") + SID_FIELD + b"\x3a\x00",
            "RelayMessageFrame.version: invalid wire type: LengthDelimited (expected Varint)",
        ),
        (
            b"\x08\x01" + field_varint(2, 5) + b"\x3a\x00",
            "RelayMessageFrame.stream_id: invalid wire type: Varint (expected LengthDelimited)",
        ),
        (
            HEAD + field_len(8, field_varint(1, 3)),
            "RelayReset.reason: invalid wire type: Varint (expected LengthDelimited)",
        ),
        (
            HEAD + field_len(10, field_varint(1, 3)),
            "RelayHandshake.payload: invalid wire type: Varint (expected LengthDelimited)",
        ),
    ],
)
def test_frames_decode_rejects_wrong_wire_types(data: bytes, message: str) -> None:
    """A known field with the wrong wire type is an error naming the field."""
    with pytest.raises(FrameError, match=message.replace("(", r"\(").replace(")", r"\)")):
        decode_frame(data)


@pytest.mark.parametrize(
    "data",
    [
        b"\x08" + b"\xff" * 10 + b"\x01",  # eleven bytes
        b"\x08" + b"\xff" * 9 + b"\x02",  # tenth byte above 1
        b"\x08\xff",  # truncated
        b"\xff" * 10 + b"\x01",  # the key itself
    ],
)
def test_frames_decode_rejects_varint_overflow(data: bytes) -> None:
    """A varint longer than ten bytes, overflowing 64 bits, or cut short is an error."""
    with pytest.raises(FrameError, match="invalid varint"):
        decode_frame(data)
    with pytest.raises(FrameError, match="invalid varint"):
        peek(data)


def test_frames_decode_truncates_uint32_like_prost() -> None:
    """uint32 fields keep the low 32 bits of a wider varint (prost casts with `as u32`)."""
    data = b"\x08" + varint(2**32 + 1) + SID_FIELD + field_len(7, b"\x08" + varint(2**64 - 1))
    assert decode_frame(data) == Frame(SID, Resume(next_seq=2**32 - 1), version=1)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x08\x01\x12\x05ab", "buffer underflow"),
        (b"\x00\x01", "invalid tag value: 0"),
        (b"\x0e", "invalid wire type value: 6"),
        (b"\x0f", "invalid wire type value: 7"),
        (varint(11 << 3 | 4), "unexpected end group tag"),
        (varint(11 << 3 | 3) + varint(12 << 3 | 4), "unexpected end group tag"),
        (varint(11 << 3 | 3), "buffer underflow"),
        (varint(11 << 3 | 1) + b"\x00" * 7, "buffer underflow"),
        (varint(11 << 3 | 5) + b"\x00" * 3, "buffer underflow"),
        (varint(2**33), "invalid key value"),
        (b"\x08\x01" + field_len(2, b"\xff\xfe") + b"\x3a\x00", "not UTF-8"),
        (HEAD + field_len(8, field_len(1, b"\xc3")), "not UTF-8"),
    ],
)
def test_frames_decode_rejects_malformed_input(data: bytes, message: str) -> None:
    """Truncation, tag 0, wire types 6/7, stray end groups, bad keys and bad UTF-8 fail."""
    with pytest.raises(FrameError, match=message):
        decode_frame(data)


def test_frames_decode_survives_deeply_nested_groups() -> None:
    """A frame made of nested groups is refused at the depth limit, never by recursion."""
    depth = 100_000
    data = varint(11 << 3 | 3) * depth + varint(11 << 3 | 4) * depth + HEAD + b"\x3a\x00"
    with pytest.raises(FrameError, match="recursion limit"):
        decode_frame(data)
    with pytest.raises(FrameError, match="recursion limit"):
        peek(data)
    shallow = varint(11 << 3 | 3) * 50 + varint(11 << 3 | 4) * 50 + HEAD + b"\x3a\x00"
    assert decode_frame(shallow) == Frame(SID, Resume())


def test_frames_decode_last_scalar_wins() -> None:
    """A repeated scalar field keeps its last value."""
    data = b"\x08\x02" + field_len(2, b"first") + HEAD + b"\x18\x07\x18\x00\x3a\x00"
    assert decode_frame(data) == Frame(SID, Resume(), version=1, ack=0)


def test_frames_decode_merges_a_repeated_body_member() -> None:
    """The same body member twice merges (prost); a different member replaces it."""
    first = field_len(5, field_varint(1, 5) + field_varint(3, 1))
    second = field_len(5, field_len(4, b"abc"))
    assert decode_frame(HEAD + first + second) == Frame(SID, Data(5, b"abc"))
    replaced = HEAD + first + field_len(8, field_len(1, b"bye"))
    assert decode_frame(replaced) == Frame(SID, Reset("bye"))
    back = HEAD + field_len(8, field_len(1, b"bye")) + second
    assert decode_frame(back) == Frame(SID, Data(0, b"abc", segment_count=0))


def test_frames_decode_defaults_of_absent_fields_are_zero() -> None:
    """Absent scalars decode as proto3 defaults (version 0, segment_count 0, empty reason)."""
    assert decode_frame(b"\x2a\x00") == Frame("", Data(0, b"", segment_count=0), version=0)
    assert decode_frame(b"\x42\x00") == Frame("", Reset(""), version=0)


def test_frames_peek_reads_only_the_envelope() -> None:
    """peek() reports stream id, kind and version and does not validate the body's fields."""
    garbage_body = field_len(5, b"\xff\xff")  # not a valid RelayData
    assert peek(HEAD + garbage_body) == Envelope(SID, Kind.DATA, 1)
    with pytest.raises(FrameError):
        decode_frame(HEAD + garbage_body)
    assert peek(b"\x08\x02" + SID_FIELD + b"\x52\x00") == Envelope(SID, Kind.HANDSHAKE, 2)


def test_frames_decode_accepts_memoryview_and_bytearray() -> None:
    """Any bytes-like input decodes the same."""
    data = encode_frame(Frame(SID, Data(3, b"xyz")))
    assert decode_frame(memoryview(data)) == decode_frame(bytearray(data)) == decode_frame(data)
    assert peek(memoryview(data)) == peek(data)


# --- round trips ------------------------------------------------------------------------------

U32 = st.integers(min_value=0, max_value=2**32 - 1)
BODIES: st.SearchStrategy[Body] = st.one_of(
    st.builds(Data, seq=U32, payload=st.binary(max_size=64), segment_index=U32, segment_count=U32),
    st.just(Ack()),
    st.builds(Resume, next_seq=U32),
    st.builds(Reset, reason=st.text(max_size=32)),
    st.just(Heartbeat()),
    st.builds(Handshake, payload=st.binary(max_size=64)),
)
FRAMES = st.builds(
    Frame, stream_id=st.text(max_size=40), body=BODIES, version=U32, ack=U32, ack_bits=U32
)


@given(FRAMES)
def test_frames_round_trip(frame: Frame) -> None:
    """decode(encode(frame)) == frame, and peek agrees with decode."""
    data = encode_frame(frame)
    assert decode_frame(data) == frame
    kind = {Data: Kind.DATA, Ack: Kind.ACK, Resume: Kind.RESUME, Reset: Kind.RESET}.get(
        type(frame.body), Kind.HEARTBEAT if isinstance(frame.body, Heartbeat) else Kind.HANDSHAKE
    )
    assert peek(data) == Envelope(frame.stream_id, kind, frame.version)


@given(FRAMES, st.randoms(use_true_random=False), st.lists(st.integers(17, 2**29 - 1), max_size=3))
def test_frames_round_trip_in_any_order_with_unknown_fields(
    frame: Frame, rng: random.Random, unknown_tags: list[int]
) -> None:
    """Permuted fields with unknown fields interleaved decode to the same frame."""
    fields = split_fields(encode_frame(frame))
    fields += [field_len(tag, b"?") for tag in unknown_tags]
    rng.shuffle(fields)
    assert decode_frame(b"".join(fields)) == frame


def _outcome(function: object, data: bytes) -> object:
    try:
        return function(data)  # type: ignore[operator]
    except FrameError as exc:
        return ("FrameError", str(exc))


@given(
    FRAMES,
    st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), max_size=3),
    st.integers(0, 2**16),
)
def test_frames_fast_paths_agree_with_the_general_decoders(
    frame: Frame, flips: list[tuple[int, int]], cut: int
) -> None:
    """The canonical-layout fast paths of decode_frame() and peek() give exactly what the
    general decoders give (frame, envelope or error), on encoder output and on mangled
    copies of it (bytes changed, the end cut off)."""
    data = encode_frame(frame)
    variants = [data, data[: cut % (len(data) + 1)]]
    mangled = bytearray(data)
    for position, value in flips:
        mangled[position % len(mangled)] = value
    variants.append(bytes(mangled))
    for variant in variants:
        assert _outcome(decode_frame, variant) == _outcome(frames._decode_frame, variant)
        assert _outcome(peek, variant) == _outcome(frames._peek, variant)


@pytest.mark.parametrize(
    "data",
    [
        encode_data(SID, 0, b""),
        encode_data(SID, 2**32 - 1, b"x" * 300),
        encode_reset(SID, "harness_disconnected"),
        HEAD + b"\x2a\x02\x08\x01\x08\x02",  # a repeated seq: the general path (last wins)
        HEAD + b"\x2a\x02\x18\x01" + b"\x08\x01",  # a field after the body
        b"\x08\x01\x12\x02\xff\xfe\x2a\x00",  # a stream id that is not UTF-8
        b"\x08\x01\x12\x80\x01" + b"s" * 128 + b"\x2a\x00",  # a two-byte id length
        HEAD + b"\x2a\x0b\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # a 10-byte seq
    ],
)
def test_frames_fast_paths_agree_on_edge_cases(data: bytes) -> None:
    assert _outcome(decode_frame, data) == _outcome(frames._decode_frame, data)
    assert _outcome(peek, data) == _outcome(frames._peek, data)


def _read_data_agrees(data: bytes) -> None:
    """read_data() answers only for what the general decoder reads as a version-1 data
    frame, segment 0 of 1, with a payload, and then gives exactly its fields."""
    fast = read_data(data)
    if fast is None:
        return
    frame = frames._decode_frame(data)
    assert isinstance(frame.body, Data) and frame.version == 1
    assert (frame.body.segment_index, frame.body.segment_count) == (0, 1)
    stream_id, seq, payload = fast
    assert isinstance(payload, memoryview) and payload.obj is data  # a view, not a copy
    assert (stream_id, seq, bytes(payload)) == (frame.stream_id, frame.body.seq, frame.body.payload)
    assert frame.body.payload


DATA_FRAMES = st.builds(
    encode_data, st.text(max_size=40), U32, st.binary(max_size=300)
) | st.builds(encode_frame, FRAMES)


@given(
    DATA_FRAMES,
    st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), max_size=3),
    st.integers(0, 2**16),
)
def test_frames_read_data_agrees_with_the_general_decoder(
    data: bytes, flips: list[tuple[int, int]], cut: int
) -> None:
    mangled = bytearray(data)
    for position, value in flips:
        mangled[position % len(mangled)] = value
    for variant in (data, data[: cut % (len(data) + 1)], bytes(mangled)):
        _read_data_agrees(variant)


def test_frames_read_data_reads_what_the_senders_write() -> None:
    for seq in (0, 1, 127, 128, 16384, 2**32 - 1):
        # Payloads whose length, and the body's, take one, two and three varint bytes.
        for size in (1, 6, 100, 127, 128, 16383, 16384, 61456):
            payload = bytes(range(256)) * (size // 256) + b"r" * (size % 256)
            assert read_data(encode_data(SID, seq, payload)) == (SID, seq, memoryview(payload))
    assert read_data(encode_data(SID, 5, b"")) is None  # no payload: the general path drops it
    assert read_data(encode_reset(SID, "x")) is None
    for data in (
        HEAD + b"\x2a\x0b\x08\x05\x10\x00\x18\x01\x22\x03abc",  # an explicit segment_index
        HEAD + b"\x2a\x07\x08\x05\x18\x02\x22\x01a",  # two segments
    ):
        assert read_data(data) is None
        _read_data_agrees(data)
