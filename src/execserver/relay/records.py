"""The relay record layer (RELAY.md §7): JSON-RPC messages <-> encrypted `data` frame payloads.

Owns the per-direction plaintext byte stream, in which each message is `u32_be(len) || bytes`
(1 byte to 64 MiB), its split into records of at most 61440 plaintext bytes encrypted with the
channel's transport ciphers, the `seq` numbering of those records (from 0, one per record, never
past 2^32 - 1), and on the way in the bounded reorder window, in-order decryption and message
reassembly. No I/O: frames are built and parsed by `relay.frames`, sockets live above.

```
RecordSealer.seal(msg) -> [(seq, ciphertext), ...]        one record per 61440 plaintext bytes
RecordOpener.open(seq, ciphertext) -> [msg, ...]          whatever became complete, in order
```

Each direction's `CipherState` belongs to exactly one sealer or opener: its implicit nonce must
stay in step with `seq`. Any `RecordError` from an opener is fatal to the stream (reset it);
the opener refuses further input afterwards.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final, TypeAlias

from execserver.relay.noise import TAG_BYTES, CipherState, NoiseError

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MAX_RECORD_PLAINTEXT",
    "MAX_REORDER_BYTES",
    "MAX_REORDER_FRAMES",
    "MAX_SEQ",
    "REORDER_WINDOW",
    "MessageReassembler",
    "RecordError",
    "RecordOpener",
    "RecordSealer",
]

MAX_RECORD_PLAINTEXT: Final = 61440
"""Largest plaintext per record (ciphertext: + 16-byte tag)."""
MAX_RECORD_CIPHERTEXT: Final = MAX_RECORD_PLAINTEXT + TAG_BYTES
REORDER_WINDOW: Final = 64
"""Largest `seq - next_seq` buffered; one more resets the stream."""
MAX_REORDER_FRAMES: Final = 64
MAX_REORDER_BYTES: Final = 1 << 20
"""Ciphertext bytes buffered ahead of a gap, at most."""
MAX_MESSAGE_BYTES: Final = 64 << 20
"""Largest JSON-RPC message (length prefix) either side accepts."""
MAX_SEQ: Final = 2**32 - 1
"""The last usable record number (`seq` is a protobuf uint32)."""

_U32 = struct.Struct(">I")
_PREFIX = _U32.size

BytesLike: TypeAlias = bytes | bytearray | memoryview


class RecordError(Exception):
    """The record stream is broken (bad seq, window overflow, bad record or length): reset it."""


def _byte_view(data: BytesLike) -> memoryview:
    """A flat byte view of `data`, so lengths and slices count bytes."""
    view = memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    return view


def _check_message_size(size: int) -> None:
    if size == 0:
        raise RecordError("a relayed message cannot be empty")
    if size > MAX_MESSAGE_BYTES:
        raise RecordError(f"message of {size} bytes exceeds {MAX_MESSAGE_BYTES}")


class RecordSealer:
    """Outbound half: frames messages, splits them into records, encrypts, numbers them.

    Args:
        cipher: This direction's send cipher (owned from now on).
        next_seq: The first `seq` to send; 0 on the wire (tests start near the end).
    """

    __slots__ = ("_cipher", "_next_seq")

    def __init__(self, cipher: CipherState, *, next_seq: int = 0) -> None:
        self._cipher = cipher
        self._next_seq = next_seq

    @property
    def next_seq(self) -> int:
        """The `seq` the next record will carry."""
        return self._next_seq

    def seal(self, message: BytesLike) -> list[tuple[int, bytes]]:
        """Encrypt one message into records starting at a record boundary (like the executor).

        Args:
            message: One whole JSON-RPC message (1 byte to 64 MiB).

        Returns:
            `(seq, ciphertext)` per record, in order; send each as one `data` frame.

        Raises:
            RecordError: The message is empty or too large, or `seq` would pass 2^32 - 1.
                Nothing is consumed in that case.
        """
        head = MAX_RECORD_PLAINTEXT - _PREFIX
        seq = self._next_seq
        if type(message) is bytes and 0 < len(message) <= head and seq <= MAX_SEQ:  # common case
            self._next_seq = seq + 1
            return [(seq, self._cipher.encrypt(b"".join((_U32.pack(len(message)), message))))]
        view = _byte_view(message)
        size = len(view)
        _check_message_size(size)
        self._reserve(-(-(size + _PREFIX) // MAX_RECORD_PLAINTEXT))
        encrypt = self._cipher.encrypt
        # Only the first record is assembled (prefix + head); the rest encrypt views of the
        # message in place, so a large message is never copied as a whole.
        records = [(seq, encrypt(b"".join((_U32.pack(size), view[:head]))))]
        for start in range(head, size, MAX_RECORD_PLAINTEXT):
            seq += 1
            records.append((seq, encrypt(view[start : start + MAX_RECORD_PLAINTEXT])))
        self._next_seq = seq + 1
        return records

    def seal_batch(self, messages: Sequence[BytesLike]) -> list[tuple[int, bytes]]:
        """Encrypt several queued messages as one stream, packing records full.

        Cheaper than `seal()` per message when many small messages are waiting: they share
        records, and a message may start in the middle of a record and span the next one,
        which every receiver accepts.

        Raises:
            RecordError: Some message is empty or too large, or `seq` would pass 2^32 - 1.
                Nothing is consumed in that case.
        """
        if len(messages) == 1:
            return self.seal(messages[0])
        parts: list[BytesLike] = []
        for message in messages:
            view = _byte_view(message)
            _check_message_size(len(view))
            parts.append(_U32.pack(len(view)))
            parts.append(view)
        return self._seal_stream(b"".join(parts))

    def _seal_stream(self, stream: bytes) -> list[tuple[int, bytes]]:
        total = len(stream)
        self._reserve(-(-total // MAX_RECORD_PLAINTEXT))
        view = memoryview(stream)
        records = []
        seq = self._next_seq
        encrypt = self._cipher.encrypt
        for start in range(0, total, MAX_RECORD_PLAINTEXT):
            records.append((seq, encrypt(view[start : start + MAX_RECORD_PLAINTEXT])))
            seq += 1
        self._next_seq = seq
        return records

    def _reserve(self, count: int) -> None:
        if self._next_seq + count - 1 > MAX_SEQ:
            raise RecordError("record sequence numbers exhausted")


class MessageReassembler:
    """Cuts a decrypted plaintext stream back into length-prefixed messages.

    A message may span records and a record may hold several messages. The parts of an
    incomplete message are kept as views of their records and joined once (one copy).
    """

    __slots__ = ("_have", "_header", "_need", "_parts")

    def __init__(self) -> None:
        self._header = bytearray()  # a length prefix split across records
        self._parts: list[memoryview] = []
        self._need = 0  # body length of the message being collected; 0 between messages
        self._have = 0

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete message (prefix included)."""
        return len(self._header) + self._have + (_PREFIX if self._need else 0)

    def feed(self, record: bytes, out: list[bytes]) -> None:
        """Consume one decrypted record, appending every message it completes to `out`.

        Raises:
            RecordError: A length prefix is 0 or over 64 MiB.
        """
        end = len(record)
        if not self._need and not self._header and end >= _PREFIX:
            (length,) = _U32.unpack_from(record, 0)
            if length == end - _PREFIX and 0 < length <= MAX_MESSAGE_BYTES:
                out.append(record[_PREFIX:])  # a record of one whole message: nearly all
                return
        pos = 0
        view: memoryview | None = None
        while pos < end:
            if self._need:
                take = min(self._need - self._have, end - pos)
                if view is None:
                    view = memoryview(record)
                self._parts.append(view[pos : pos + take])
                self._have += take
                pos += take
                if self._have == self._need:
                    out.append(b"".join(self._parts))
                    self._parts = []
                    self._need = self._have = 0
                continue
            if self._header or end - pos < _PREFIX:
                take = min(_PREFIX - len(self._header), end - pos)
                self._header += record[pos : pos + take]
                pos += take
                if len(self._header) < _PREFIX:
                    return
                (length,) = _U32.unpack(self._header)
                self._header.clear()
            else:
                (length,) = _U32.unpack_from(record, pos)
                pos += _PREFIX
            if length == 0 or length > MAX_MESSAGE_BYTES:
                raise RecordError(f"relayed message has invalid length {length}")
            if end - pos >= length:
                out.append(record[pos : pos + length])
                pos += length
            else:
                self._need = length


class RecordOpener:
    """Inbound half: reorders records, decrypts them in `seq` order, reassembles messages.

    Args:
        cipher: This direction's receive cipher (owned from now on).
        next_seq: The first `seq` expected; 0 on the wire (tests start near the end).
    """

    __slots__ = ("_cipher", "_failed", "_messages", "_next_seq", "_pending", "_pending_bytes")

    def __init__(self, cipher: CipherState, *, next_seq: int = 0) -> None:
        self._cipher = cipher
        self._next_seq = next_seq
        self._pending: dict[int, BytesLike] = {}
        self._pending_bytes = 0
        self._messages = MessageReassembler()
        self._failed = False

    @property
    def next_seq(self) -> int:
        """The `seq` of the next record to decrypt."""
        return self._next_seq

    @property
    def pending_records(self) -> int:
        """Records buffered ahead of a gap."""
        return len(self._pending)

    @property
    def pending_bytes(self) -> int:
        """Ciphertext bytes buffered ahead of a gap."""
        return self._pending_bytes

    def open(self, seq: int, ciphertext: BytesLike) -> list[bytes]:
        """Accept one record; return the messages completed by it (and by any it unblocked).

        A record already delivered or already buffered is dropped (the first copy wins). A
        record ahead of the next expected one is buffered while within the window.

        Args:
            seq: The record number from the `data` frame.
            ciphertext: The frame payload.

        Returns:
            Complete messages in order (often empty).

        Raises:
            RecordError: `seq` is 65 or more ahead, the reorder buffer is full, a record is
                over 61440 plaintext bytes or does not authenticate, a length prefix is
                invalid, or the opener failed before.
        """
        if self._failed:
            raise RecordError("the record stream already failed")
        try:
            in_order = seq == self._next_seq and not self._pending
            if in_order and len(ciphertext) <= MAX_RECORD_CIPHERTEXT:  # a healthy stream's all
                out: list[bytes] = []
                self._decrypt(ciphertext, out)
                return out
            return self._open(seq, ciphertext)
        except RecordError:
            self._failed = True
            raise

    def _open(self, seq: int, ciphertext: BytesLike) -> list[bytes]:
        if not 0 <= seq <= MAX_SEQ:
            raise RecordError(f"record seq {seq} out of range")
        if len(ciphertext) > MAX_RECORD_CIPHERTEXT:
            raise RecordError(f"record exceeds {MAX_RECORD_PLAINTEXT} plaintext bytes")
        next_seq = self._next_seq
        if seq < next_seq or seq in self._pending:
            return []
        if seq > next_seq:
            if seq - next_seq > REORDER_WINDOW:
                raise RecordError(f"record seq {seq} is beyond the reorder window")
            pending_bytes = self._pending_bytes + len(ciphertext)
            if len(self._pending) >= MAX_REORDER_FRAMES or pending_bytes > MAX_REORDER_BYTES:
                raise RecordError("the record reorder buffer is full")
            self._pending[seq] = ciphertext
            self._pending_bytes = pending_bytes
            return []
        out: list[bytes] = []
        self._decrypt(ciphertext, out)
        pending = self._pending
        while pending and (held := pending.pop(self._next_seq, None)) is not None:
            self._pending_bytes -= len(held)
            self._decrypt(held, out)
        return out

    def _decrypt(self, ciphertext: BytesLike, out: list[bytes]) -> None:
        try:
            record = self._cipher.decrypt(ciphertext)
        except NoiseError as exc:
            raise RecordError(f"record {self._next_seq}: {exc}") from None
        self._next_seq += 1
        self._messages.feed(record, out)
