"""transport.ws_frames against websockets' own frame code (an independent implementation of
RFC 6455): what we build, websockets parses back; what websockets serializes, we parse,
however the byte stream is split; and every framing rule websockets' parser enforces."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from execserver.transport.ws_frames import (
    FIN,
    OP_BINARY,
    OP_TEXT,
    FrameParser,
    FrameProtocolError,
    FrameTooLarge,
    MaskSource,
    client_frame,
)

# Payload lengths at the edges of the three header forms (7-bit, 16-bit, 64-bit length).
EDGE_SIZES = [0, 1, 3, 4, 5, 125, 126, 127, 65535, 65536, 65537, 200_000]


def parse_with_websockets(data: bytes, *, mask: bool) -> list[Frame]:
    """websockets' parser over `data` (mask=True: frames from a client, as a server reads)."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    frames = []
    while reader.buffer:
        parser = Frame.parse(reader.read_exact, mask=mask, max_size=None)
        try:
            while True:
                next(parser)
        except StopIteration as done:
            frames.append(done.value)
    return frames


@pytest.mark.parametrize("size", EDGE_SIZES)
def test_client_frames_parse_as_masked_frames(size: int) -> None:
    payload = os.urandom(size)
    masks = MaskSource()
    binary = b"".join(client_frame(FIN | OP_BINARY, payload, masks))
    text = b"".join(client_frame(FIN | OP_TEXT, memoryview(payload), masks))
    first, second = parse_with_websockets(binary + text, mask=True)
    assert (first.opcode, first.fin, first.data) == (Opcode.BINARY, True, payload)
    assert (second.opcode, second.fin, second.data) == (Opcode.TEXT, True, payload)


def test_mask_keys_differ_from_frame_to_frame() -> None:
    masks = MaskSource()
    frames = [b"".join(client_frame(FIN | OP_BINARY, b"x", masks)) for _ in range(3000)]
    keys = [frame[2:6] for frame in frames]  # crosses the pool refill
    assert all(frame[1] == 0x81 and len(frame) == 7 for frame in frames)
    assert len(set(keys)) > 2900
    assert [frame.data for frame in parse_with_websockets(b"".join(frames), mask=True)] == [
        b"x"
    ] * 3000


def serialize(frames: list[Frame]) -> bytes:
    return b"".join(frame.serialize(mask=False) for frame in frames)


def feed_split(parser: FrameParser, data: bytes, cuts: list[int]) -> list[tuple[bool, int, bytes]]:
    out = []
    previous = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        out.extend(parser.feed(data[previous:cut]))
        previous = cut
    return out


frame_lists = st.lists(
    st.one_of(
        st.builds(
            lambda op, size, fin: Frame(op, os.urandom(size), fin),
            st.sampled_from([Opcode.TEXT, Opcode.BINARY]),
            st.sampled_from(EDGE_SIZES[:-1]) | st.integers(0, 300),
            st.just(True),
        ),
        st.builds(
            lambda op, size: Frame(op, os.urandom(size)),
            st.sampled_from([Opcode.PING, Opcode.PONG]),
            st.integers(0, 125),
        ),
    ),
    max_size=8,
)


@settings(max_examples=150, deadline=None)
@given(frame_lists, st.data())
def test_parser_reads_websockets_frames_split_anywhere(
    frames: list[Frame], data: st.DataObject
) -> None:
    wire = serialize(frames)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=12))
    parsed = feed_split(FrameParser(max_size=1 << 20), wire, cuts)
    assert parsed == [(f.fin, f.opcode.value, f.data) for f in frames]


def test_parser_one_byte_at_a_time_with_fragments_and_interleaved_control() -> None:
    frames = [
        Frame(Opcode.TEXT, b"he", fin=False),
        Frame(Opcode.PING, b"p1"),
        Frame(Opcode.CONT, b"l" * 70_000, fin=False),
        Frame(Opcode.PONG, b""),
        Frame(Opcode.CONT, b"o", fin=True),
        Frame(Opcode.BINARY, b""),
    ]
    wire = serialize(frames)
    parsed = feed_split(FrameParser(max_size=1 << 20), wire, list(range(len(wire))))
    assert parsed == [(f.fin, f.opcode.value, f.data) for f in frames]


def test_masked_frames_when_the_parser_is_a_servers() -> None:
    payload = os.urandom(70_000)
    wire = Frame(Opcode.BINARY, payload).serialize(mask=True)
    assert FrameParser(max_size=1 << 20, masked=True).feed(wire) == [(True, OP_BINARY, payload)]


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (bytes((0x80 | 0x40 | OP_TEXT, 0)), "reserved bits"),
        (bytes((0x80 | 0x3, 0)), "invalid opcode"),
        (bytes((0x80 | 0xB, 0)), "invalid opcode"),
        (Frame(Opcode.TEXT, b"x").serialize(mask=True), "incorrect masking"),
        (bytes((0x00 | 0x9, 0)), "fragmented control frame"),
        (bytes((0x80 | 0x9, 126, 0, 126)) + b"x" * 126, "control frame too long"),
        (bytes((0x80 | 0x0, 1)) + b"x", "unexpected continuation"),
        (
            bytes((0x00 | OP_TEXT, 1)) + b"x" + bytes((0x80 | OP_BINARY, 1)) + b"y",
            "expected a continuation",
        ),
    ],
)
def test_parser_refuses_what_rfc_6455_forbids(wire: bytes, message: str) -> None:
    with pytest.raises(FrameProtocolError, match=message):
        FrameParser(max_size=1 << 20).feed(wire)
    # The same, however the bytes arrive.
    parser = FrameParser(max_size=1 << 20)
    with pytest.raises(FrameProtocolError):
        for i in range(len(wire)):
            parser.feed(wire[i : i + 1])


def test_size_limit_applies_to_a_frame_and_to_a_fragmented_message() -> None:
    limit = 1000
    whole = Frame(Opcode.BINARY, b"x" * limit).serialize(mask=False)
    assert FrameParser(max_size=limit).feed(whole) == [(True, OP_BINARY, b"x" * limit)]
    # Refused on its header, before the payload arrives.
    too_big = Frame(Opcode.BINARY, b"x" * (limit + 1)).serialize(mask=False)
    with pytest.raises(FrameTooLarge):
        FrameParser(max_size=limit).feed(too_big[:4])
    with pytest.raises(FrameTooLarge):  # and when the whole frame comes in one read
        FrameParser(max_size=limit).feed(too_big)
    huge_header = bytes((0x80 | OP_BINARY, 127)) + (1 << 62).to_bytes(8, "big")
    with pytest.raises(FrameTooLarge):
        FrameParser(max_size=limit).feed(huge_header)
    fragments = serialize(
        [Frame(Opcode.BINARY, b"x" * 600, fin=False), Frame(Opcode.CONT, b"x" * 401, fin=True)]
    )
    with pytest.raises(FrameTooLarge, match="message exceeds"):
        FrameParser(max_size=limit).feed(fragments)
    # Control frames in between do not count; a new message starts from zero.
    fine = serialize(
        [
            Frame(Opcode.BINARY, b"x" * 600, fin=False),
            Frame(Opcode.PING, b"x" * 125),
            Frame(Opcode.CONT, b"x" * 400, fin=True),
            Frame(Opcode.BINARY, b"x" * 1000),
        ]
    )
    assert len(FrameParser(max_size=limit).feed(fine)) == 4
