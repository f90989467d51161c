"""The rendezvous WebSockets: `GET /relay/executor?ticket=…` and `GET /relay/harness?ticket=…`.

An upgrade is granted when the ticket verifies for the path's role and the registration it
names is still the environment's; a harness also needs the executor socket on this node and
an unused ticket. Refusals are plain HTTP statuses with `x-codex-rendezvous-rejection-reason`.
The status matters to a codex executor (RELAY.md §3): 4xx makes it register again, anything
else makes it retry the same URL later, so 4xx is answered only when its registration is
really gone (or its ticket can never work); a draining node or a state outage is a 503.
Sockets carry binary frames of at most `max_message_bytes`; a text message closes the socket
(1003), a bigger one too (1009, by aiohttp).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeVar

from aiohttp import WSCloseCode, WSMsgType, web

from execserver.relay.api import REJECTION_REASON_HEADER
from execserver.relay.service.defaults import OUTBOX_LIMIT_BYTES
from execserver.relay.service.hub import ExecutorEnd, ExecutorLink, HarnessLink, Hub
from execserver.relay.service.links import CLOSE_TIMEOUT_S, Link
from execserver.relay.service.metrics import RelayMetrics
from execserver.relay.service.overload import gate_of, priority_lane, retry_after_header
from execserver.relay.service.registrations import Registrations, new_connection_id
from execserver.relay.service.registry import EXECUTOR_PATH, HARNESS_PATH
from execserver.relay.service.state import (
    Entry,
    Registration,
    RevisionConflict,
    StateError,
    StateUnavailable,
)
from execserver.relay.service.tickets import (
    EXECUTOR,
    HARNESS,
    Role,
    Ticket,
    TicketRejected,
    TicketSigner,
    nonce_claim_key,
)
from execserver.relay.service.ws_forward import ForwardingWebSocket

if TYPE_CHECKING:
    from execserver.relay.service.fleet import FleetBus

log = logging.getLogger(__name__)

L = TypeVar("L", bound=Link)

MAX_MESSAGE_BYTES: Final = 262_144
"""The largest WebSocket message a codex executor accepts (and so do we)."""
HEARTBEAT_S: Final = 30.0
"""We ping every socket this often (codex pings every 30 s too); no pong in half of it closes."""


@dataclass(frozen=True, slots=True)
class SocketSettings:
    max_message_bytes: int = MAX_MESSAGE_BYTES
    outbox_limit_bytes: int = OUTBOX_LIMIT_BYTES
    heartbeat_s: float | None = HEARTBEAT_S


class Rendezvous:
    """The two rendezvous endpoints of one node.

    Args:
        hub: the node's routing table.
        registrations: the control plane.
        signer: verifies tickets.
        metrics: the node's counters.
        settings: socket limits.
        fleet: the data plane to the other nodes of a fleet (harness sockets whose executor
            is on another node are bound through it).
        clock: the time source, UNIX seconds.
    """

    def __init__(
        self,
        *,
        hub: Hub,
        registrations: Registrations,
        signer: TicketSigner,
        metrics: RelayMetrics,
        settings: SocketSettings = SocketSettings(),
        fleet: FleetBus | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fleet = fleet
        self._hub = hub
        self._registrations = registrations
        self._signer = signer
        self._metrics = metrics
        self._settings = settings
        self._clock = clock
        self.draining = False
        """Set at shutdown: new upgrades are refused with 503 `pod_draining`."""

    def routes(self) -> list[web.RouteDef]:
        return [web.get(EXECUTOR_PATH, self.executor), web.get(HARNESS_PATH, self.harness)]

    def _socket(self) -> ForwardingWebSocket:
        return ForwardingWebSocket(
            # aiohttp refuses a message whose size equals max_msg_size; the limit is inclusive.
            max_msg_size=self._settings.max_message_bytes + 1,
            heartbeat=self._settings.heartbeat_s,
            compress=False,
            timeout=CLOSE_TIMEOUT_S,
        )

    async def _verify(self, request: web.Request, role: Role) -> tuple[Ticket, Entry[Registration]]:
        """The request's ticket, verified for `role`, and the current registration it names."""
        if self.draining:
            raise TicketRejected("pod_draining", 503)
        if not self._socket().can_prepare(request).ok:
            raise TicketRejected("malformed_query", 400)
        if set(request.query) - {"ticket"}:
            raise TicketRejected("extra_query_param", 400)
        values = request.query.getall("ticket", [])
        if len(values) != 1:
            raise TicketRejected("malformed_query", 400)
        ticket = self._signer.verify(values[0], role=role, now=self._clock())
        try:
            entry = await self._registrations.state.get_registration(ticket.environment_id)
        except StateUnavailable:
            raise TicketRejected("route_unavailable", 503) from None
        if entry is None or entry.value.registration_id != ticket.registration_id:
            raise TicketRejected("unexpected_executor_registration_id", 410)
        return ticket, entry

    def _reject(self, role: Role, rejection: TicketRejected) -> web.Response:
        self._metrics.count("rejections_total", role=role, reason=rejection.reason)
        log.info(
            "rendezvous upgrade refused",
            extra={"role": role, "reason": rejection.reason, "status": rejection.status},
        )
        headers = {REJECTION_REASON_HEADER: rejection.reason}
        if rejection.status == 503:  # spread the executors told to come back
            headers.update(retry_after_header(gate_of(self._registrations.state)))
        return web.Response(status=rejection.status, headers=headers, text=rejection.reason + "\n")

    async def executor(self, request: web.Request) -> web.StreamResponse:
        """`GET /relay/executor?ticket=…`: attach an executor socket to its registration.

        Cancellation: the socket is closed and its streams reset.
        """
        try:
            ticket, _ = await self._verify(request, EXECUTOR)
        except TicketRejected as rejection:
            return self._reject(EXECUTOR, rejection)
        ws = self._socket()
        await ws.prepare(request)
        link = ExecutorLink(
            ws,
            self._settings.outbox_limit_bytes,
            environment_id=ticket.environment_id,
            registration_id=ticket.registration_id,
            connection_id=new_connection_id(),
            transport=request.transport,
        )
        fields = {
            "environment_id": link.environment_id,
            "registration_id": link.registration_id,
        }
        try:
            attached = await self._registrations.attach(
                link.environment_id, link.registration_id, link.connection_id
            )
        except (RevisionConflict, StateUnavailable):
            attached = None
        if not attached:
            # Gone since the check (normal close: it retries the URL, gets 410, re-registers),
            # or the state failed (1011: it retries the URL later).
            code = WSCloseCode.OK if attached is False else WSCloseCode.INTERNAL_ERROR
            await ws.close(code=code)
            return ws
        self._hub.install_executor(link)
        log.info("executor connected", extra=fields)
        try:
            await link.run(lambda: self._read_executor(link))
        finally:
            self._hub.remove_executor(link)
            log.info("executor disconnected", extra={**fields, "close_code": ws.close_code})
            try:
                await self._registrations.detach(
                    link.environment_id, link.registration_id, link.connection_id
                )
            except StateError:
                log.warning("could not record the executor's detachment", extra=fields)
        return ws

    async def harness(self, request: web.Request) -> web.StreamResponse:
        """`GET /relay/harness?ticket=…`: a harness socket bound to an attached executor.

        Cancellation: the socket is closed and the executor told its stream ended.
        """
        with priority_lane():  # a harness waits on its stream's checks
            try:
                ticket, entry = await self._verify(request, HARNESS)
                local = self._hub.executor(ticket.environment_id, ticket.registration_id)
                if local is None and (self._fleet is None or not self._fleet.reachable(entry)):
                    raise TicketRejected("route_unavailable", 503)
                # Each harness ticket opens one socket (a connect bundle is single-use). A used
                # ticket is as good as an expired one.
                try:
                    fresh = await self._registrations.state.claim_once(
                        nonce_claim_key(ticket.nonce), ticket.expires_at
                    )
                except StateUnavailable:
                    raise TicketRejected("route_unavailable", 503) from None
                if not fresh:
                    raise TicketRejected("expired", 401)
            except TicketRejected as rejection:
                return self._reject(HARNESS, rejection)
        ws = self._socket()
        await ws.prepare(request)
        executor: ExecutorEnd | None = local
        if executor is None and self._fleet is not None:
            executor = self._fleet.remote_executor(entry)
        if executor is None:  # its node died meanwhile: the harness fetches a new bundle
            await ws.close(code=WSCloseCode.GOING_AWAY)
            return ws
        link = HarnessLink(ws, self._settings.outbox_limit_bytes, executor, request.transport)
        self._hub.add_harness(link)
        if executor.closing:  # it went away while the upgrade was answered
            link.request_close(WSCloseCode.GOING_AWAY, flush=False)
        try:
            await link.run(lambda: self._read_harness(link))
        finally:
            self._hub.remove_harness(link)
        return ws

    async def _read_executor(self, link: ExecutorLink) -> None:
        await self._read(link, self._hub.from_executor, self._hub.forward_from_executor)

    async def _read_harness(self, link: HarnessLink) -> None:
        await self._read(link, self._hub.from_harness, self._hub.forward_from_harness)

    async def _read(
        self,
        link: L,
        route: Callable[[L, bytes], Awaitable[None]],
        forward: Callable[[L, bytes], bool],
    ) -> None:
        """Route the socket's messages: as aiohttp parses them while they can be forwarded
        at once (`ForwardingWebSocket`), else here, one at a time, in order."""
        ws = link.ws
        if isinstance(ws, ForwardingWebSocket):
            ws.set_forward(lambda data: forward(link, data))
        while (data := await self._receive(link)) is not None:
            if isinstance(ws, ForwardingWebSocket):
                ws.set_busy(True)  # nothing overtakes this message while it waits
            await route(link, data)
            if isinstance(ws, ForwardingWebSocket):
                ws.set_busy(False)

    async def _receive(self, link: Link) -> bytes | None:
        """The socket's next binary message; None once it is closing (a text message closes
        it with 1003; aiohttp closes it with 1009 on an oversized one)."""
        message = await link.ws.receive()
        if message.type is WSMsgType.BINARY:
            data: bytes = message.data
            return data
        if message.type is WSMsgType.TEXT:
            self._metrics.count("sockets_closed_total", role=link.role, reason="text_message")
            link.request_close(WSCloseCode.UNSUPPORTED_DATA, flush=False)
        elif message.type is WSMsgType.ERROR and link.ws.close_code == WSCloseCode.MESSAGE_TOO_BIG:
            self._metrics.count("sockets_closed_total", role=link.role, reason="message_too_big")
        return None


__all__ = ["HEARTBEAT_S", "MAX_MESSAGE_BYTES", "OUTBOX_LIMIT_BYTES", "Rendezvous", "SocketSettings"]
