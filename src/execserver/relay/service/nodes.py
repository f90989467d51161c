"""Which relay nodes are alive, and the URL at which each can be dialled directly.

`Nodes` is what the rest of the relay asks. `SingleNode` is the answer of a relay without a
fleet (only itself). `NodeDirectory` keeps the answer for a fleet in the NATS key-value bucket
`relay_nodes`: every node puts `n.<node id>` → `{url, started_at}` every `heartbeat_s`; every
node watches the bucket and records, on its own monotonic clock, when it last heard of each
node (so clocks need not agree). A node whose key was deleted (a clean shutdown) is dead; so is
a node not heard of for `ttl_s` that then fails a direct probe: a request on
`relay.probe.<node id>`, which every node answers on the same connection. Late heartbeats alone
are no death: under a flood they are late while the node is well (docs/SCALING.md). A dead node
is dead until it is heard of again. Listeners learn each death and each (re)appearance; they run
on the event loop and must not block.

The directory works on the node's control connection to NATS, never the one that carries the
fleet's data plane (`FleetBus`): on a shared connection heartbeats, their acknowledgements and
the watch's deliveries queue behind megabytes of frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

import msgspec
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from execserver.relay.service.nats_state import (
    NATS_FAILURES,
    STARTED,
    follow_bucket,
    open_bucket,
)
from execserver.relay.service.state import StateUnavailable
from execserver.tasks import TaskOwner

if TYPE_CHECKING:
    from execserver.relay.service.metrics import RelayMetrics

log = logging.getLogger(__name__)

NODES_BUCKET: Final = "relay_nodes"
HEARTBEAT_S: Final = 1.0
NODE_TTL_S: Final = 4.0
"""A node not heard of for this long is dead (four heartbeats: one late one is no death)."""
PROBE_TIMEOUT_S: Final = 2.0
"""How long a node not heard of for `NODE_TTL_S` has to answer a direct probe (a node that is
gone, its connection closed, gets no answer at once: NATS knows no responder)."""
PROBE_PREFIX: Final = "relay.probe."
NODE_KEY_MAX_AGE_S: Final = 300.0
"""The bucket forgets the key of a node gone this long (its liveness is decided earlier)."""
NODE_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""Node ids are NATS subject tokens and key parts."""

NodeListener = Callable[[str, bool], None]
"""Called with (node id, alive) when a node dies or (re)appears."""


class Nodes(Protocol):
    """The live nodes, as this node knows them."""

    node_id: str

    def alive(self, node_id: str) -> bool: ...

    def url(self, node_id: str) -> str | None:
        """The node's own URL when it advertises one and is alive."""
        ...

    def subscribe(self, listener: NodeListener) -> Callable[[], None]: ...

    def live_count(self) -> int: ...


class _Listeners:
    def __init__(self) -> None:
        self._listeners: list[NodeListener] = []

    def subscribe(self, listener: NodeListener) -> Callable[[], None]:
        self._listeners.append(listener)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    def notify(self, node_id: str, alive: bool) -> None:
        for listener in list(self._listeners):
            try:
                listener(node_id, alive)
            except Exception:
                log.exception("node listener failed")


class SingleNode:
    """A relay without a fleet: this node is the only one, and always alive."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._listeners = _Listeners()

    def alive(self, node_id: str) -> bool:
        return node_id == self.node_id

    def url(self, node_id: str) -> str | None:
        return None

    def subscribe(self, listener: NodeListener) -> Callable[[], None]:
        return self._listeners.subscribe(listener)

    def live_count(self) -> int:
        return 1


class _Heartbeat(msgspec.Struct, frozen=True):
    url: str | None
    sent_at: float
    """The sender's wall clock: used only for the values a (re)started watch replays, which
    may be old (a dead node's key outlives it)."""


def _key(node_id: str) -> str:
    return f"n.{node_id}"


def probe_subject(node_id: str) -> str:
    return PROBE_PREFIX + node_id


class NodeDirectory:
    """`Nodes` of a fleet, in NATS KV (see the module docstring). Build with `open()`."""

    def __init__(
        self,
        nc: NatsClient,
        bucket: KeyValue,
        node_id: str,
        url: str | None,
        *,
        heartbeat_s: float = HEARTBEAT_S,
        ttl_s: float = NODE_TTL_S,
        probe_timeout_s: float = PROBE_TIMEOUT_S,
        metrics: RelayMetrics | None = None,
    ) -> None:
        self.node_id = node_id
        self._nc = nc
        self._bucket = bucket
        self._probe_timeout_s = probe_timeout_s
        self._metrics = metrics
        self._probing: set[str] = set()
        """Nodes with a probe in flight."""
        self._probes: Subscription | None = None
        self._url = url
        self._heartbeat_s = heartbeat_s
        self._ttl_s = ttl_s
        self._seen: dict[str, float] = {}
        """Live node → when (monotonic) it was last heard of."""
        self._urls: dict[str, str | None] = {}
        self._listeners = _Listeners()
        self._tasks = TaskOwner("relay node directory")
        self._stopping = False
        """Set by `aclose()` before it cancels: the loops end at their next turn even when a
        NATS call lost the cancellation (see `follow_bucket`)."""
        self._own_seen = time.monotonic()
        """When our own heartbeat last came back through the watch (its health check)."""
        self._replaying = False
        self.rewatch = asyncio.Event()
        """Set to start the watch again (after a NATS reconnect its consumer may be gone)."""
        self.synced = asyncio.Event()
        """Set once the nodes known before this one started have been read."""

    @classmethod
    async def open(
        cls,
        nc: NatsClient,
        node_id: str,
        url: str | None,
        *,
        replicas: int = 1,
        heartbeat_s: float = HEARTBEAT_S,
        ttl_s: float = NODE_TTL_S,
        probe_timeout_s: float = PROBE_TIMEOUT_S,
        metrics: RelayMetrics | None = None,
    ) -> NodeDirectory:
        """Bind (or create) the bucket on `nc` (the node's control connection), answer probes,
        announce this node, and start heartbeats and the watch.

        Raises `StateUnavailable` if NATS does not answer after several attempts.
        """
        bucket = await open_bucket(
            nc.jetstream(),
            KeyValueConfig(
                NODES_BUCKET,
                history=1,
                ttl=NODE_KEY_MAX_AGE_S,
                replicas=replicas,
                storage=StorageType.FILE,
            ),
        )
        directory = cls(
            nc,
            bucket,
            node_id,
            url,
            heartbeat_s=heartbeat_s,
            ttl_s=ttl_s,
            probe_timeout_s=probe_timeout_s,
            metrics=metrics,
        )
        try:
            directory._probes = await nc.subscribe(probe_subject(node_id), cb=_answer_probe)
        except NATS_FAILURES as exc:
            raise StateUnavailable(f"cannot answer probes: {exc!r}") from None
        await directory.beat()
        directory._tasks.spawn(directory._heartbeats())
        directory._tasks.spawn(directory._watch())
        directory._tasks.spawn(directory._sweep())
        return directory

    # --- Nodes ----------------------------------------------------------------------------------

    def alive(self, node_id: str) -> bool:
        return node_id == self.node_id or node_id in self._seen

    def url(self, node_id: str) -> str | None:
        if node_id == self.node_id:
            return self._url
        return self._urls.get(node_id) if node_id in self._seen else None

    def subscribe(self, listener: NodeListener) -> Callable[[], None]:
        return self._listeners.subscribe(listener)

    def live_count(self) -> int:
        return len(self._seen.keys() | {self.node_id})

    # --- upkeep ---------------------------------------------------------------------------------

    async def beat(self) -> None:
        """Announce this node now (a failure is logged; the next heartbeat tries again)."""
        try:
            await self._bucket.put(
                _key(self.node_id), msgspec.json.encode(_Heartbeat(self._url, time.time()))
            )
        except NATS_FAILURES as exc:
            log.debug("heartbeat failed: %r", exc)

    async def _heartbeats(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self._heartbeat_s)
            # A put whose acknowledgement is late must not delay the next heartbeat.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._heartbeat_s):
                    await self.beat()

    def _heard(self, node_id: str, url: str | None) -> None:
        now = time.monotonic()
        if node_id == self.node_id:
            if now - self._own_seen > self._heartbeat_s * 2:
                # We were deaf; so was everyone's heartbeat to us: give each a fresh TTL.
                self._seen = dict.fromkeys(self._seen, now)
            self._own_seen = now
            return
        self._urls[node_id] = url
        back = node_id not in self._seen
        self._seen[node_id] = now
        if back:
            log.info("relay node alive", extra={"peer_node_id": node_id})
            self._listeners.notify(node_id, True)

    def _dead(self, node_id: str, why: str) -> None:
        if self._seen.pop(node_id, None) is None:
            return
        log.warning("relay node dead: %s", why, extra={"peer_node_id": node_id})
        self._listeners.notify(node_id, False)

    def _update(self, update: KeyValue.Entry | None) -> None:
        if update is STARTED:
            self._replaying = True
            return
        if update is None:
            self._replaying = False
            self.synced.set()
            return
        node_id = update.key.removeprefix("n.")
        if update.operation in ("DEL", "PURGE") or not update.value:
            self._dead(node_id, "it shut down")
            return
        try:
            beat = msgspec.json.decode(update.value, type=_Heartbeat)
        except msgspec.DecodeError:
            return
        if self._replaying and time.time() - beat.sent_at > self._ttl_s:
            return  # an old value (perhaps a dead node's): wait for a live heartbeat
        self._heard(node_id, beat.url)

    async def _watch(self) -> None:
        await follow_bucket(
            self._bucket,
            self._update,
            self.rewatch,
            what="relay node",
            stopping=lambda: self._stopping,
        )

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s / 2)
            now = time.monotonic()
            silent = now - self._own_seen
            if silent > self._ttl_s / 2 and not self.rewatch.is_set():
                # Our own heartbeats stopped coming back: the watch may be stuck.
                log.warning("node watch silent for %.1f s; watching again", silent)
                self.rewatch.set()
            if silent > self._heartbeat_s * 2:
                # Nor do we hear ourselves: the bucket (or our view of it) is down, which says
                # nothing about the other nodes. Judge them once we hear ourselves again.
                continue
            horizon = now - self._ttl_s
            for node_id, seen in list(self._seen.items()):
                if seen < horizon and node_id not in self._probing:
                    self._probing.add(node_id)
                    self._tasks.spawn(self._probe(node_id))

    async def _probe(self, node_id: str) -> None:
        """Ask a node not heard of for `ttl_s` directly: dead if it does not answer."""
        try:
            await self._nc.request(probe_subject(node_id), b"", timeout=self._probe_timeout_s)
        except NATS_FAILURES as exc:
            failure: BaseException | None = exc
        else:
            failure = None
        finally:
            self._probing.discard(node_id)
        seen = self._seen.get(node_id)
        if seen is None:
            return  # deleted meanwhile (it shut down)
        now = time.monotonic()
        if failure is None:
            self._count_probe("answered")
            log.info(
                "relay node answered a probe after %.1f s without a heartbeat",
                now - seen,
                extra={"peer_node_id": node_id},
            )
            self._seen[node_id] = now
        elif seen >= now - self._ttl_s:
            return  # heard of meanwhile
        elif not self._nc.is_connected:
            return  # our own connection failed: that says nothing about the node
        else:
            self._count_probe("failed")
            self._dead(
                node_id,
                f"not heard of for {self._ttl_s:g} s, no answer to a probe "
                f"({type(failure).__name__})",
            )

    def _count_probe(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.count("node_probes_total", outcome=outcome)

    async def aclose(self) -> None:
        """Stop, and tell the other nodes at once (delete this node's key).

        Cancellation: the tasks are stopped anyway.
        """
        self._stopping = True
        self.rewatch.set()
        await self._tasks.aclose()
        with contextlib.suppress(*NATS_FAILURES):
            if self._probes is not None:
                await self._probes.unsubscribe()
        with contextlib.suppress(*NATS_FAILURES):
            async with asyncio.timeout(2.0):
                await self._bucket.delete(_key(self.node_id))


async def _answer_probe(message: Msg) -> None:
    with contextlib.suppress(*NATS_FAILURES):
        await message.respond(b"")


__all__ = [
    "HEARTBEAT_S",
    "NODES_BUCKET",
    "NODE_ID_PATTERN",
    "NODE_TTL_S",
    "PROBE_TIMEOUT_S",
    "NodeDirectory",
    "NodeListener",
    "Nodes",
    "SingleNode",
]
