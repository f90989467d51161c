"""The fleet's data plane: frames between a harness socket on one relay node and its executor's
socket on another, over NATS core subjects.

Every node subscribes to `relay.node.<its id>` only. A harness socket whose executor is held by
node A, opened on node B, is bound on B to a `RemoteExecutor` (one per harness socket); its
frames travel to A as `OPEN` (the first) and `TO_EXECUTOR` envelopes. A keeps a `RemoteHarness`
for it, which the hub treats like any harness socket: the stream claim, the limits and the
resets are the hub's, on the executor's node. Executor frames go back as `TO_HARNESS`. Frames are
forwarded unchanged, in order (one publisher per node and one subscription per node keep the
order of each stream).

Flow control: each direction of each stream may have at most `window` bytes sent and not yet
acknowledged; the receiving node acknowledges (`ACK_*`) as it hands frames to the socket, so a
harness that reads slowly holds the executor's socket back across nodes as it does on one node,
and NATS never carries more than the windows.

Nothing is lost silently (codex endpoints never retransmit): a frame for a route the receiver
does not know is answered (`GONE` to the harness's node, `BYE` to the executor's), so the other
side resets the stream. When this node loses NATS, or its subscription drops messages, every
cross-node stream of this node is reset and, once NATS is back, every node that shared one is
told to drop its side (`DROP`). When a node dies (`Nodes`) or a registration moves, the streams
through it are reset on this side.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
from collections import deque
from collections.abc import Callable
from typing import Final

import msgspec
from aiohttp import WSCloseCode
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from execserver.relay.frames import encode_reset
from execserver.relay.service.hub import (
    EXECUTOR_DISCONNECTED,
    ExecutorEnd,
    ExecutorLink,
    HarnessEnd,
    Hub,
)
from execserver.relay.service.metrics import RelayMetrics
from execserver.relay.service.nats_state import NATS_FAILURES, NatsEvents
from execserver.relay.service.nodes import Nodes
from execserver.relay.service.state import Entry, Registration
from execserver.tasks import TaskOwner

log = logging.getLogger(__name__)

SUBJECT_PREFIX: Final = "relay.node."
PENDING_BYTES_LIMIT: Final = 256 << 20
"""What nats-py may queue for this node's subscription before it drops messages (and this node
resets its cross-node streams). The windows keep real traffic far below it."""
NODE_LOST: Final = "relay_node_lost"
"""Reset reason when a stream's other relay node died or lost NATS."""


class Kind(enum.IntEnum):
    OPEN = 1
    """Harness node → executor node: the first frame of a harness socket."""
    TO_EXECUTOR = 2
    TO_HARNESS = 3
    ACK_TO_EXECUTOR = 4
    """Executor node → harness node: `amount` bytes of TO_EXECUTOR frames handed over."""
    ACK_TO_HARNESS = 5
    CLOSE = 6
    """Executor node → harness node: close the harness socket with code `amount`."""
    BYE = 7
    """Harness node → executor node: the harness socket is gone."""
    GONE = 8
    """Executor node → harness node: no route here for that harness socket."""
    DROP = 9
    """Any → any: forget every route shared with the sender."""


class Envelope(msgspec.Struct, array_like=True, frozen=True):
    kind: int
    sender: str
    """The sending node."""
    harness: str = ""
    """The harness socket's id on its node."""
    environment_id: str = ""
    registration_id: str = ""
    connection_id: str = ""
    """The executor socket the harness was bound to."""
    data: bytes = b""
    amount: int = 0


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Envelope).decode


def subject(node_id: str) -> str:
    return SUBJECT_PREFIX + node_id


class _Remote:
    """What both kinds of remote end share: a send window and an ordered inbox.

    Envelopes for this end are handled one at a time, in arrival order, by a task started when
    the inbox fills and ended when it empties; one end that waits (a harness that does not read)
    never holds up another.
    """

    def __init__(self, bus: FleetBus, node_id: str, harness_id: str) -> None:
        self.bus = bus
        self.node_id = node_id
        """The other node."""
        self.harness_id = harness_id
        self.closed = False
        self._unacked = 0
        self._acked = asyncio.Event()
        self._to_ack = 0
        self._inbox: deque[Envelope] = deque()
        self._pump: asyncio.Task[None] | None = None

    # --- sending --------------------------------------------------------------------------------

    def _room(self, size: int) -> bool:
        return self._unacked == 0 or self._unacked + size <= self.bus.window

    def _send_frame(self, kind: Kind, data: bytes, *, force: bool) -> bool:
        if self.closed or (not force and not self._room(len(data))):
            return False
        self._unacked += len(data)
        self.bus.send(self.node_id, self._envelope(kind, data))
        return True

    async def _put_frame(self, kind: Kind, data: bytes) -> bool:
        while not self.closed and not self._room(len(data)):
            self._acked.clear()
            await self._acked.wait()
        return self._send_frame(kind, data, force=True)

    def acknowledged(self, amount: int) -> None:
        self._unacked = max(0, self._unacked - amount)
        self._acked.set()

    def _handed_over(self, size: int, ack: Kind) -> None:
        """`size` bytes of the other side's frames reached the socket: acknowledge in batches."""
        self._to_ack += size
        if self._to_ack >= self.bus.ack_batch and not self.closed:
            self.bus.send(self.node_id, self._envelope(ack, amount=self._to_ack))
            self._to_ack = 0

    def _envelope(self, kind: Kind, data: bytes = b"", amount: int = 0) -> Envelope:
        raise NotImplementedError

    # --- receiving ------------------------------------------------------------------------------

    def deliver(self, envelope: Envelope) -> None:
        if self.closed:
            return
        self._inbox.append(envelope)
        if self._pump is None:
            self._pump = self.bus.tasks.spawn(self._drain())

    async def _drain(self) -> None:
        try:
            while self._inbox and not self.closed:
                await self._handle(self._inbox.popleft())
        finally:
            self._pump = None

    async def _handle(self, envelope: Envelope) -> None:
        raise NotImplementedError

    def _stop(self) -> None:
        """No more sending or handling; wake whoever waits for the window."""
        self.closed = True
        self._inbox.clear()
        self._acked.set()
        pump, self._pump = self._pump, None
        if pump is not None and pump is not asyncio.current_task():
            pump.cancel()


class RemoteExecutor(_Remote, ExecutorEnd):
    """On a harness's node: the executor socket held by another node, as one harness socket
    here sees it (one per harness socket)."""

    role = "executor"

    def __init__(
        self,
        bus: FleetBus,
        node_id: str,
        harness_id: str,
        *,
        environment_id: str,
        registration_id: str,
        connection_id: str,
    ) -> None:
        _Remote.__init__(self, bus, node_id, harness_id)
        self._bind_registration(environment_id, registration_id, connection_id)
        self._opened = False

    @property
    def closing(self) -> bool:
        return self.closed

    def offer(self, data: bytes, *, force: bool = False) -> bool:
        kind = Kind.TO_EXECUTOR if self._opened else Kind.OPEN
        sent = self._send_frame(kind, data, force=force)
        self._opened = self._opened or sent
        return sent

    async def put(self, data: bytes) -> bool:
        kind = Kind.TO_EXECUTOR if self._opened else Kind.OPEN
        sent = await self._put_frame(kind, data)
        self._opened = self._opened or sent
        return sent

    def request_close(self, code: int | None, *, flush: bool) -> None:
        self._stop()

    def _envelope(self, kind: Kind, data: bytes = b"", amount: int = 0) -> Envelope:
        return Envelope(
            kind,
            self.bus.node_id,
            self.harness_id,
            self.environment_id,
            self.registration_id,
            self.connection_id,
            data,
            amount,
        )

    async def _handle(self, envelope: Envelope) -> None:
        kind = envelope.kind
        if kind == Kind.TO_HARNESS:
            await self.bus.hub.from_executor(self, envelope.data)
            self._handed_over(len(envelope.data), Kind.ACK_TO_HARNESS)
        elif kind == Kind.CLOSE:
            for harness in list(self.harnesses):
                harness.request_close(envelope.amount or WSCloseCode.GOING_AWAY, flush=True)
            self.bus.forget_executor(self, tell=False)
        elif kind == Kind.GONE:
            self.bus.forget_executor(self, tell=False, reason=EXECUTOR_DISCONNECTED)

    def harness_released(self, harness: HarnessEnd) -> None:
        """The harness socket here is gone: the executor's node forgets it too."""
        self.bus.forget_executor(self, tell=True)


class RemoteHarness(_Remote, HarnessEnd):
    """On an executor's node: a harness socket held by another node."""

    def __init__(
        self, bus: FleetBus, node_id: str, harness_id: str, executor: ExecutorLink
    ) -> None:
        _Remote.__init__(self, bus, node_id, harness_id)
        self._bind_executor(executor)

    @property
    def closing(self) -> bool:
        return self.closed

    def offer(self, data: bytes, *, force: bool = False) -> bool:
        return self._send_frame(Kind.TO_HARNESS, data, force=force)

    async def put(self, data: bytes) -> bool:
        return await self._put_frame(Kind.TO_HARNESS, data)

    def request_close(self, code: int | None, *, flush: bool) -> None:
        if self.closed:
            return
        self.bus.send(self.node_id, self._envelope(Kind.CLOSE, amount=code or 0))
        self.bus.forget_harness(self, defer=True)

    def _envelope(self, kind: Kind, data: bytes = b"", amount: int = 0) -> Envelope:
        return Envelope(kind, self.bus.node_id, self.harness_id, data=data, amount=amount)

    async def _handle(self, envelope: Envelope) -> None:
        kind = envelope.kind
        if kind in (Kind.OPEN, Kind.TO_EXECUTOR):
            await self.bus.hub.from_harness(self, envelope.data)
            self._handed_over(len(envelope.data), Kind.ACK_TO_EXECUTOR)
        elif kind == Kind.BYE:
            self.bus.forget_harness(self)


class FleetBus:
    """This node's end of the data plane (see the module docstring).

    Args:
        nc: the node's NATS connection (also its state's).
        events: that connection's events.
        hub: the node's routing table.
        nodes: liveness of the other nodes.
        metrics: the node's counters.
        window: bytes per stream direction in flight between nodes.
    """

    def __init__(
        self,
        nc: NatsClient,
        events: NatsEvents,
        hub: Hub,
        nodes: Nodes,
        metrics: RelayMetrics,
        *,
        window: int,
    ) -> None:
        self.nc = nc
        self.hub = hub
        self.nodes = nodes
        self.node_id = nodes.node_id
        self.metrics = metrics
        self.window = max(window, 1 << 20)
        self.ack_batch = self.window // 4
        self.tasks = TaskOwner("relay fleet bus")
        self._executors: dict[str, RemoteExecutor] = {}
        """Harness id (here) → its remote executor."""
        self._harnesses: dict[tuple[str, str], RemoteHarness] = {}
        """(node, harness id there) → the remote harness."""
        self._outbox: deque[tuple[str, bytes]] = deque()
        self._outbox_ready = asyncio.Event()
        self._owe_drop: set[str] = set()
        """Nodes to tell to drop our shared routes once NATS is back."""
        self._subscription: Subscription | None = None
        self._unsubscribe: list[Callable[[], None]] = []
        self._events = events
        events.disconnected.append(self._on_disconnected)
        events.reconnected.append(self._on_reconnected)
        events.slow_consumer.append(self._on_slow_consumer)

    async def start(self) -> None:
        """Subscribe to this node's subject and start sending.

        Raises `StateUnavailable`-like NATS errors when the subscription cannot be made.
        """
        self._subscription = await self.nc.subscribe(
            subject(self.node_id), cb=self._receive, pending_bytes_limit=PENDING_BYTES_LIMIT
        )
        self.tasks.spawn(self._publish())
        self._unsubscribe.append(self.nodes.subscribe(self._on_node))

    async def aclose(self) -> None:
        """Reset every cross-node stream of this node and stop.

        Cancellation: the bus is stopped anyway.
        """
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        for handlers, handler in (
            (self._events.disconnected, self._on_disconnected),
            (self._events.reconnected, self._on_reconnected),
        ):
            if handler in handlers:
                handlers.remove(handler)
        self._drop_all(tell=True)
        if self._subscription is not None:
            try:
                await self._subscription.unsubscribe()
            except NATS_FAILURES:
                pass
        await self._flush_outbox()
        await self.tasks.aclose()

    # --- the harness's node ---------------------------------------------------------------------

    def reachable(self, entry: Entry[Registration]) -> bool:
        """Whether another live node holds the registration's executor socket."""
        attachment = entry.value.attachment
        return (
            attachment is not None
            and attachment.node_id != self.node_id
            and self.nodes.alive(attachment.node_id)
        )

    def remote_executor(self, entry: Entry[Registration]) -> RemoteExecutor | None:
        """A new end for one harness socket here bound to the registration's executor on
        another live node; None when no live node holds it."""
        attachment = entry.value.attachment
        if attachment is None or not self.reachable(entry):
            return None
        harness_id = secrets.token_hex(8)
        end = RemoteExecutor(
            self,
            attachment.node_id,
            harness_id,
            environment_id=entry.value.environment_id,
            registration_id=entry.value.registration_id,
            connection_id=attachment.connection_id,
        )
        self._executors[harness_id] = end
        return end

    def forget_executor(
        self, end: RemoteExecutor, *, tell: bool, reason: str | None = None
    ) -> None:
        """End `end`: with `reason`, reset the harness's stream and close its socket first;
        with `tell`, let the executor's node know the harness socket is gone."""
        if self._executors.pop(end.harness_id, None) is None:
            return
        end._stop()
        if reason is not None:
            for harness in list(end.harnesses):
                if harness.routed and harness.stream_id is not None:
                    harness.offer(encode_reset(harness.stream_id, reason), force=True)
                    harness.routed = False
                    self.metrics.count("stream_resets_total", side="harness", reason=reason)
                harness.request_close(WSCloseCode.GOING_AWAY, flush=True)
        if tell:
            self.send(end.node_id, end._envelope(Kind.BYE))

    def on_registration_change(
        self, environment_id: str, entry: Entry[Registration] | None
    ) -> None:
        """Harness sockets here bound to an executor socket that is no longer the
        registration's are reset and closed (`RelayState` listener)."""
        attachment = None if entry is None else entry.value.attachment
        for end in [e for e in self._executors.values() if e.environment_id == environment_id]:
            if (
                entry is None
                or entry.value.registration_id != end.registration_id
                or attachment is None
                or attachment.connection_id != end.connection_id
            ):
                self.forget_executor(end, tell=False, reason=EXECUTOR_DISCONNECTED)

    # --- the executor's node --------------------------------------------------------------------

    def forget_harness(self, end: RemoteHarness, *, defer: bool = False) -> None:
        """End `end` (the hub resets the executor's side of its stream if it owes that)."""
        if self._harnesses.pop((end.node_id, end.harness_id), None) is None:
            return
        end._stop()
        if defer:  # called from inside the hub: let it finish first
            asyncio.get_running_loop().call_soon(self.hub.remove_harness, end)
        else:
            self.hub.remove_harness(end)

    def _open(self, envelope: Envelope) -> RemoteHarness | None:
        executor = self.hub.executor(envelope.environment_id, envelope.registration_id)
        if executor is None or executor.connection_id != envelope.connection_id:
            return None
        end = RemoteHarness(self, envelope.sender, envelope.harness, executor)
        self._harnesses[envelope.sender, envelope.harness] = end
        self.hub.add_harness(end)
        return end

    # --- receiving ------------------------------------------------------------------------------

    async def _receive(self, message: Msg) -> None:
        try:
            envelope = _decode(message.data)
            kind = Kind(envelope.kind)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
            self.metrics.count("fleet_messages_dropped_total", reason="malformed")
            return
        self.metrics.count("fleet_messages_received_total", kind=kind.name.lower())
        self.dispatch(envelope)

    def dispatch(self, envelope: Envelope) -> None:
        kind, sender = envelope.kind, envelope.sender
        if kind == Kind.DROP:
            self._drop_node(sender, tell=False)
        elif kind in (Kind.OPEN, Kind.TO_EXECUTOR, Kind.BYE, Kind.ACK_TO_HARNESS):
            harness = self._harnesses.get((sender, envelope.harness))
            if harness is None and kind == Kind.OPEN:
                harness = self._open(envelope)
            if harness is None:
                if kind in (Kind.OPEN, Kind.TO_EXECUTOR):  # a frame we cannot route: the
                    # harness's node must reset its stream (control messages get no answer)
                    self.send(sender, Envelope(Kind.GONE, self.node_id, envelope.harness))
                return
            if kind == Kind.ACK_TO_HARNESS:
                harness.acknowledged(envelope.amount)
            else:
                harness.deliver(envelope)
        elif kind in (Kind.TO_HARNESS, Kind.CLOSE, Kind.GONE, Kind.ACK_TO_EXECUTOR):
            executor = self._executors.get(envelope.harness)
            if executor is None or executor.node_id != sender:
                if kind == Kind.TO_HARNESS:  # the executor's node must reset
                    self.send(sender, Envelope(Kind.BYE, self.node_id, envelope.harness))
                return
            if kind == Kind.ACK_TO_EXECUTOR:
                executor.acknowledged(envelope.amount)
            else:
                executor.deliver(envelope)

    # --- sending --------------------------------------------------------------------------------

    def send(self, node_id: str, envelope: Envelope) -> None:
        """Queue `envelope` for `node_id` (sent in order by one task)."""
        self._outbox.append((subject(node_id), _encode(envelope)))
        self._outbox_ready.set()
        self.metrics.count("fleet_messages_sent_total", kind=Kind(envelope.kind).name.lower())

    async def _publish(self) -> None:
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            await self._flush_outbox()

    async def _flush_outbox(self) -> None:
        outbox = self._outbox
        while outbox:
            to, payload = outbox.popleft()
            try:
                await self.nc.publish(to, payload)
            except NATS_FAILURES:
                # Lost with the connection; the disconnect resets the streams it belonged to.
                self.metrics.count("fleet_messages_dropped_total", reason="publish_failed")

    # --- losses ---------------------------------------------------------------------------------

    def _drop_node(self, node_id: str, *, tell: bool) -> None:
        """Reset every stream shared with `node_id`."""
        shared = False
        for end in [e for e in self._executors.values() if e.node_id == node_id]:
            shared = True
            self.forget_executor(end, tell=False, reason=NODE_LOST)
        for harness in [h for h in self._harnesses.values() if h.node_id == node_id]:
            shared = True
            self.forget_harness(harness)
        if shared and tell:
            self.send(node_id, Envelope(Kind.DROP, self.node_id))

    def _drop_all(self, *, tell: bool) -> set[str]:
        peers = {e.node_id for e in self._executors.values()} | {
            h.node_id for h in self._harnesses.values()
        }
        for node_id in peers:
            self._drop_node(node_id, tell=tell)
        return peers

    def _on_node(self, node_id: str, alive: bool) -> None:
        if not alive:
            self._drop_node(node_id, tell=True)  # if it was only slow, it must drop its side

    def _on_disconnected(self) -> None:
        self._outbox.clear()
        self._owe_drop |= self._drop_all(tell=False)

    def _on_reconnected(self) -> None:
        owed, self._owe_drop = self._owe_drop, set()
        for node_id in owed:
            self.send(node_id, Envelope(Kind.DROP, self.node_id))

    def _on_slow_consumer(self, sid: int) -> None:
        if self._subscription is not None and sid == self._subscription._id:
            log.warning("this node's fleet subscription dropped messages; resetting its streams")
            self._drop_all(tell=True)

    def gauges(self) -> dict[str, int]:
        return {
            "fleet_remote_executors": len(self._executors),
            "fleet_remote_harnesses": len(self._harnesses),
        }


__all__ = [
    "NODE_LOST",
    "Envelope",
    "FleetBus",
    "Kind",
    "RemoteExecutor",
    "RemoteHarness",
    "subject",
]
