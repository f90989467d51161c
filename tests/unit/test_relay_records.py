"""The relay record layer (relay.records): framing, splitting, reordering and reassembly."""

from __future__ import annotations

import random
import struct

import pytest

from execserver.relay.noise import CipherState
from execserver.relay.records import (
    MAX_MESSAGE_BYTES,
    MAX_RECORD_PLAINTEXT,
    MAX_REORDER_BYTES,
    MAX_SEQ,
    REORDER_WINDOW,
    MessageReassembler,
    RecordError,
    RecordOpener,
    RecordSealer,
)

KEY = bytes(range(32))
FULL_CIPHERTEXT = MAX_RECORD_PLAINTEXT + 16


def pair() -> tuple[RecordSealer, RecordOpener]:
    return RecordSealer(CipherState(KEY)), RecordOpener(CipherState(KEY))


def message(size: int, tag: int = 0) -> bytes:
    return bytes((tag + i) % 251 for i in range(size)) if size < 4096 else bytes([tag]) * size


def deliver(opener: RecordOpener, records: list[tuple[int, bytes]]) -> list[bytes]:
    out: list[bytes] = []
    for seq, ciphertext in records:
        out += opener.open(seq, ciphertext)
    return out


def test_records_constants_match_the_binaries() -> None:
    """61440-byte records, a 64-record / 1 MiB reorder window, 64 MiB messages, u32 seq."""
    assert MAX_RECORD_PLAINTEXT == 61440
    assert REORDER_WINDOW == 64
    assert MAX_REORDER_BYTES == 1 << 20
    assert MAX_MESSAGE_BYTES == 64 << 20
    assert MAX_SEQ == 0xFFFFFFFF


def test_records_small_message_is_one_length_prefixed_record() -> None:
    """A message becomes one record `u32_be(len) || message`, seq from 0."""
    sealer, opener = pair()
    body = b'{"id":1,"method":"initialize"}'
    records = sealer.seal(body)
    assert [seq for seq, _ in records] == [0]
    assert len(records[0][1]) == 4 + len(body) + 16
    assert CipherState(KEY).decrypt(records[0][1]) == struct.pack(">I", len(body)) + body
    assert deliver(opener, records) == [body]
    assert sealer.next_seq == opener.next_seq == 1


@pytest.mark.parametrize(
    ("size", "ciphertext_sizes"),
    [
        (MAX_RECORD_PLAINTEXT - 4, [FULL_CIPHERTEXT]),
        (MAX_RECORD_PLAINTEXT - 3, [FULL_CIPHERTEXT, 1 + 16]),
        (2 * MAX_RECORD_PLAINTEXT - 4, [FULL_CIPHERTEXT, FULL_CIPHERTEXT]),
        (2 * MAX_RECORD_PLAINTEXT, [FULL_CIPHERTEXT, FULL_CIPHERTEXT, 4 + 16]),
        (400_000, [FULL_CIPHERTEXT] * 6 + [400_004 - 6 * MAX_RECORD_PLAINTEXT + 16]),
    ],
)
def test_records_split_at_61440_plaintext_bytes(size: int, ciphertext_sizes: list[int]) -> None:
    """Large messages fill records of exactly 61440 plaintext bytes; the last takes the rest."""
    sealer, opener = pair()
    body = message(size, 7)
    records = sealer.seal(body)
    assert [len(ct) for _, ct in records] == ciphertext_sizes
    assert [seq for seq, _ in records] == list(range(len(ciphertext_sizes)))
    out: list[bytes] = []
    for seq, ciphertext in records[:-1]:
        out += opener.open(seq, ciphertext)
    assert out == []  # nothing is released before the last record arrives
    assert opener.open(*records[-1]) == [body]


def test_records_each_message_starts_a_new_record() -> None:
    """seal() never shares a record between messages; seq runs on across messages."""
    sealer, opener = pair()
    records = sealer.seal(b"one") + sealer.seal(message(70_000)) + sealer.seal(b"three")
    assert [seq for seq, _ in records] == [0, 1, 2, 3]
    assert deliver(opener, records) == [b"one", message(70_000), b"three"]


def test_records_batch_packs_many_messages_into_one_record() -> None:
    """seal_batch() coalesces queued messages; the opener returns them all, in order."""
    sealer, opener = pair()
    bodies = [b'{"id":%d}' % i for i in range(100)]
    records = sealer.seal_batch(bodies)
    assert len(records) == 1
    assert deliver(opener, records) == bodies
    assert sealer.seal_batch([b"alone"]) == [
        (1, CipherState(KEY, nonce=1).encrypt(b"\0\0\0\x05alone"))
    ]


def test_records_batch_messages_span_record_boundaries() -> None:
    """A coalesced stream splits mid-message and even mid-length-prefix; reassembly copes."""
    sealer, opener = pair()
    first = message(MAX_RECORD_PLAINTEXT - 4 - 2, 1)  # its successor's prefix straddles records
    bodies = [first, b"second", message(150_000, 3), b"last"]
    records = sealer.seal_batch(bodies)
    assert [len(ct) for _, ct in records] == [FULL_CIPHERTEXT] * 3 + [211_460 - 3 * 61440 + 16]
    assert CipherState(KEY).decrypt(records[0][1])[-2:] == b"\x00\x00"  # half a prefix
    assert deliver(opener, records) == bodies


def test_records_reassembler_accepts_any_split() -> None:
    """Cutting the plaintext stream anywhere (even byte by byte) yields the same messages."""
    bodies = [b"a", b"bc", message(300, 5), b"{}", message(70_000, 9)]
    stream = b"".join(struct.pack(">I", len(b)) + b for b in bodies)
    rng = random.Random(1234)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(stream)), 30))
        pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        reassembler = MessageReassembler()
        out: list[bytes] = []
        for piece in pieces:
            reassembler.feed(piece, out)
        assert out == bodies
        assert reassembler.buffered == 0
    reassembler = MessageReassembler()
    out = []
    for i in range(len(stream[:400])):
        reassembler.feed(stream[i : i + 1], out)
    assert out == bodies[:4]
    assert reassembler.buffered == 400 - (5 + 6 + 304 + 6)


@pytest.mark.parametrize("length", [0, MAX_MESSAGE_BYTES + 1, 0xFFFFFFFF])
def test_records_invalid_length_prefix_is_an_error(length: int) -> None:
    """A zero or over-64-MiB length prefix breaks the stream, before its body arrives."""
    raw = CipherState(KEY)
    opener = RecordOpener(CipherState(KEY))
    assert opener.open(0, raw.encrypt(struct.pack(">I", 3) + b"abc")) == [b"abc"]
    with pytest.raises(RecordError, match="invalid length"):
        opener.open(1, raw.encrypt(struct.pack(">I", length)))
    with pytest.raises(RecordError, match="already failed"):
        opener.open(2, raw.encrypt(b""))


def test_records_64_mib_length_prefix_is_accepted() -> None:
    """Exactly 64 MiB is a valid length: the opener waits for the body."""
    raw = CipherState(KEY)
    opener = RecordOpener(CipherState(KEY))
    assert opener.open(0, raw.encrypt(struct.pack(">I", MAX_MESSAGE_BYTES) + b"x" * 100)) == []


def test_records_oversized_record_is_an_error() -> None:
    """A record of 61441 plaintext bytes resets the stream."""
    raw = CipherState(KEY)
    opener = RecordOpener(CipherState(KEY))
    with pytest.raises(RecordError, match="61440"):
        opener.open(0, raw.encrypt(struct.pack(">I", 61437) + bytes(61437)))


def test_records_tampered_record_is_an_error() -> None:
    """A record that does not authenticate breaks the stream."""
    sealer, opener = pair()
    ((seq, ciphertext),) = sealer.seal(b"hello")
    tampered = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
    with pytest.raises(RecordError, match="authentication"):
        opener.open(seq, tampered)


def test_records_reorder_within_the_window() -> None:
    """Records arriving out of order are held and released in seq order."""
    sealer, opener = pair()
    records = [r for i in range(10) for r in sealer.seal(b"m%d" % i)]
    shuffled = records[1:]
    random.Random(5).shuffle(shuffled)
    for seq, ciphertext in shuffled:
        assert opener.open(seq, ciphertext) == []
    assert opener.pending_records == 9
    assert opener.open(*records[0]) == [b"m%d" % i for i in range(10)]
    assert opener.pending_records == opener.pending_bytes == 0
    assert opener.next_seq == 10


def test_records_reorder_releases_only_the_contiguous_run() -> None:
    """Closing one gap releases what follows it, up to the next gap."""
    sealer, opener = pair()
    records = [r for i in range(6) for r in sealer.seal(b"m%d" % i)]
    for index in (1, 2, 4, 5):
        assert opener.open(*records[index]) == []
    assert opener.open(*records[0]) == [b"m0", b"m1", b"m2"]
    assert opener.pending_records == 2
    assert opener.open(*records[3]) == [b"m3", b"m4", b"m5"]


def test_records_window_edge_is_64_ahead() -> None:
    """seq - next == 64 is buffered; 65 resets the stream."""
    sealer, opener = pair()
    records = [r for i in range(66) for r in sealer.seal(b"m%d" % i)]
    assert opener.open(*records[64]) == []
    with pytest.raises(RecordError, match="reorder window"):
        opener.open(*records[65])
    with pytest.raises(RecordError):
        opener.open(*records[0])


def test_records_window_moves_with_delivery() -> None:
    """The window is relative to the next expected seq, not to 0."""
    sealer, opener = pair()
    records = [r for i in range(80) for r in sealer.seal(b"m%d" % i)]
    deliver(opener, records[:10])
    assert opener.open(*records[74]) == []
    assert len(deliver(opener, records[10:74])) == 65


def test_records_pending_bytes_are_capped_at_1_mib() -> None:
    """17 full records fit ahead of a gap; the 18th exceeds 1 MiB and resets."""
    sealer, opener = pair()
    records = sealer.seal(message(19 * MAX_RECORD_PLAINTEXT))
    for seq, ciphertext in records[1:18]:
        assert opener.open(seq, ciphertext) == []
    assert opener.pending_bytes == 17 * FULL_CIPHERTEXT
    with pytest.raises(RecordError, match="full"):
        opener.open(*records[18])


def test_records_duplicates_are_dropped() -> None:
    """A delivered seq seen again is ignored; so is a second copy of a buffered one."""
    sealer, opener = pair()
    records = [r for i in range(3) for r in sealer.seal(b"m%d" % i)]
    assert opener.open(*records[0]) == [b"m0"]
    assert opener.open(*records[0]) == []
    assert opener.open(0, b"garbage that would not authenticate") == []
    assert opener.open(*records[2]) == []
    assert opener.open(2, b"a forged second copy") == []
    assert opener.pending_records == 1
    assert opener.open(*records[1]) == [b"m1", b"m2"]


@pytest.mark.parametrize("seq", [-1, MAX_SEQ + 1])
def test_records_seq_out_of_range_is_an_error(seq: int) -> None:
    """seq is a u32."""
    _, opener = pair()
    with pytest.raises(RecordError, match="out of range"):
        opener.open(seq, bytes(20))


def test_records_sealer_refuses_to_pass_the_last_seq() -> None:
    """The last record may carry seq 2^32 - 1; a message needing more is refused whole."""
    sealer = RecordSealer(CipherState(KEY), next_seq=MAX_SEQ - 1)
    with pytest.raises(RecordError, match="exhausted"):
        sealer.seal(message(3 * MAX_RECORD_PLAINTEXT))
    assert sealer.next_seq == MAX_SEQ - 1
    assert [seq for seq, _ in sealer.seal(message(MAX_RECORD_PLAINTEXT))] == [MAX_SEQ - 1, MAX_SEQ]
    with pytest.raises(RecordError, match="exhausted"):
        sealer.seal(b"x")
    with pytest.raises(RecordError, match="exhausted"):
        sealer.seal_batch([b"x", b"y"])


def test_records_opener_accepts_the_last_seq() -> None:
    """A record numbered 2^32 - 1 is still delivered."""
    sealer = RecordSealer(CipherState(KEY), next_seq=MAX_SEQ)
    opener = RecordOpener(CipherState(KEY), next_seq=MAX_SEQ)
    assert deliver(opener, sealer.seal(b"final")) == [b"final"]


@pytest.mark.parametrize("size", [0, MAX_MESSAGE_BYTES + 1])
def test_records_sealer_rejects_empty_and_oversized_messages(size: int) -> None:
    """Messages are 1 byte to 64 MiB; nothing is consumed when one is refused."""
    sealer = RecordSealer(CipherState(KEY))
    body = memoryview(bytearray(size))
    with pytest.raises(RecordError):
        sealer.seal(body)
    with pytest.raises(RecordError):
        sealer.seal_batch([b"ok", body])
    assert sealer.next_seq == 0


@pytest.mark.parametrize("size", [100, 70_000])
def test_records_sealer_accepts_buffer_types(size: int) -> None:
    """bytes, bytearray and memoryview messages seal identically."""
    bodies: dict[str, bytes | bytearray | memoryview] = {
        "bytes": b"x" * size,
        "bytearray": bytearray(b"x" * size),
        "memoryview": memoryview(b"x" * size),
    }
    outputs = {kind: RecordSealer(CipherState(KEY)).seal(body) for kind, body in bodies.items()}
    assert outputs["bytes"] == outputs["bytearray"] == outputs["memoryview"]


def test_records_random_traffic_round_trips() -> None:
    """Random sizes, batching and local reordering always reproduce the message sequence."""
    rng = random.Random(99)
    sealer, opener = pair()
    sent: list[bytes] = []
    records: list[tuple[int, bytes]] = []
    for i in range(60):
        batch = [message(rng.choice([1, 10, 500, 61436, 61437, 90_000]), i + k) for k in range(3)]
        sent += batch
        if rng.random() < 0.5:
            records += sealer.seal_batch(batch)
        else:
            for body in batch:
                records += sealer.seal(body)
    received: list[bytes] = []
    for start in range(0, len(records), 8):
        block = records[start : start + 8]
        rng.shuffle(block)
        received += deliver(opener, block)
    assert received == sent
