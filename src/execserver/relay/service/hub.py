"""The routing table of one relay node: which executor socket carries which registration, and
which harness socket owns which stream.

Rules (RELAY.md §5 "rendezvous obligations"): a harness socket speaks for exactly one stream,
the id of its first frame; that id must not be held by another harness socket of the same
executor (second claim: reset and close), and an executor carries at most
`max_streams_per_executor` of them. Harness frames go to the executor socket named by the
harness's ticket (waiting while its outbox is full); executor frames go to the harness that
owns their stream id (a harness that cannot keep up is closed with 1013). Bytes are forwarded
unchanged; only the envelope is read (`frames.peek`). When either side goes away the other
learns it with a `reset` (the executor even when it had reset the stream itself: frames in
flight may have started it again there; only the harness's own reset settles it).
Everything here runs on the event loop without awaiting between a lookup and its update.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from aiohttp import WSCloseCode, web

from execserver.relay.frames import FrameError, Kind, decode_frame, encode_reset, peek
from execserver.relay.service.defaults import HARNESS_STALL_S, MAX_STREAMS_PER_EXECUTOR
from execserver.relay.service.links import Endpoint, Link
from execserver.relay.service.metrics import TO_EXECUTOR, TO_HARNESS, RelayMetrics
from execserver.relay.service.state import Entry, Registration

log = logging.getLogger(__name__)

FRAME_VERSION: Final = 1
"""As many as a codex executor serves on one socket."""

# Reset reasons the relay writes (1..256 bytes of text; endpoints do not interpret them).
HARNESS_DISCONNECTED: Final = "harness_disconnected"
EXECUTOR_DISCONNECTED: Final = "executor_disconnected"
HARNESS_TOO_SLOW: Final = "harness_too_slow"
STREAM_ID_IN_USE: Final = "stream_id_in_use"
STREAM_LIMIT: Final = "stream_limit"
ONE_STREAM_PER_SOCKET: Final = "one_stream_per_socket"


class ExecutorEnd(Endpoint):
    """The executor side of routes: a socket carrying one registration (`ExecutorLink` on
    this node; in a fleet, a socket on another node as seen from one harness socket here)."""

    environment_id: str
    registration_id: str
    connection_id: str
    harnesses: set[HarnessEnd]
    """Every harness end bound to this executor, streaming or not yet."""
    streams: dict[str, HarnessEnd]
    """Stream id → the harness end that claimed it."""

    def _bind_registration(
        self, environment_id: str, registration_id: str, connection_id: str
    ) -> None:
        self.environment_id = environment_id
        self.registration_id = registration_id
        self.connection_id = connection_id
        self.harnesses = set()
        self.streams = {}

    def harness_released(self, harness: HarnessEnd) -> None:
        """`harness` is no longer bound here (after the hub has reset what it owed)."""


class HarnessEnd(Endpoint):
    """The harness side of a route: a harness socket bound by its ticket to one executor (a
    `HarnessLink` here; in a fleet, a harness socket on another node as seen from the
    executor's node)."""

    role = "harness"
    executor: ExecutorEnd
    stream_id: str | None
    routed: bool
    """Whether `stream_id` is (still) claimed on the executor."""
    owes_reset: bool
    """Whether frames of the stream reached the executor since the harness last reset it:
    then the executor may hold the stream, even after resetting it itself (a handshake
    forwarded before its reset was read starts the stream again there)."""

    def _bind_executor(self, executor: ExecutorEnd) -> None:
        self.executor = executor
        self.stream_id = None
        self.routed = False
        self.owes_reset = False


class ExecutorLink(Link, ExecutorEnd):
    """The socket of one attached executor registration."""

    role = "executor"

    def __init__(
        self,
        ws: web.WebSocketResponse,
        outbox_limit_bytes: int,
        *,
        environment_id: str,
        registration_id: str,
        connection_id: str,
        transport: asyncio.BaseTransport | None = None,
    ) -> None:
        super().__init__(ws, outbox_limit_bytes, transport)
        self._bind_registration(environment_id, registration_id, connection_id)


class HarnessLink(Link, HarnessEnd):
    """A harness socket on this node."""

    role = "harness"

    def __init__(
        self,
        ws: web.WebSocketResponse,
        outbox_limit_bytes: int,
        executor: ExecutorEnd,
        transport: asyncio.BaseTransport | None = None,
    ) -> None:
        super().__init__(ws, outbox_limit_bytes, transport)
        self._bind_executor(executor)


class Hub:
    """The node's sockets and routes."""

    def __init__(
        self,
        metrics: RelayMetrics,
        *,
        max_streams_per_executor: int = MAX_STREAMS_PER_EXECUTOR,
        harness_stall_s: float = HARNESS_STALL_S,
    ) -> None:
        self._metrics = metrics
        self._max_streams = max_streams_per_executor
        self._harness_stall_s = harness_stall_s
        self._executors: dict[str, ExecutorLink] = {}
        self._orphans: set[ExecutorLink] = set()
        """Executor sockets that were replaced and are closing."""

    # --- executors ----------------------------------------------------------------------------

    def executor(self, environment_id: str, registration_id: str) -> ExecutorLink | None:
        """The open socket carrying this registration on this node, if any."""
        link = self._executors.get(environment_id)
        if link is None or link.registration_id != registration_id or link.closing:
            return None
        return link

    def install_executor(self, link: ExecutorLink) -> None:
        """Make `link` the environment's executor socket (its attachment is committed)."""
        previous = self._executors.get(link.environment_id)
        if previous is not None and previous is not link:
            self._retire(previous, "replaced by a newer socket")
        self._executors[link.environment_id] = link

    def remove_executor(self, link: ExecutorLink) -> None:
        """`link`'s socket is over: end every stream routed to it."""
        if self._executors.get(link.environment_id) is link:
            del self._executors[link.environment_id]
        self._orphans.discard(link)
        for harness in list(link.harnesses):
            if harness.routed and harness.stream_id is not None:
                harness.offer(encode_reset(harness.stream_id, EXECUTOR_DISCONNECTED), force=True)
                self._metrics.count(
                    "stream_resets_total", side="harness", reason=EXECUTOR_DISCONNECTED
                )
                harness.routed = False
            harness.request_close(WSCloseCode.GOING_AWAY, flush=True)
        link.streams.clear()

    def on_registration_change(
        self, environment_id: str, entry: Entry[Registration] | None
    ) -> None:
        """Close the local executor socket of a registration that was replaced, or whose
        registration is now carried by another socket (`RelayState` listener)."""
        link = self._executors.get(environment_id)
        if link is None:
            return
        current = None if entry is None else entry.value
        if current is None or current.registration_id != link.registration_id:
            self._retire(link, "registration replaced")
        elif (
            current.attachment is not None
            and current.attachment.connection_id != link.connection_id
        ):
            self._retire(link, "replaced by a newer socket")

    def _retire(self, link: ExecutorLink, why: str) -> None:
        if self._executors.get(link.environment_id) is link:
            del self._executors[link.environment_id]
        self._orphans.add(link)
        log.info(
            "closing executor socket: %s",
            why,
            extra={"environment_id": link.environment_id, "registration_id": link.registration_id},
        )
        self._metrics.count("sockets_closed_total", role="executor", reason="superseded")
        link.request_close(WSCloseCode.OK, flush=True)

    # --- harnesses ----------------------------------------------------------------------------

    def add_harness(self, link: HarnessEnd) -> None:
        link.executor.harnesses.add(link)

    def remove_harness(self, link: HarnessEnd) -> None:
        """`link`'s socket is over: the executor learns its stream ended."""
        link.executor.harnesses.discard(link)
        stream_id = link.stream_id
        if stream_id is None:
            link.executor.harness_released(link)
            return
        log.info(
            "stream closed",
            extra={
                "environment_id": link.executor.environment_id,
                "stream_id": stream_id,
                "close_code": link.peer_close_code,
            },
        )
        holder = link.executor.streams.get(stream_id)
        if link.routed:
            self._release(link)
        # Not when another socket claimed the id since (its stream is not ours to end).
        if (
            link.owes_reset
            and holder in (None, link)
            and link.executor.offer(encode_reset(stream_id, HARNESS_DISCONNECTED), force=True)
        ):
            self._metrics.count("stream_resets_total", side="executor", reason=HARNESS_DISCONNECTED)
        link.executor.harness_released(link)

    def _release(self, link: HarnessEnd) -> None:
        link.routed = False
        if link.stream_id is not None and link.executor.streams.get(link.stream_id) is link:
            del link.executor.streams[link.stream_id]

    def _refuse(self, link: HarnessEnd, stream_id: str, reason: str, code: int) -> None:
        link.offer(encode_reset(stream_id, reason), force=True)
        self._metrics.count("stream_resets_total", side="harness", reason=reason)
        self._metrics.count("sockets_closed_total", role="harness", reason=reason)
        link.request_close(code, flush=True)

    def _claim(self, link: HarnessEnd, stream_id: str) -> bool:
        executor = link.executor
        if stream_id in executor.streams:
            log.warning(
                "refused a second claim of a stream id",
                extra={"environment_id": executor.environment_id, "stream_id": stream_id},
            )
            self._refuse(link, stream_id, STREAM_ID_IN_USE, WSCloseCode.POLICY_VIOLATION)
            return False
        if len(executor.streams) >= self._max_streams:
            self._refuse(link, stream_id, STREAM_LIMIT, WSCloseCode.TRY_AGAIN_LATER)
            return False
        executor.streams[stream_id] = link
        link.stream_id = stream_id
        link.routed = True
        log.info(
            "stream opened",
            extra={"environment_id": executor.environment_id, "stream_id": stream_id},
        )
        return True

    # --- forwarding ---------------------------------------------------------------------------

    def _envelope(self, data: bytes) -> tuple[str, Kind] | None:
        try:
            stream_id, kind, version = peek(data)
        except FrameError:
            self._metrics.count("frames_dropped_total", reason="malformed")
            return None
        if version != FRAME_VERSION:
            self._metrics.count("frames_dropped_total", reason="version")
            return None
        if not stream_id.strip():
            self._metrics.count("frames_dropped_total", reason="blank_stream_id")
            return None
        if kind is Kind.RESET and not _readable(data):
            # A reset ends the stream here, so it must end it at the other side too: one whose
            # body that side cannot decode (a reason that is not UTF-8) would be dropped there
            # and leave the stream open where the relay has forgotten it.
            self._metrics.count("frames_dropped_total", reason="malformed")
            return None
        return stream_id, kind

    def forward_from_harness(self, link: HarnessEnd, data: bytes) -> bool:
        """Forward a message of the harness's own open stream if the executor takes it now;
        False (nothing done) when it needs `from_harness`: a first or a reset frame, anything
        unusual, or an executor that is full."""
        try:
            stream_id, kind, version = peek(data)
        except FrameError:
            return False
        if (
            version != FRAME_VERSION
            or stream_id != link.stream_id
            or not link.routed
            or link.closing
            or kind is Kind.RESET
            or not link.executor.offer(data)
        ):
            return False
        self._forwarded_to_executor(link, data, kind)
        return True

    def _forwarded_to_executor(self, link: HarnessEnd, data: bytes, kind: Kind) -> None:
        link.owes_reset = kind is not Kind.RESET
        self._metrics.frames[TO_EXECUTOR] += 1
        self._metrics.bytes[TO_EXECUTOR] += len(data)
        if kind is Kind.HANDSHAKE:
            self._metrics.handshakes[TO_EXECUTOR] += 1

    def forward_from_executor(self, link: ExecutorEnd, data: bytes) -> bool:
        """Forward a message to the harness that owns its stream if that harness takes it now;
        False (nothing done) when it needs `from_executor`: a reset, anything unusual, or a
        harness that is full."""
        try:
            stream_id, kind, version = peek(data)
        except FrameError:
            return False
        harness = link.streams.get(stream_id)
        if (
            version != FRAME_VERSION
            or harness is None
            or harness.closing
            or kind is Kind.RESET
            or not harness.offer(data)
        ):
            return False
        self._forwarded_to_harness(harness, data, kind)
        return True

    def _forwarded_to_harness(self, harness: HarnessEnd, data: bytes, kind: Kind) -> None:
        self._metrics.frames[TO_HARNESS] += 1
        self._metrics.bytes[TO_HARNESS] += len(data)
        if kind is Kind.HANDSHAKE:
            self._metrics.handshakes[TO_HARNESS] += 1
        elif kind is Kind.RESET:
            self._release(harness)

    async def from_harness(self, link: HarnessEnd, data: bytes) -> None:
        """Route one message a harness sent.

        Cancellation: safe; the message is forwarded or not.
        """
        envelope = self._envelope(data)
        if envelope is None or link.closing:
            return
        stream_id, kind = envelope
        if link.stream_id is None:
            if not self._claim(link, stream_id):
                return
        elif stream_id != link.stream_id:
            link.offer(encode_reset(stream_id, ONE_STREAM_PER_SOCKET), force=True)
            self._metrics.count("frames_dropped_total", reason="second_stream")
            return
        elif not link.routed:
            self._metrics.count("frames_dropped_total", reason="stream_closed")
            return
        if kind is Kind.RESET:
            self._release(link)  # the executor learns it from this very frame
        if not await link.executor.put(data):
            self._metrics.count("frames_dropped_total", reason="executor_gone")
            return
        self._forwarded_to_executor(link, data, kind)

    async def from_executor(self, link: ExecutorEnd, data: bytes) -> None:
        """Route one message an executor sent. A harness that reads slowly holds the executor's
        socket back (its outbox is full: this waits, and the executor's reading with it);
        one that leaves its outbox full for `harness_stall_s` has its stream reset.

        Cancellation: safe; the message is forwarded or not.
        """
        envelope = self._envelope(data)
        if envelope is None:
            return
        stream_id, kind = envelope
        harness = link.streams.get(stream_id)
        if harness is None:
            self._metrics.count("frames_dropped_total", reason="unknown_stream")
            return
        if harness.closing:  # its socket is on its way out; the executor hears of it then
            self._metrics.count("frames_dropped_total", reason="harness_closing")
            return
        if not harness.offer(data) and not await self._wait_for_room(harness, data):
            # The harness stopped reading: end its stream rather than hold every other one.
            log.warning(
                "closing a harness socket that does not keep up",
                extra={"environment_id": link.environment_id, "stream_id": stream_id},
            )
            self._release(harness)
            harness.owes_reset = False  # this reset settles it: nothing of it is forwarded now
            if link.offer(encode_reset(stream_id, HARNESS_TOO_SLOW), force=True):
                self._metrics.count("stream_resets_total", side="executor", reason=HARNESS_TOO_SLOW)
            self._metrics.count("sockets_closed_total", role="harness", reason="outbox_full")
            harness.request_close(WSCloseCode.TRY_AGAIN_LATER, flush=False)
            return
        self._forwarded_to_harness(harness, data, kind)

    async def _wait_for_room(self, harness: HarnessEnd, data: bytes) -> bool:
        """Queue `data` once the harness's outbox has room; False after `harness_stall_s`."""
        self._metrics.count("backpressure_waits_total", side="harness")
        try:
            async with asyncio.timeout(self._harness_stall_s):
                return await harness.put(data)
        except TimeoutError:
            return False

    # --- node -------------------------------------------------------------------------------

    def close_all(self, code: int) -> None:
        """Close every socket of this node (shutdown)."""
        for link in [*self._executors.values(), *self._orphans]:
            for harness in list(link.harnesses):
                harness.request_close(code, flush=True)
            link.request_close(code, flush=True)

    def gauges(self) -> dict[str, int]:
        links = [*self._executors.values(), *self._orphans]
        return {
            "executors_connected": len(self._executors),
            "harness_sockets": sum(len(link.harnesses) for link in links),
            "streams_active": sum(len(link.streams) for link in links),
        }


def _readable(data: bytes) -> bool:
    """Whether the whole frame decodes (asked of resets only: rare, and small)."""
    try:
        decode_frame(data)
    except FrameError:
        return False
    return True


__all__ = [
    "MAX_STREAMS_PER_EXECUTOR",
    "ExecutorEnd",
    "ExecutorLink",
    "HarnessEnd",
    "HarnessLink",
    "Hub",
]
