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
from typing import Final

from aiohttp import WSCloseCode, web
from aiohttp.abc import AbstractAccessLogger

from execserver.relay.service import redaction
from execserver.relay.service.access import AccessPolicy, Role, Verdict
from execserver.relay.service.defaults import HARNESS_STALL_S
from execserver.relay.service.hub import MAX_STREAMS_PER_EXECUTOR, Hub
from execserver.relay.service.metrics import RelayMetrics
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
from execserver.relay.service.state import RelayState, StateUnavailable
from execserver.relay.service.tickets import TicketSigner

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
        clock: the time source, UNIX seconds.
    """

    def __init__(
        self, config: RelayConfig, state: RelayState, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.state = state
        self.metrics = RelayMetrics()
        self.hub = Hub(
            self.metrics,
            max_streams_per_executor=config.max_streams_per_executor,
            harness_stall_s=config.harness_stall_s,
        )
        self.registrations = Registrations(
            state,
            node_id=config.node_id,
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
            clock=clock,
        )
        self.app = web.Application(client_max_size=MAX_REQUEST_BODY_BYTES)
        self.app.add_routes(self.registry.routes())
        self.app.add_routes(self.rendezvous.routes())
        self.app.add_routes([web.get("/readyz", self._readyz)])
        if config.metrics:
            self.app.add_routes([web.get("/metrics", self._metrics)])
        self._runner: web.AppRunner | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.base_url = ""
        """`http://HOST:PORT` of the bound socket, once started."""

    @property
    def rendezvous_base(self) -> str:
        """The base of the rendezvous URLs this node hands out."""
        if self.config.public_url is not None:
            return self.config.public_url
        return "ws://" + self.base_url.removeprefix("http://")

    async def start(self, host: str, port: int) -> str:
        """Listen on `host:port` (0: any free port) and return the base URL `http://HOST:PORT`.

        Raises:
            OSError: the address cannot be bound.

        Cancellation: nothing is left listening.
        """
        redaction.install()
        self._unsubscribe = self.state.subscribe(self.hub.on_registration_change)
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
            site = web.TCPSite(runner, host, port)
            await site.start()
        except BaseException:
            await self.aclose()
            raise
        bound_host, bound_port = _bound_address(runner, host)
        self.base_url = http_base(bound_host, bound_port)
        log.info("relay listening", extra={"url": self.base_url, "node_id": self.config.node_id})
        return self.base_url

    async def aclose(self) -> None:
        """Stop: refuse upgrades, close every socket with 1001, stop listening, wait for the
        handlers (at most `SHUTDOWN_TIMEOUT_S`, then they are cancelled).

        Cancellation: the shutdown completes before the cancellation propagates.
        """
        self.rendezvous.draining = True
        self.hub.close_all(WSCloseCode.GOING_AWAY)
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

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


__all__ = ["MAX_REQUEST_BODY_BYTES", "RelayConfig", "RelayServer", "http_base"]
