"""WebSocket frames on the client side (RFC 6455 §5), without I/O: the hot path of a dialled
socket (relay links carry every record as one frame).

Owns the frame header layout, masking (a client masks every frame with a fresh key from a
pool of `os.urandom` bytes) and `FrameParser`, which cuts the server's byte stream into frames.
websockets' protocol object still does the opening handshake and writes control frames; its
general-purpose parser and serializer cost more copies and more Python per frame (measured in
docs/BENCHMARKS.md, relay mode); here a payload is copied once by the masking, once when a
received frame is cut out of the stream.

```
client_frame(first, payload, masks) -> (header + mask key, masked payload)
FrameParser(max_size).feed(data) -> [(fin, opcode, payload)]  whole frames, in order
```
"""

from __future__ import annotations

import os
import struct
from typing import Final

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets without its C extension
    from websockets.utils import apply_mask

OP_CONT: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA
_DATA_OPCODES: Final = frozenset((OP_CONT, OP_TEXT, OP_BINARY))
_CONTROL_OPCODES: Final = frozenset((OP_CLOSE, OP_PING, OP_PONG))
FIN: Final = 0x80
BINARY_FIN: Final = FIN | OP_BINARY
TEXT_FIN: Final = FIN | OP_TEXT

_MAX_HEADER: Final = 14
"""The longest frame header: 2 bytes, an 8-byte length and a 4-byte mask key."""

_H16 = struct.Struct("!BBH")
_H64 = struct.Struct("!BBQ")
_H16_MASKED = struct.Struct("!BBH4s")
_MASK_POOL_BYTES = 4096


def frame_header(first: int, length: int, mask_bit: int = 0) -> bytes:
    """A frame header without the mask key; `first` is FIN plus the opcode, `mask_bit` 0x80
    for a masked (client) frame."""
    if length < 126:
        return bytes((first, mask_bit | length))
    if length < 65536:
        return _H16.pack(first, mask_bit | 126, length)
    return _H64.pack(first, mask_bit | 127, length)


class MaskSource:
    """Masking keys: four bytes of `os.urandom` each, read a pool at a time (one system call
    per 1024 frames instead of one per frame). `client_frame` takes them."""

    __slots__ = ("_pool", "_pos")

    def __init__(self) -> None:
        self._pool = b""
        self._pos = 0


def client_frame(
    first: int, payload: bytes | bytearray | memoryview, masks: MaskSource
) -> tuple[bytes, bytes]:
    """One masked frame of `payload` (`first` = FIN plus the opcode) with the next key from
    `masks`: its header with the mask key, and the masked payload (the one copy), to be written
    one after the other.

    Every message a dialled socket sends comes through here, so the key and the header of a
    frame under 64 KiB are made inline: with the caches cold, as they are between an executor's
    wake-ups, each call costs about a microsecond (bench/relay_hotpath.py, request cold).
    """
    pos = masks._pos
    pool = masks._pool
    if pos >= len(pool):
        pool = masks._pool = os.urandom(_MASK_POOL_BYTES)
        pos = 0
    masks._pos = pos + 4
    mask = pool[pos : pos + 4]
    size = len(payload)
    if size < 126:
        header = bytes((first, 0x80 | size, *mask))
    elif size < 65536:
        header = _H16_MASKED.pack(first, 0xFE, size, mask)
    else:
        header = frame_header(first, size, 0x80) + mask
    return header, apply_mask(payload, mask)


class FrameProtocolError(Exception):
    """The peer broke RFC 6455 framing: drop the connection."""


class FrameTooLarge(FrameProtocolError):
    """A frame or a fragmented message is longer than the size limit."""


Frame = tuple[bool, int, bytes]
"""(fin, opcode, payload) of one frame, payload unmasked."""
_Header = tuple[int, bool, int, bytes, int]
"""(header size, fin, opcode, mask key or b"", payload length)."""


class FrameParser:
    """Cuts a byte stream into frames: each payload byte is copied once (into its frame's
    payload), however the stream was split into reads.

    Checks what websockets' parser checks: reserved bits, opcodes, the masking direction
    (`masked`: frames must be masked, a server's view; else they must not be), control frames
    unfragmented and at most 125 bytes, and `max_size` for a frame and for the data frames of
    one fragmented message together. Errors raise `FrameProtocolError` (`FrameTooLarge`) and
    the parser must not be fed again.
    """

    __slots__ = (
        "_fragmented",
        "_frame",
        "_head",
        "_masked",
        "_max_size",
        "_message_size",
        "_missing",
        "_parts",
    )

    def __init__(self, *, max_size: int, masked: bool = False) -> None:
        self._max_size = max_size
        self._masked = masked
        self._head = b""  # the start of a header that has not fully arrived
        self._frame: tuple[bool, int, bytes] | None = None  # (fin, opcode, mask) being read
        self._parts: list[bytes] = []
        self._missing = 0
        self._message_size = 0  # data bytes of the fragmented message under way
        self._fragmented = False  # a data frame without FIN came: continuations must follow

    def feed(self, data: bytes) -> list[Frame]:
        """The frames `data` completes, in order."""
        if self._frame is None and not self._head and not self._fragmented and not self._masked:
            # The common read: exactly one whole unmasked data frame, FIN set, under 64 KiB.
            end = len(data)
            if end >= 2 and (data[0] == BINARY_FIN or data[0] == TEXT_FIN):
                length, size = data[1], 2
                if length == 126 and end >= 4:
                    length, size = (data[2] << 8) | data[3], 4
                whole = size + length == end and length <= self._max_size
                if whole and (length < 126 or size == 4):
                    self._message_size = length
                    return [(True, data[0] & 0x0F, data[size:])]
        out: list[Frame] = []
        pos = 0
        end = len(data)
        if self._frame is not None:
            take = min(self._missing, end)
            self._parts.append(data if take == end else data[:take])
            self._missing -= take
            pos = take
            if self._missing:
                return out
            fin, opcode, mask = self._frame
            self._frame = None
            payload = b"".join(self._parts)
            self._parts = []
            out.append((fin, opcode, apply_mask(payload, mask) if mask else payload))
        if self._head:
            # Complete the header from the new bytes (a header is at most 14 bytes).
            held = len(self._head)
            joined = self._head + data[pos : pos + _MAX_HEADER]
            header = self._header(joined, 0, len(joined))
            if header is None:  # still short: all of `data` went into `joined`
                self._head = joined
                return out
            self._head = b""
            pos = self._payload(data, pos + header[0] - held, end, header, out)
        while pos < end:
            header = self._header(data, pos, end)
            if header is None:
                self._head = data[pos:]
                break
            pos = self._payload(data, pos + header[0], end, header, out)
        return out

    def _payload(self, data: bytes, pos: int, end: int, header: _Header, out: list[Frame]) -> int:
        """Take the payload `header` announces from `pos`; returns the position after it."""
        _, fin, opcode, mask, length = header
        stop = pos + length
        if stop <= end:
            payload = data[pos:stop]
            out.append((fin, opcode, apply_mask(payload, mask) if mask else payload))
            return stop
        self._frame = (fin, opcode, mask)
        self._parts = [data[pos:]] if pos < end else []
        self._missing = stop - end
        return end

    def _header(self, data: bytes, pos: int, end: int) -> _Header | None:
        """(header size, fin, opcode, mask key, payload length) of the header at `pos`, or
        None while it is incomplete."""
        if end - pos < 2:
            return None
        first = data[pos]
        second = data[pos + 1]
        if first & 0x70:
            raise FrameProtocolError("reserved bits must be 0")
        opcode = first & 0x0F
        fin = bool(first & FIN)
        masked = bool(second & 0x80)
        if masked != self._masked:
            raise FrameProtocolError("incorrect masking")
        length = second & 0x7F
        size = 2
        if length == 126:
            if end - pos < 4:
                return None
            length = (data[pos + 2] << 8) | data[pos + 3]
            size = 4
        elif length == 127:
            if end - pos < 10:
                return None
            length = int.from_bytes(data[pos + 2 : pos + 10], "big")
            size = 10
        mask = b""
        if masked:
            if end - pos < size + 4:
                return None
            mask = bytes(data[pos + size : pos + size + 4])
            size += 4
        if opcode in _DATA_OPCODES:
            if length > self._max_size:
                raise FrameTooLarge(f"frame of {length} bytes exceeds {self._max_size}")
            if opcode == OP_CONT:
                if not self._fragmented:
                    raise FrameProtocolError("unexpected continuation frame")
                self._message_size += length
                if self._message_size > self._max_size:
                    raise FrameTooLarge(f"message exceeds {self._max_size} bytes")
            elif self._fragmented:
                raise FrameProtocolError("expected a continuation frame")
            else:
                self._message_size = length
            self._fragmented = not fin
        elif opcode in _CONTROL_OPCODES:
            if not fin:
                raise FrameProtocolError("fragmented control frame")
            if length > 125:
                raise FrameProtocolError("control frame too long")
        else:
            raise FrameProtocolError(f"invalid opcode: {opcode}")
        return size, fin, opcode, mask, length
