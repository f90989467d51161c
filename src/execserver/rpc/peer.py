"""The JSON-RPC peer core for both roles, without I/O (python-websockets' `protocol.py` style).

Whole messages go in (`receive_message`), events come out one at a time (`next_event`), and
outbound messages are returned as bytes by the `encode_*` / `start_call` methods for the I/O
layer to send. `rpc/server.py` and `rpc/client.py` drive it from a `MessageChannel`.

What it owns:
- decoding and classification (the server role with the reference's exact envelope errors, the
  client role leniently, results left raw for one typed decode);
- request ids and the table of pending calls (the client role's, and the server role's few
  server-to-client requests), failed all at once at the end;
- the ordering lane (server role): requests take effect in arrival order, so while a request
  the I/O layer started (`request_started(ordered=True)`) is running, later messages wait in a
  bounded backlog; so do they while `MAX_IN_FLIGHT` requests run or while `congested` (the peer
  is not reading what we send);
- input back-pressure: past `MAX_BACKLOG_*` the core asks the I/O layer to stop reading
  (`reading_paused`) until the backlog is half drained.
"""

from __future__ import annotations

import enum
import itertools
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import msgspec

from execserver.protocol import jsonrpc
from execserver.protocol.jsonrpc import (
    ClientResponse,
    EnvelopeError,
    ErrorObject,
    Notification,
    Request,
    RequestId,
    Response,
)

MAX_BACKLOG_MESSAGES = 1024
MAX_BACKLOG_BYTES = 64 * 1024 * 1024
MAX_IN_FLIGHT = 256
MAX_ABANDONED_CALLS = 1024
"""Calls given up on whose late answers are still recognised (and dropped)."""
"""Running request tasks per connection (mostly long polls); more wait in the backlog."""


class Role(enum.Enum):
    SERVER = "server"
    CLIENT = "client"


class RequestReceived(msgspec.Struct):
    request: Request
    received: float
    """`time.perf_counter()` at arrival when timing is on, else 0."""


class NotificationReceived(msgspec.Struct):
    method: str
    params: Any
    """Decoded JSON (server role) or `msgspec.Raw` (client role)."""


@dataclass(slots=True)
class ResponseReceived:
    """The answer to a pending call of ours."""

    response: Response


@dataclass(slots=True)
class AnswerReceived:
    """The client's answer to a request of ours (server role): its decoded result or error."""

    request_id: int
    result: Any
    error: ErrorObject | None


@dataclass(slots=True)
class ParseFailed:
    """Not a JSON-RPC message: the server role answers it with id -1 and goes on."""

    detail: str


@dataclass(slots=True)
class Violation:
    """The peer broke the protocol: the I/O layer drops the connection."""

    reason: str


Event = (
    RequestReceived
    | NotificationReceived
    | ResponseReceived
    | AnswerReceived
    | ParseFailed
    | Violation
)


class RpcPeer:
    """One side of one JSON-RPC connection (see the module docstring)."""

    def __init__(
        self,
        role: Role,
        *,
        timing: bool = False,
        max_in_flight: int = MAX_IN_FLIGHT,
        max_backlog_messages: int = MAX_BACKLOG_MESSAGES,
        max_backlog_bytes: int = MAX_BACKLOG_BYTES,
    ) -> None:
        self.role = role
        self._timing = timing
        self._max_in_flight = max_in_flight
        self._max_backlog_messages = max_backlog_messages
        self._max_backlog_bytes = max_backlog_bytes
        self._backlog: deque[tuple[bytes, float]] = deque()
        self._backlog_bytes = 0
        self._lane: RequestId | None = None
        self._running: set[RequestId] = set()
        self._ids = itertools.count(1)
        self._pending: set[int] = set()
        self._abandoned: dict[int, None] = {}
        """Calls given up on (oldest first, bounded): a late answer is dropped, not a violation."""
        self.congested = False
        """Set by the I/O layer: the channel is above its high-water mark (server role waits)."""
        self.reading_paused = False
        """Whether the I/O layer should keep the channel's reading paused."""
        self.ended = False
        self._decode = self._decode_request if role is Role.SERVER else self._decode_answer

    # -- inbound -------------------------------------------------------------------------------

    def receive_message(self, data: bytes) -> Event | None:
        """Take one whole inbound message (ignored once the connection has ended).

        Returns its event at once when nothing holds it back (the common case, no queueing);
        otherwise it waits in the backlog for `next_event()`.
        """
        if self.ended:
            return None
        received = time.perf_counter() if self._timing else 0.0
        if (
            not self._backlog
            and self._lane is None
            and not self.congested
            and len(self._running) < self._max_in_flight
        ):  # not held back (`_blocked()`, spelled out: this is every message's path)
            return self._decode(data, received)
        self._backlog.append((data, received))
        self._backlog_bytes += len(data)
        if not self.reading_paused and (
            len(self._backlog) > self._max_backlog_messages
            or self._backlog_bytes > self._max_backlog_bytes
        ):
            self.reading_paused = True
        return None

    @property
    def backlogged(self) -> bool:
        """Messages wait in the backlog (for `next_event()`)."""
        return bool(self._backlog)

    @property
    def waiting(self) -> bool:
        """Messages are held back (by the lane, the in-flight cap or congestion)."""
        return bool(self._backlog) and self._blocked()

    def _blocked(self) -> bool:
        # The client role never starts requests nor sets `congested`: never blocked.
        return self._lane is not None or len(self._running) >= self._max_in_flight or self.congested

    def next_event(self) -> Event | None:
        """The next event that may be handled now, or None (nothing, or held back)."""
        while self._backlog and not self.ended and not self._blocked():
            data, received = self._backlog.popleft()
            self._backlog_bytes -= len(data)
            if self.reading_paused and len(self._backlog) <= self._max_backlog_messages // 2:
                self.reading_paused = False
            event = self._decode(data, received)
            if event is not None:
                return event
        return None

    def _decode_request(self, data: bytes, received: float) -> Event | None:
        """The server role: what a client sends."""
        try:
            message = jsonrpc.decode_message(data)
        except EnvelopeError as exc:
            return ParseFailed(str(exc))
        if type(message) is Request:
            return RequestReceived(message, received)
        if isinstance(message, Notification):
            return NotificationReceived(message.method, message.params)
        assert isinstance(message, ClientResponse)
        # The answer to a server request of ours; any other response is a violation.
        request_id = message.id
        if isinstance(request_id, int) and request_id in self._pending:
            self._pending.discard(request_id)
            return AnswerReceived(request_id, message.result, message.error)
        if isinstance(request_id, int) and request_id in self._abandoned:
            del self._abandoned[request_id]
            return None
        return Violation("a response from the client")

    def _decode_answer(self, data: bytes, received: float) -> Event | None:
        """The client role: what a server sends."""
        try:
            answer = jsonrpc.decode_from_server(data)
        except EnvelopeError as exc:
            return ParseFailed(str(exc))
        if isinstance(answer, Notification):
            return NotificationReceived(answer.method, answer.params)
        request_id = answer.id
        if not isinstance(request_id, int) or request_id not in self._pending:
            return None  # an answer to a call given up on (or never made): dropped
        self._pending.discard(request_id)
        return ResponseReceived(answer)

    # -- the ordering lane (server role) -------------------------------------------------------

    def request_started(self, request_id: RequestId, *, ordered: bool) -> None:
        """The I/O layer runs this request on its own (it did not answer inline). An `ordered`
        one holds back every later message until `request_finished`."""
        self._running.add(request_id)
        if ordered:
            self._lane = request_id

    def request_finished(self, request_id: RequestId) -> None:
        self._running.discard(request_id)
        if self._lane == request_id:
            self._lane = None

    # -- outbound ------------------------------------------------------------------------------

    def start_call(
        self, method: str, params: Any, trace: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """A new request (either role): its id, registered as pending, and its bytes."""
        request_id = next(self._ids)
        self._pending.add(request_id)
        return request_id, jsonrpc.encode_request(request_id, method, params, trace)

    def abandon_call(self, request_id: int) -> None:
        """The caller gave up: a late answer will be dropped."""
        if request_id in self._pending:
            self._pending.discard(request_id)
            self._abandoned[request_id] = None
            if len(self._abandoned) > MAX_ABANDONED_CALLS:
                del self._abandoned[next(iter(self._abandoned))]

    # The envelope encoders themselves (no wrapper frame on every message's path).
    encode_notification = staticmethod(jsonrpc.encode_notification)
    encode_result = staticmethod(jsonrpc.encode_result)
    encode_error = staticmethod(jsonrpc.encode_error)

    # -- the end -------------------------------------------------------------------------------

    def connection_lost(self) -> list[int]:
        """The connection ended: drop the backlog; returns the ids of calls left unanswered."""
        self.ended = True
        self._backlog.clear()
        self._backlog_bytes = 0
        pending = sorted(self._pending)
        self._pending.clear()
        return pending


__all__ = [
    "AnswerReceived",
    "Event",
    "NotificationReceived",
    "ParseFailed",
    "RequestReceived",
    "ResponseReceived",
    "Role",
    "RpcPeer",
    "Violation",
    "msgspec",
]
