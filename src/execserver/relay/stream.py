"""One Noise-encrypted logical stream inside a relay WebSocket: a `MessageChannel`.

Both sides use it once the handshake is done: outbound messages are sealed into records and
sent as `data` frames; inbound `data` frames are reordered, decrypted and cut back into
messages for the receiver (RELAY.md §7). Flow control is the WebSocket's: congestion is the
socket's, and pausing a stream pauses reading the socket (counted, so several paused streams
resume it only when the last one resumes). A record the stream cannot open ends it with a
`reset`; so do `close()` and `abort()` (the relay protocol has no graceful stream close).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from execserver.relay.frames import encode_data, encode_reset
from execserver.relay.noise import NoiseTransport
from execserver.relay.records import RecordError, RecordOpener, RecordSealer
from execserver.transport import held
from execserver.transport.base import MessageReceiver

log = logging.getLogger(__name__)

_FRAMES_PER_WRITE = 4

PROTOCOL_ERROR = "noise_relay_protocol_error"
"""The reset reason the reference executor always sends (RELAY.md §5)."""


class FrameLink(Protocol):
    """What a stream needs from the WebSocket that carries it."""

    def send_frame(self, frame: bytes) -> None: ...

    def send_frames(self, frames: list[bytes]) -> None:
        """Send each of `frames`, in order, written together where the socket allows."""
        ...

    def is_congested(self) -> bool: ...

    def call_when_writable(self, callback: Callable[[], None]) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def stream_ended(self, stream_id: str) -> None:
        """Forget the stream (its slot is free again)."""
        ...


class NoiseStream:
    """See the module docstring. `open(receiver)` starts delivering messages."""

    def __init__(self, link: FrameLink, stream_id: str, keys: NoiseTransport, label: str) -> None:
        self._link = link
        self.stream_id = stream_id
        self.label = label
        self._sealer = RecordSealer(keys.send)
        self._opener = RecordOpener(keys.receive)
        self._receiver: MessageReceiver | None = None
        self._early: list[bytes] = []
        self._held: list[bytes] = []
        """Messages held for one record (transport/held.py)."""
        self._paused = False
        self._ended = False

    def open(self, receiver: MessageReceiver) -> None:
        self._receiver = receiver
        early, self._early = self._early, []
        for message in early:
            if self._ended:
                return
            receiver.message_received(message)

    @property
    def ended(self) -> bool:
        return self._ended

    # -- from the link -------------------------------------------------------------------------

    def data_received(self, seq: int, payload: bytes | memoryview) -> None:
        if self._ended:
            return
        try:
            messages = self._opener.open(seq, payload)
        except RecordError as exc:
            log.debug("relay stream %s: %s", self.stream_id, exc)
            self.abort()
            return
        receiver = self._receiver
        for message in messages:
            if self._ended:
                return
            if receiver is None:
                self._early.append(message)
            else:
                receiver.message_received(message)

    def reset_received(self) -> None:
        """The peer reset the stream (or the relay did on its behalf)."""
        self._end(send_reset=False)

    def link_lost(self) -> None:
        self._end(send_reset=False)

    # -- MessageChannel ------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        if self._ended:
            return
        holders = held.block.holders
        if holders is not None:  # sent when the held_sends() block ends
            if not self._held:
                holders.append(self)
            self._held.append(data)
            return
        try:
            records = self._sealer.seal(data)
        except RecordError as exc:
            self._cannot_send(exc)
            return
        if len(records) == 1:  # nearly every message: one record, one frame
            seq, ciphertext = records[0]
            self._link.send_frame(encode_data(self.stream_id, seq, ciphertext))
        else:
            self._send_records(records)

    def send_held(self) -> None:
        """Send the held messages, packed into as few records as they fit."""
        messages, self._held = self._held, []
        if messages and not self._ended:
            try:
                records = self._sealer.seal_batch(messages)
            except RecordError as exc:
                self._cannot_send(exc)
                return
            self._send_records(records)

    def _cannot_send(self, exc: RecordError) -> None:
        log.warning("relay stream %s: cannot send a message: %s", self.stream_id, exc)
        self.abort()

    def _send_records(self, records: list[tuple[int, bytes]]) -> None:
        stream_id = self.stream_id
        link = self._link
        if len(records) <= _FRAMES_PER_WRITE:
            # A message of a few records (a 64 KiB output chunk is two), or what a block held:
            # written together, one system call.
            link.send_frames([encode_data(stream_id, seq, ct) for seq, ct in records])
        else:  # a large message: frame by frame (measured: grouping it costs the executor)
            for seq, ciphertext in records:
                link.send_frame(encode_data(stream_id, seq, ciphertext))

    def is_congested(self) -> bool:
        return self._link.is_congested()

    def call_when_writable(self, callback: Callable[[], None]) -> None:
        self._link.call_when_writable(callback)

    def pause_reading(self) -> None:
        if not self._paused and not self._ended:
            self._paused = True
            self._link.pause_reading()

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            self._link.resume_reading()

    def close(self) -> None:
        self._end(send_reset=True)

    def abort(self) -> None:
        self._end(send_reset=True)

    def _end(self, *, send_reset: bool) -> None:
        if self._ended:
            return
        if send_reset and self._held:
            self.send_held()  # what was sent before close() goes first
            if self._ended:  # it could not be sealed: aborted already
                return
        self._ended = True
        self.resume_reading()
        if send_reset:
            self._link.send_frame(encode_reset(self.stream_id, PROTOCOL_ERROR))
        self._link.stream_ended(self.stream_id)
        receiver, self._receiver = self._receiver, None
        if receiver is not None:
            receiver.connection_lost()
