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
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from execserver.local.blocking import FS_WAIT_TIMEOUT_S, Client
from execserver.local.directory import (
    DETACHED_RETENTION_S,
    MAX_ATTACHERS,
    MAX_DETACHED_PER_PRINCIPAL,
)
from execserver.local.endings import DEFAULT_KILL_GRACE_S
from execserver.local.file_system import LocalFileSystem
from execserver.local.host import Host, HostConfig
from execserver.local.journal import JOURNAL_BUDGET_BYTES, JOURNAL_MAX_BYTES
from execserver.local.network.options import ExecutorNetworkOptions
from execserver.local.output_log import MAX_RETAINED_OUTPUT_BYTES
from execserver.local.peer import cgroup_members, started_by_us
from execserver.local.process import CLOSED_PROCESS_RETENTION_S, MAX_PROCESSES_PER_SESSION
from execserver.observability.telemetry import Telemetry
from execserver.protocol.session import EnvironmentInfo
from execserver.rpc.server import ServerEndpoint
from execserver.server.auth import ANONYMOUS, Authenticator, AuthFailure
from execserver.server.connection import Connection
from execserver.server.dispatch import Services, build_router
from execserver.server.handlers.http import MAX_HTTP_STREAMS
from execserver.server.session import (
    DETACHED_SESSION_TTL_S,
    MAX_SESSIONS,
    MAX_SESSIONS_PER_PRINCIPAL,
    SessionRegistry,
)
from execserver.tasks import TaskOwner
from execserver.transport.base import MessageChannel
from execserver.transport.held import held_sends
from execserver.transport.http import HttpRequest, HttpResponse
from execserver.transport.stdio import StdioConnection
from execserver.transport.websocket import (
    PING_INTERVAL_S,
    WebSocketServerConnection,
    serve_websocket,
)

if TYPE_CHECKING:  # relay mode (and its cryptography) is loaded only when it is used
    from execserver.relay.executor import RelayExecutor

log = logging.getLogger(__name__)

CHILD_REFUSED = (
    b"connections from processes started by this executor are refused (serve "
    b"--allow-child-connections lets them in)"
)


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
    """Sessions on the server that hold something (server/session.py); past it a new session
    replaces the oldest idle detached one, or `initialize` is refused. As many empty detached
    sessions are kept for a resume, uncounted."""
    max_sessions_per_principal: int = MAX_SESSIONS_PER_PRINCIPAL
    """Sessions of one principal, with an authenticator (without, all clients are one)."""
    max_processes_per_session: int = MAX_PROCESSES_PER_SESSION
    """Process table entries per session (running or retained); `process/start` beyond it is
    refused."""
    max_retained_output: int = MAX_RETAINED_OUTPUT_BYTES
    """Output retained by all processes together; past it the oldest chunks anywhere go."""
    max_http_streams: int = MAX_HTTP_STREAMS
    """Streamed `http/request` bodies open at once on one connection."""
    process_cgroups: bool = True
    """Start each process in its own cgroup (local/cgroup.py) where the host allows it, so
    kills reach daemons and double-forked orphans and limits can be enforced."""
    kill_grace_s: float = DEFAULT_KILL_GRACE_S
    """After a timeout's SIGTERM, how long a process tree has before SIGKILL."""
    blocking_threads: int = 8
    """Threads for blocking filesystem work (whole-file reads and writes, walks, copies)."""
    max_memory: int | None = None
    """The memory budget of requests (local/memory.py); None: derived from the machine."""
    fs_wait_timeout_s: float = FS_WAIT_TIMEOUT_S
    """How long an fs request waits for a FIFO, socket or device to become ready."""
    authenticator: Authenticator | None = None
    """WebSocket authentication (server.auth); None lets every client in."""
    refuse_child_connections: bool = True
    """Refuse WebSocket upgrades from processes this server started (local/peer.py), so a
    command cannot drive its own executor through the loopback listener."""
    telemetry: Telemetry | None = None
    """Spans and metrics (observability); None records nothing and costs nothing."""
    metrics_page: Callable[[], bytes] | None = None
    """Renders `/metrics` (Prometheus text) on the WebSocket listener; None: no such page."""
    state_dir: str | None = None
    """Where the server keeps output journals (in `journal-<pid>/`, removed at shutdown); None:
    output past the in-memory window is dropped, as in the reference."""
    journal_max_bytes: int = JOURNAL_MAX_BYTES
    """Output journaled per process: head and tail kept, the middle dropped past it."""
    journal_budget_bytes: int = JOURNAL_BUDGET_BYTES
    """Output journaled by all processes together: the oldest segments go first past it."""
    detached_retention_s: float = DETACHED_RETENTION_S
    """How long a detached process stays listable and attachable after it closed."""
    max_detached_per_principal: int = MAX_DETACHED_PER_PRINCIPAL
    """Detached processes per principal (running or retained); `detach` beyond it is refused."""
    max_attachers: int = MAX_ATTACHERS
    """Sessions attached to one process at once; `process/attach` beyond it is refused."""
    network: ExecutorNetworkOptions = field(default_factory=ExecutorNetworkOptions)
    """`--linux-sandbox-transparent-tcp`, `--tcp-upstream-proxy`."""


class ExecServer:
    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = config = config or ServerConfig()
        loop = asyncio.get_running_loop()
        self.host = Host(
            HostConfig(
                closed_process_retention_s=config.closed_process_retention_s,
                max_processes_per_session=config.max_processes_per_session,
                max_retained_output=config.max_retained_output,
                process_cgroups=config.process_cgroups,
                subreaper=config.subreaper,
                kill_grace_s=config.kill_grace_s,
                network=config.network,
                blocking_threads=config.blocking_threads,
                max_memory=config.max_memory,
                fs_wait_timeout_s=config.fs_wait_timeout_s,
                telemetry=config.telemetry,
                journal_dir=None
                if config.state_dir is None
                else os.path.join(config.state_dir, f"journal-{os.getpid()}"),
                journal_dir_owned=True,
                journal_max_bytes=config.journal_max_bytes,
                journal_budget_bytes=config.journal_budget_bytes,
                detached_retention_s=config.detached_retention_s,
                max_detached_per_principal=config.max_detached_per_principal,
                max_attachers=config.max_attachers,
                exit_scope=held_sends,
            )
        )
        self.registry = SessionRegistry(
            self.host.process_table,
            max_sessions=config.max_sessions,
            max_per_principal=(
                None if config.authenticator is None else config.max_sessions_per_principal
            ),
            ttl_s=config.session_ttl_s,
        )
        self.info: EnvironmentInfo = self.host.info
        self._services = Services(
            registry=self.registry,
            info=self.info,
            fs=self.host.fs,
            http_client=self.host.http,
            discovery=self.host.discovery,
            max_http_streams=config.max_http_streams,
            process_endings=self.host.process_endings,
            client_fs=self._client_fs,
        )
        self._connections: set[Connection] = set()
        self._closing_connections = TaskOwner("closing connections")
        if config.telemetry is not None:
            config.telemetry.observe(
                lambda: len(self._connections),
                self.registry.active_processes,
                self.registry.counts,
            )
        self._listener: asyncio.Server | None = None
        self._stdio: StdioConnection | None = None
        self._closing = False
        self.relay: RelayExecutor | None = None
        """The relay link in relay mode (`serve_relay`)."""
        self.stopped = loop.create_future()

    # -- connections ---------------------------------------------------------------------------

    def open_connection(
        self, channel: MessageChannel, principal: str = ANONYMOUS
    ) -> ServerEndpoint[Any]:
        """Serve one connection on `channel` (any transport); returns its receiver."""
        connection = Connection(channel, self._connection_closed, principal)
        telemetry = self.config.telemetry
        endpoint: ServerEndpoint[Any] = ServerEndpoint(
            channel,
            build_router(connection, self._services),
            gate=connection.check_gate,
            on_notification=connection.on_notification,
            on_close=connection.closed,
            observer=telemetry,
        )
        connection.bind(endpoint)
        self._connections.add(connection)
        if telemetry is not None:
            telemetry.connection_opened()
        log.info("connection opened", extra={"peer": channel.label, "principal": principal})
        return endpoint

    def _client_fs(self, connection: Connection) -> LocalFileSystem:
        """The host's filesystem for one connection: blocking work in its own turns (and its
        principal's share, with authentication); a whole-file read's bytes stay in the memory
        budget until its response has left the send buffer."""
        loop = asyncio.get_running_loop()
        channel = connection.channel

        def after_send(release: Callable[[], None]) -> None:
            # Called as the handler returns; the response is queued in the same loop turn.
            loop.call_soon(channel.call_when_writable, release)

        principal = None if self.config.authenticator is None else connection.principal
        return self.host.fs.for_client(Client(str(id(connection)), principal), after_send)

    def _connection_closed(self, connection: Connection) -> None:
        self._connections.discard(connection)
        if not self._closing_connections.closed:
            self._closing_connections.spawn(connection.aclose())
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

    async def listen_websocket(
        self,
        host: str,
        port: int,
        *,
        sock: socket.socket | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> tuple[str, int]:
        """Start the WebSocket listener (over TLS with `tls`; on `sock` if given: a listening
        socket carried over by an upgrade in place); returns the bound (host, port)."""

        def on_open(ws: WebSocketServerConnection) -> ServerEndpoint[Any]:
            principal = ws.request.principal if ws.request is not None else None
            return self.open_connection(ws, principal or ANONYMOUS)

        self._listener = await serve_websocket(
            host,
            port,
            on_open,
            hook=self._admit,
            ping_interval_s=self.config.ping_interval_s,
            pages={} if self.config.metrics_page is None else {"/metrics": self._metrics},
            sock=sock,
            tls=tls,
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

    async def serve_relay(self, registry_url: str, environment_id: str, token: str) -> None:
        """Relay mode: register with the registry at `registry_url` and serve every harness
        stream through its rendezvous as a connection of this server, until cancelled.

        Raises `RegistryError` when the registry refuses this executor for good.
        Cancellation: the rendezvous socket and its streams are dropped.
        """
        from execserver.relay.executor import RelayExecutor

        executor = RelayExecutor(registry_url, environment_id, token, self.open_connection)
        self.relay = executor
        await executor.run()

    def _metrics(self, request: HttpRequest) -> HttpResponse:
        assert self.config.metrics_page is not None
        return HttpResponse(
            200,
            self.config.metrics_page(),
            headers=[("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        )

    def _admit(self, request: HttpRequest) -> HttpResponse | None:
        """A valid upgrade request: refuse our own processes, then authenticate."""
        if self.config.refuse_child_connections and self._from_our_process(request):
            return HttpResponse(403, CHILD_REFUSED)
        return self._authenticate(request)

    def _from_our_process(self, request: HttpRequest) -> bool:
        peer, local = request.peer_address, request.local_address
        if not (isinstance(peer, tuple) and isinstance(local, tuple)):
            return False
        # The first base holds every process cgroup (v2's one, v1's `pids`; the others hold
        # only limited processes).
        pid = started_by_us(peer, local, cgroup_members(self.host.cgroups.bases[:1]))
        if pid is not None:
            log.warning(
                "connection from a process this executor started refused", extra={"pid": pid}
            )
        return pid is not None

    def _authenticate(self, request: HttpRequest) -> HttpResponse | None:
        authenticator = self.config.authenticator
        if authenticator is None:
            return None
        try:
            request.principal = authenticator.authenticate(request.headers.get("authorization"))
        except AuthFailure as failure:
            return HttpResponse(401, failure.body.encode())
        return None

    def listening_fds(self) -> list[int]:
        """The fds of the WebSocket listener's sockets (none without one)."""
        if self._listener is None:
            return []
        return [sock.fileno() for sock in self._listener.sockets]

    @property
    def is_stdio(self) -> bool:
        return self._stdio is not None

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
        await self._closing_connections.join()
        await self._closing_connections.aclose()
        await self.registry.aclose()
        if self._stdio is not None:
            self._stdio.close()
        await self.host.aclose()
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._listener.wait_closed(), 1.0)
