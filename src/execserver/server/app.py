"""The executor: listeners, connections, sessions, and an orderly shutdown.

`ExecServer` wires transports to connections and connections to sessions. Shutdown stops the
listener, drops every connection without a closing handshake (as the reference does), kills
every process tree of every session and waits until the children are reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from execserver.local import tree
from execserver.local.cgroup import ProcessCgroups
from execserver.local.file_system import LocalFileSystem
from execserver.local.http_client import LocalHttpClient
from execserver.local.info import environment_info
from execserver.local.output_log import MAX_RETAINED_OUTPUT_BYTES, RetainedOutputBudget
from execserver.local.process import CLOSED_PROCESS_RETENTION_S, MAX_PROCESSES_PER_SESSION
from execserver.local.reaper import ChildReaper
from execserver.local.sandbox.fs_runner import SandboxedFileSystem
from execserver.observability.telemetry import Telemetry
from execserver.protocol.session import EnvironmentInfo
from execserver.rpc.server import ServerEndpoint
from execserver.server.auth import ANONYMOUS, Authenticator, AuthFailure
from execserver.server.connection import Connection
from execserver.server.dispatch import Services, build_router
from execserver.server.handlers.http import MAX_HTTP_STREAMS
from execserver.server.session import DETACHED_SESSION_TTL_S, MAX_SESSIONS, SessionRegistry
from execserver.transport.base import MessageChannel
from execserver.transport.stdio import StdioConnection
from execserver.transport.websocket import (
    PING_INTERVAL_S,
    HttpRequest,
    HttpResponse,
    WebSocketServerConnection,
    serve_websocket,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Tunables of one server. Defaults are the reference's values."""

    session_ttl_s: float = DETACHED_SESSION_TTL_S
    """How long a detached session waits for a resume before its processes are killed."""
    closed_process_retention_s: float = CLOSED_PROCESS_RETENTION_S
    """How long a finished process stays readable (and its id taken)."""
    ping_interval_s: float = PING_INTERVAL_S
    """WebSocket keepalive ping period."""
    subreaper: bool = False
    """Become the child subreaper and reap orphaned descendants (only for a dedicated process)."""
    max_sessions: int = MAX_SESSIONS
    """Sessions on the server (attached or detached); `initialize` beyond it is refused."""
    max_processes_per_session: int = MAX_PROCESSES_PER_SESSION
    """Process table entries per session (running or retained); `process/start` beyond it is
    refused."""
    max_retained_output: int = MAX_RETAINED_OUTPUT_BYTES
    """Output retained by all processes together; past it the oldest chunks anywhere go."""
    max_http_streams: int = MAX_HTTP_STREAMS
    """Streamed `http/request` bodies open at once on one connection."""
    process_cgroups: bool = False
    """Start each process in its own cgroup (local/cgroup.py) where the host allows it, so
    kills reach daemons and double-forked orphans (only for a dedicated process)."""
    blocking_threads: int = 8
    """Threads for blocking filesystem work (whole-file reads and writes, walks, copies)."""
    authenticator: Authenticator | None = None
    """WebSocket authentication (server.auth); None lets every client in."""
    telemetry: Telemetry | None = None
    """Spans and metrics (observability); None records nothing and costs nothing."""
    metrics_page: Callable[[], bytes] | None = None
    """Renders `/metrics` (Prometheus text) on the WebSocket listener; None: no such page."""


class ExecServer:
    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = config or ServerConfig()
        loop = asyncio.get_running_loop()
        self.reaper = ChildReaper(loop)
        if self.config.subreaper:
            self.reaper.become_subreaper()
        self.cgroups = (
            ProcessCgroups.create() if self.config.process_cgroups else ProcessCgroups.disabled()
        )
        self.registry = SessionRegistry(
            self.reaper,
            cgroups=self.cgroups,
            max_sessions=self.config.max_sessions,
            max_processes_per_session=self.config.max_processes_per_session,
            output_budget=RetainedOutputBudget(self.config.max_retained_output),
            ttl_s=self.config.session_ttl_s,
            closed_retention_s=self.config.closed_process_retention_s,
            telemetry=self.config.telemetry,
        )
        self.info: EnvironmentInfo = environment_info()
        self.http_client = LocalHttpClient()
        self._blocking = ThreadPoolExecutor(
            max_workers=self.config.blocking_threads, thread_name_prefix="execserver-io"
        )
        self._services = Services(
            registry=self.registry,
            info=self.info,
            fs=LocalFileSystem(self._blocking, SandboxedFileSystem(self.reaper, self._blocking)),
            http_client=self.http_client,
            max_http_streams=self.config.max_http_streams,
        )
        self._connections: set[Connection] = set()
        if self.config.telemetry is not None:
            self.config.telemetry.observe(
                lambda: len(self._connections), self.registry.active_processes
            )
        self._listener: asyncio.Server | None = None
        self._stdio: StdioConnection | None = None
        self._closing = False
        self.stopped = loop.create_future()

    # -- connections ---------------------------------------------------------------------------

    def open_connection(
        self, channel: MessageChannel, principal: str = ANONYMOUS
    ) -> ServerEndpoint:
        connection = Connection(channel, self._connection_closed, principal)
        telemetry = self.config.telemetry
        endpoint = ServerEndpoint(
            channel,
            build_router(connection, self._services),
            gate=connection.check_gate,
            on_notification=connection.on_notification,
            on_close=connection.closed,
            telemetry=telemetry,
        )
        connection.bind(endpoint)
        self._connections.add(connection)
        if telemetry is not None:
            telemetry.connection_opened()
        log.info("connection opened", extra={"peer": channel.label, "principal": principal})
        return endpoint

    def _connection_closed(self, connection: Connection) -> None:
        self._connections.discard(connection)
        session = connection.session
        log.info(
            "connection closed",
            extra={
                "peer": connection.channel.label,
                "session_id": session.id if session is not None else None,
            },
        )
        if session is not None and session.connection is connection and not self._closing:
            session.detach(self.registry)

    # -- listeners -----------------------------------------------------------------------------

    async def listen_websocket(self, host: str, port: int) -> tuple[str, int]:
        """Start the WebSocket listener; returns the bound (host, port)."""

        def on_open(ws: WebSocketServerConnection) -> ServerEndpoint:
            principal = ws.request.principal if ws.request is not None else None
            return self.open_connection(ws, principal or ANONYMOUS)

        self._listener = await serve_websocket(
            host,
            port,
            on_open,
            hook=self._authenticate if self.config.authenticator is not None else None,
            ping_interval_s=self.config.ping_interval_s,
            pages={} if self.config.metrics_page is None else {"/metrics": self._metrics},
        )
        sockname = self._listener.sockets[0].getsockname()
        return sockname[0], sockname[1]

    async def serve_stdio(self, input_fd: int = 0, output_fd: int = 1) -> None:
        """Serve the single stdio connection until its input ends, then stop the server."""
        stdio = StdioConnection()
        self._stdio = stdio
        endpoint = self.open_connection(stdio)
        await stdio.open(endpoint, input_fd, output_fd)
        await stdio.closed
        self.stop()

    def _metrics(self, request: HttpRequest) -> HttpResponse:
        assert self.config.metrics_page is not None
        return HttpResponse(
            200,
            self.config.metrics_page(),
            headers=[("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        )

    def _authenticate(self, request: HttpRequest) -> HttpResponse | None:
        authenticator = self.config.authenticator
        assert authenticator is not None
        try:
            request.principal = authenticator.authenticate(request.headers.get("authorization"))
        except AuthFailure as failure:
            return HttpResponse(401, failure.body.encode())
        return None

    def stop(self) -> None:
        if not self.stopped.done():
            self.stopped.set_result(None)

    async def aclose(self) -> None:
        """Stop listening, drop connections, kill every process tree, reap every child."""
        self._closing = True
        if self._listener is not None:
            self._listener.close()
        for connection in list(self._connections):
            connection.channel.abort()
            if connection.endpoint is not None:
                await connection.endpoint.aclose()
        await self.registry.aclose()
        self.cgroups.close()
        if self.config.subreaper:
            # Orphans we adopted that no cgroup or tree walk attributed to a process.
            tree.kill_descendants(os.getpid())
        if self._stdio is not None:
            self._stdio.close()
        self.reaper.close()
        self._blocking.shutdown(wait=False, cancel_futures=True)
        await self.http_client.aclose()
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._listener.wait_closed(), 1.0)
