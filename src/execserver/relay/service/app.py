"""`RelayServer`: one relay node on one port (registry HTTP API, rendezvous WebSockets,
`/readyz`, optional `/metrics`).

It wires the parts together (state → registrations → registry and rendezvous → hub), owns
the aiohttp runner, and shuts down in order: refuse new upgrades, close every socket (1001),
stop listening, wait for the handlers. The state is the caller's: the server neither creates
nor closes it.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from aiohttp import WSCloseCode, web
from aiohttp.abc import AbstractAccessLogger

from execserver.event_loop import running_loop_name
from execserver.relay.service import redaction
from execserver.relay.service.access import AccessPolicy, Role, Verdict
from execserver.relay.service.collector import CollectorProbe
from execserver.relay.service.defaults import HARNESS_STALL_S, LISTEN_BACKLOG
from execserver.relay.service.hub import MAX_STREAMS_PER_EXECUTOR, Hub
from execserver.relay.service.metrics import RelayMetrics
from execserver.relay.service.nodes import Nodes, SingleNode
from execserver.relay.service.overload import gate_of
from execserver.relay.service.registrations import AUTHORIZATION_TTL_S, Registrations
from execserver.relay.service.registry import (
    CONNECT_WAIT_S,
    EXECUTOR_TICKET_TTL_S,
    HARNESS_TICKET_TTL_S,
    Registry,
    RegistrySettings,
)
from execserver.relay.service.rendezvous import (
    HEARTBEAT_S,
    MAX_MESSAGE_BYTES,
    OUTBOX_LIMIT_BYTES,
    Rendezvous,
    SocketSettings,
)
from execserver.relay.service.state import Registration, RelayState, StateUnavailable
from execserver.relay.service.tickets import TicketSigner

if TYPE_CHECKING:  # NATS is loaded only by fleet nodes
    from nats.aio.client import Client as NatsClient

    from execserver.relay.service.fleet import FleetBus
    from execserver.relay.service.nats_state import NatsEvents

log = logging.getLogger(__name__)

MAX_REQUEST_BODY_BYTES: Final = 64 << 10
"""Registry bodies are about 2 KB."""
SHUTDOWN_TIMEOUT_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """Everything a relay node is configured with. Times in seconds."""

    ticket_secret: bytes
    """HMAC key of rendezvous tickets (≥ 32 bytes); the same on every node and restart."""
    access: AccessPolicy = field(default_factory=AccessPolicy)
    public_url: str | None = None
    """`ws://`/`wss://` base advertised in rendezvous URLs; None: the bound address."""
    metrics: bool = False
    executor_ticket_ttl_s: float = EXECUTOR_TICKET_TTL_S
    harness_ticket_ttl_s: float = HARNESS_TICKET_TTL_S
    authorization_ttl_s: float = AUTHORIZATION_TTL_S
    connect_wait_s: float = CONNECT_WAIT_S
    max_streams_per_executor: int = MAX_STREAMS_PER_EXECUTOR
    outbox_limit_bytes: int = OUTBOX_LIMIT_BYTES
    harness_stall_s: float = HARNESS_STALL_S
    max_message_bytes: int = MAX_MESSAGE_BYTES
    heartbeat_s: float | None = HEARTBEAT_S
    node_id: str = field(default_factory=lambda: "node_" + secrets.token_hex(4))
    advertise_url: str | None = None
    """This node's own `ws://`/`wss://` base, handed to harnesses whose executor it holds (a
    fleet node behind a load balancer); None: harnesses get `public_url`."""


@dataclass(frozen=True, slots=True)
class FleetMembership:
    """What makes a node part of a fleet: its NATS connection for the data plane, who else is
    alive, and the events of its control connection (state and liveness) when that is another."""

    nc: NatsClient
    events: NatsEvents
    nodes: Nodes
    control_events: NatsEvents | None = None


class _NodeIdFilter(logging.Filter):
    """Adds `node_id` to the relay's log records (a fleet's logs interleave)."""

    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("execserver.relay") and not hasattr(record, "node_id"):
            record.node_id = self.node_id
        return True


class _AccessLogger(AbstractAccessLogger):
    """Method, path (never the query: it holds tickets), status and duration."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %s",
            request.method,
            request.path,
            response.status,
            extra={"duration_s": round(time, 6)},
        )


def http_base(host: str, port: int) -> str:
    """`http://HOST:PORT` (IPv6 in brackets)."""
    try:
        bracket = ipaddress.ip_address(host).version == 6
    except ValueError:
        bracket = False
    return f"http://[{host}]:{port}" if bracket else f"http://{host}:{port}"


class RelayServer:
    """One relay node.

    Args:
        config: the node's settings.
        state: the shared state (owned by the caller).
        metrics: the node's counters (default: new ones); the state may count into them too.
        fleet: the node's fleet membership (owned by the caller); None: a single relay.
        clock: the time source, UNIX seconds.
    """

    def __init__(
        self,
        config: RelayConfig,
        state: RelayState,
        *,
        metrics: RelayMetrics | None = None,
        fleet: FleetMembership | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.state = state
        self.metrics = metrics or RelayMetrics()
        self.hub = Hub(
            self.metrics,
            max_streams_per_executor=config.max_streams_per_executor,
            harness_stall_s=config.harness_stall_s,
        )
        self.nodes: Nodes = SingleNode(config.node_id) if fleet is None else fleet.nodes
        self.fleet: FleetBus | None = None
        self._fleet_events: list[NatsEvents] = []
        if fleet is not None:
            from execserver.relay.service.fleet import FleetBus

            self.fleet = FleetBus(
                fleet.nc,
                fleet.events,
                self.hub,
                self.nodes,
                self.metrics,
                window=config.outbox_limit_bytes,
            )
            self._fleet_events = [fleet.events]
            if fleet.control_events is not None:
                self._fleet_events.append(fleet.control_events)
        self.registrations = Registrations(
            state,
            node_id=config.node_id,
            nodes=self.nodes,
            authorization_ttl_s=config.authorization_ttl_s,
            clock=clock,
        )
        signer = TicketSigner(config.ticket_secret)
        self.registry = Registry(
            registrations=self.registrations,
            access=config.access,
            signer=signer,
            metrics=self.metrics,
            rendezvous_base=lambda: self.rendezvous_base,
            harness_base=self._harness_base,
            settings=RegistrySettings(
                executor_ticket_ttl_s=config.executor_ticket_ttl_s,
                harness_ticket_ttl_s=config.harness_ticket_ttl_s,
                connect_wait_s=config.connect_wait_s,
            ),
            clock=clock,
        )
        self.rendezvous = Rendezvous(
            hub=self.hub,
            registrations=self.registrations,
            signer=signer,
            metrics=self.metrics,
            settings=SocketSettings(
                max_message_bytes=config.max_message_bytes,
                outbox_limit_bytes=config.outbox_limit_bytes,
                heartbeat_s=config.heartbeat_s,
            ),
            fleet=self.fleet,
            clock=clock,
        )
        self.app = web.Application(client_max_size=MAX_REQUEST_BODY_BYTES)
        self.app.add_routes(self.registry.routes())
        self.app.add_routes(self.rendezvous.routes())
        self.app.add_routes([web.get("/readyz", self._readyz)])
        if config.metrics:
            self.app.add_routes([web.get("/metrics", self._metrics)])
        self.collector: CollectorProbe | None = None
        """The process's collector probe (set by the CLI): its gauges go on /metrics."""
        self._runner: web.AppRunner | None = None
        self._unsubscribe: list[Callable[[], None]] = []
        self._log_filter = _NodeIdFilter(config.node_id)
        self.base_url = ""
        """`http://HOST:PORT` of the bound socket, once started."""

    @property
    def rendezvous_base(self) -> str:
        """The base of the rendezvous URLs this node hands out."""
        if self.config.public_url is not None:
            return self.config.public_url
        return "ws://" + self.base_url.removeprefix("http://")

    def _harness_base(self, registration: Registration) -> str:
        """Where a harness of `registration` dials: the node holding its executor when that
        node advertises its own URL (no hop between nodes), else the public URL."""
        attachment = registration.attachment
        if attachment is not None:
            if attachment.node_id == self.config.node_id and self.config.advertise_url:
                return self.config.advertise_url
            url = self.nodes.url(attachment.node_id)
            if url:
                return url
        return self.rendezvous_base

    async def start(self, host: str, port: int) -> str:
        """Listen on `host:port` (0: any free port) and return the base URL `http://HOST:PORT`.

        Raises:
            OSError: the address cannot be bound.

        Cancellation: nothing is left listening.
        """
        redaction.install()
        for handler in logging.getLogger().handlers:
            handler.addFilter(self._log_filter)
        self._unsubscribe.append(self.state.subscribe(self.hub.on_registration_change))
        if self.fleet is not None:
            self._unsubscribe.append(self.state.subscribe(self.fleet.on_registration_change))
            await self.fleet.start()
        runner = web.AppRunner(
            self.app,
            access_log_class=_AccessLogger,
            access_log=logging.getLogger("execserver.relay.access"),
            handle_signals=False,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        )
        await runner.setup()
        self._runner = runner
        try:
            site = web.TCPSite(runner, host, port, backlog=LISTEN_BACKLOG)
            await site.start()
        except BaseException:
            await self.aclose()
            raise
        bound_host, bound_port = _bound_address(runner, host)
        self.base_url = http_base(bound_host, bound_port)
        log.info(
            "relay listening",
            extra={
                "url": self.base_url,
                "node_id": self.config.node_id,
                "event_loop": running_loop_name(),
            },
        )
        return self.base_url

    async def aclose(self) -> None:
        """Stop: refuse upgrades, close every socket with 1001, stop listening, wait for the
        handlers (at most `SHUTDOWN_TIMEOUT_S`, then they are cancelled).

        Cancellation: the shutdown completes before the cancellation propagates.
        """
        self.rendezvous.draining = True
        self.hub.close_all(WSCloseCode.GOING_AWAY)
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        try:
            if self.fleet is not None:
                await self.fleet.aclose()
        finally:
            runner, self._runner = self._runner, None
            if runner is not None:
                await runner.cleanup()
            for handler in logging.getLogger().handlers:
                handler.removeFilter(self._log_filter)

    async def _readyz(self, request: web.Request) -> web.Response:
        if self.rendezvous.draining:
            return web.Response(status=503, text="draining\n")
        return web.Response(text="ok\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        verdict = self.config.access.check(Role.METRICS, request.headers.get("Authorization"), None)
        if verdict is not Verdict.ALLOWED:
            return web.Response(
                status=401, text="unauthorized\n", headers={"WWW-Authenticate": "Bearer"}
            )
        gauges = self.hub.gauges()
        if self.fleet is not None:
            gauges |= self.fleet.gauges()
            gauges["fleet_nodes_alive"] = self.nodes.live_count()
        if self.collector is not None:
            gauges |= self.collector.gauges()
        gate = gate_of(self.state)
        if gate is not None:
            gauges["kv_operations_in_flight"] = gate.in_flight
            gauges["kv_operations_waiting"] = gate.waiting
            gauges["kv_operations_refused_total"] = gate.refused
            gauges["kv_operations_waiting_priority"] = gate.waiting_priority
            gauges["kv_operations_prioritized_total"] = gate.prioritized
        if self._fleet_events:
            gauges["nats_disconnects_total"] = sum(e.disconnects for e in self._fleet_events)
            gauges["nats_reconnects_total"] = sum(e.reconnects for e in self._fleet_events)
        try:
            gauges = {"executors_registered": await self.state.count_registrations(), **gauges}
        except StateUnavailable:
            pass
        return web.Response(
            body=self.metrics.render(gauges),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )


def _bound_address(runner: web.AppRunner, requested_host: str) -> tuple[str, int]:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return str(address[0]), int(address[1])
    raise OSError(f"nothing bound on {requested_host}")


__all__ = [
    "MAX_REQUEST_BODY_BYTES",
    "FleetMembership",
    "RelayConfig",
    "RelayServer",
    "http_base",
]
