"""Hypothesis strategies of relay frames that are wrong in every way a peer can be wrong: valid
frames of any kind, then bytes flipped, cut, extended or spliced; protobuf made of random
fields (any number, any wire type, lying lengths, groups, over-long and overflowing varints);
random or blank or huge stream ids; text instead of binary; and, for a harness that holds a
stream, real records out of place (wrong seq, tampered, oversized).

A generated `Move` is a recipe: `render(move, ctx)` turns it into the bytes (or text) of one
WebSocket message, given what the sender knows at that moment (its stream id, a valid msg1,
an established stream's sealer). Used by tests/relay/test_relay_fuzz.py.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import strategies as st

from execserver.relay.frames import (
    Ack,
    Body,
    Data,
    Frame,
    Handshake,
    Heartbeat,
    Reset,
    Resume,
    encode_frame,
)

# -- raw protobuf ---------------------------------------------------------------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


@dataclass(frozen=True)
class Field:
    """One protobuf field as written, whatever the schema says: `length` (for wire type 2)
    may lie, `value` may need more than 64 bits, wire types 6 and 7 do not exist."""

    number: int
    wire_type: int
    value: int = 0
    data: bytes = b""
    length: int | None = None

    def encode(self) -> bytes:
        key = varint(self.number << 3 | self.wire_type)
        if self.wire_type == 0:
            return key + varint(self.value)
        if self.wire_type == 1:
            return key + (self.value & (2**64 - 1)).to_bytes(8, "little")
        if self.wire_type == 5:
            return key + (self.value & (2**32 - 1)).to_bytes(4, "little")
        if self.wire_type == 2:
            length = len(self.data) if self.length is None else self.length
            return key + varint(length) + self.data
        return key + self.data  # groups (3, 4) and the invalid 6, 7: whatever follows


field_numbers = st.one_of(
    st.integers(1, 12), st.integers(13, 2**29 - 1), st.sampled_from([0, 2**29 - 1])
)
huge_ints = st.one_of(
    st.integers(0, 2**32 + 5), st.integers(2**63, 2**64 + 5), st.integers(2**64, 2**80)
)


@st.composite
def fields(draw: st.DrawFn, depth: int = 0) -> Field:
    wire_type = draw(st.integers(0, 7))
    number = draw(field_numbers)
    if wire_type == 2:
        if depth < 2 and draw(st.booleans()):
            inner = b"".join(f.encode() for f in draw(st.lists(fields(depth + 1), max_size=4)))
        else:
            inner = draw(st.binary(max_size=64))
        length = draw(st.none() | st.integers(0, 2**35))
        return Field(number, 2, data=inner, length=length)
    if wire_type in (3, 4, 6, 7):
        return Field(number, wire_type, data=draw(st.binary(max_size=8)))
    return Field(number, wire_type, value=draw(huge_ints))


raw_protobuf = st.lists(fields(), min_size=1, max_size=8).map(
    lambda fs: b"".join(f.encode() for f in fs)
)
overlong_varints = st.builds(
    lambda number, count, last: varint(number << 3) + b"\xff" * count + bytes((last,)),
    st.sampled_from([1, 2, 3, 4, 5, 10]),
    st.integers(9, 14),
    st.integers(0, 0x7F),
)


# -- byte mutations -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mutation:
    kind: str  # "none", "flip", "truncate", "extend", "splice", "drop"
    position: int = 0
    data: bytes = b""

    def apply(self, message: bytes) -> bytes:
        if self.kind == "none" or not message:
            return message
        index = self.position % len(message)
        if self.kind == "flip":
            mask = self.data[0] if self.data and self.data[0] else 1
            return message[:index] + bytes((message[index] ^ mask,)) + message[index + 1 :]
        if self.kind == "truncate":
            return message[:index]
        if self.kind == "extend":
            return message + self.data
        if self.kind == "splice":
            return message[:index] + self.data + message[index:]
        return message[:index] + message[index + 1 :]  # drop one byte


mutations = st.one_of(
    st.just(Mutation("none")),
    st.builds(
        Mutation,
        st.sampled_from(["flip", "truncate", "extend", "splice", "drop"]),
        st.integers(0, 2**16),
        st.binary(min_size=1, max_size=16),
    ),
)


# -- moves ----------------------------------------------------------------------------------------


@dataclass
class Context:
    """What the sender knows when a move is rendered."""

    stream_id: str
    message1: Callable[[], bytes]
    """A fresh valid msg1 for `stream_id` (with the bundle's authorization)."""
    seal: Callable[[bytes], list[tuple[int, bytes]]] | None = None
    """An established stream's sealer (None before the handshake)."""
    other_ids: list[str] = field(default_factory=list)
    """Stream ids other parties hold (a sender may try them)."""


@dataclass(frozen=True)
class Move:
    """One message to send: a body of `kind` for the stream `target`, with `params`, as bytes
    mutated by `mutation`; or, for kind "raw"/"text", the given bytes or text."""

    kind: str
    target: str = "own"  # "own", "other", "random", "blank", "huge"
    version: int = 1
    ack: int = 0
    ack_bits: int = 0
    number: int = 0
    payload: bytes = b""
    text: str = ""
    mutation: Mutation = Mutation("none")

    def __repr__(self) -> str:  # short, for failure reports
        extra = f" {len(self.payload)}B" if self.payload else ""
        return f"Move({self.kind} {self.target} v{self.version}{extra} {self.mutation.kind})"


def stream_id_of(move: Move, ctx: Context) -> str:
    """The stream id a frame move is for (before any mutation)."""
    if move.target == "own":
        return ctx.stream_id
    if move.target == "other" and ctx.other_ids:
        return ctx.other_ids[move.number % len(ctx.other_ids)]
    if move.target == "blank":
        return " \t"[: move.number % 3]
    if move.target == "huge":
        return "s" * (1000 + move.number % 4000)
    return str(uuid.UUID(int=move.number % 2**128))


def _request(number: int) -> bytes:
    return json.dumps({"id": 10_000 + number, "method": "environment/info", "params": {}}).encode()


def render(move: Move, ctx: Context) -> bytes | str:
    """The WebSocket message of `move` (str: a text message)."""
    if move.kind == "text":
        return move.text
    if move.kind == "raw":
        return move.mutation.apply(move.payload)
    stream_id = stream_id_of(move, ctx)
    body: Body
    if move.kind == "resume":
        body = Resume(move.number % 2**32)
    elif move.kind == "handshake":
        body = Handshake(move.payload or b"\x00")
    elif move.kind == "handshake_valid":
        body = Handshake(ctx.message1())
    elif move.kind == "data":
        body = Data(move.number % 2**32, move.payload, segment_count=1)
    elif move.kind == "data_segment":
        body = Data(0, move.payload or b"p", segment_index=move.number % 3, segment_count=move.ack)
    elif move.kind == "record" and ctx.seal is not None:
        records = ctx.seal(_request(move.number))
        seq, ciphertext = records[0]
        # A record at its own seq, a later one (a gap), or a replay of seq 0.
        seq = (seq, seq + move.number % 80, 0)[move.ack % 3]
        body = Data(seq, ciphertext, segment_count=1)
    elif move.kind == "record":
        body = Data(move.number % 70, move.payload or b"r", segment_count=1)
    elif move.kind == "reset":
        body = Reset(move.text or "x")
    elif move.kind == "ack":
        body = Ack()
    else:
        body = Heartbeat()
    frame = Frame(stream_id, body, move.version, move.ack % 2**32, move.ack_bits % 2**32)
    return move.mutation.apply(encode_frame(frame))


u32ish = st.one_of(st.integers(0, 3), st.integers(0, 2**32 - 1))
targets = st.sampled_from(["own", "own", "own", "other", "random", "blank", "huge"])


def _frame_move(
    kind: str, *, wild: bool, **overrides: st.SearchStrategy[object]
) -> st.SearchStrategy[Move]:
    """A move of `kind`: well-formed for its own stream, or (`wild`) with any envelope and
    its bytes mutated."""
    parts: dict[str, st.SearchStrategy[object]] = {"number": st.integers(0, 2**130)}
    if wild:
        parts |= {
            "target": targets,
            "version": st.sampled_from([1, 1, 1, 0, 2, 2**32 - 1]),
            "ack": u32ish,
            "ack_bits": u32ish,
            "mutation": mutations,
        }
    parts.update(overrides)
    return st.builds(Move, st.just(kind), **parts)


def _frame_moves(wild: bool) -> st.SearchStrategy[Move]:
    return st.one_of(
        _frame_move("resume", wild=wild),
        _frame_move("handshake", wild=wild, payload=st.binary(max_size=4000)),
        _frame_move("handshake_valid", wild=wild),
        _frame_move("data", wild=wild, payload=st.binary(max_size=300)),
        _frame_move(
            "data_segment", wild=wild, payload=st.binary(max_size=32), ack=st.integers(0, 3)
        ),
        _frame_move("record", wild=wild, payload=st.binary(max_size=64), ack=st.integers(0, 5)),
        _frame_move("reset", wild=wild, text=st.text(min_size=1, max_size=20)),
        _frame_move("ack", wild=wild),
        _frame_move("heartbeat", wild=wild),
    )


moves: st.SearchStrategy[Move] = st.one_of(
    _frame_moves(wild=False),
    _frame_moves(wild=False),
    _frame_moves(wild=True),
    st.builds(Move, st.just("raw"), payload=raw_protobuf, mutation=mutations),
    st.builds(Move, st.just("raw"), payload=overlong_varints),
    st.builds(Move, st.just("raw"), payload=st.binary(max_size=200)),
)
"""Binary moves: frames well-formed for the sender's own stream (a protocol step out of
place), frames with any envelope and mutated bytes, and protobuf or bytes of garbage."""

text_moves = st.builds(Move, st.just("text"), text=st.text(max_size=40))
"""A text WebSocket message (the relay closes a socket that sends one)."""
