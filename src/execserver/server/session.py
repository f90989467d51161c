"""Sessions: the resumable unit that owns a process table, and the registry that finds them.

A session outlives its connection: when the connection goes, the session is detached, its
processes keep running and their output keeps accumulating; a later `initialize` with
`resumeSessionId` re-attaches it. A session left detached for `ttl_s` is expired: every
process tree is killed and the id is forgotten. Notifications go only to the attached
connection; while it is congested, process output reading pauses (back-pressure).

Detached sessions cannot lock new clients out: at the server's cap (or a principal's), a new
session takes the place of the oldest *idle* detached session (no process running), else of
the oldest detached session of the same principal; only when neither exists is it refused.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from execserver.environment.process import (
    ClosedEvent,
    ExitedEvent,
    HostedProcess,
    ProcessEvent,
    ProcessTable,
)
from execserver.errors import Disconnected, InvalidRequest, SessionAttached
from execserver.protocol import methods
from execserver.protocol.network import (
    NetworkPolicyDecisionNotification,
    NetworkPolicyRequestParams,
)
from execserver.protocol.process import (
    PROCESS_ENDINGS,
    ProcessClosedNotification,
    ProcessExitedNotification,
    ProcessExitedWithTermination,
    ProcessOutputChunk,
    ProcessOutputNotification,
    ProcessWaitingForInputNotification,
)
from execserver.tasks import TaskOwner
from execserver.transport.base import MessageChannel

log = logging.getLogger(__name__)

DETACHED_SESSION_TTL_S = 80.0
MAX_SESSIONS = 256
"""Sessions on one server, attached or detached."""
MAX_SESSIONS_PER_PRINCIPAL = 64
"""Sessions of one principal (servers with authentication: without it, every client is the
same principal and only `MAX_SESSIONS` applies)."""


class Attachment(Protocol):
    """What a session needs from the connection it is attached to."""

    channel: MessageChannel
    principal: str

    def notify(self, method: str, params: object) -> None: ...

    async def call(self, method: str, params: object) -> Any:
        """A request to the client; its result (raises its error, or when the connection
        goes away)."""
        ...


ProcessTableFactory = Callable[[str, str], ProcessTable]
"""Makes the process table of a new session, given its id (for logs) and its principal."""


class Session:
    def __init__(self, session_id: str, processes: ProcessTable, principal: str) -> None:
        self.id = session_id
        self.principal = principal
        self.processes = processes
        self.connection: Attachment | None = None
        self.extensions: frozenset[str] = frozenset()
        """Extensions the attached client asked for in `initialize` (e.g. `processEndings`)."""
        self._expiry: asyncio.TimerHandle | None = None
        self._waiting_for_drain = False
        processes.listener = self._on_process_event
        processes.network_peer = self

    def _on_process_event(self, pid: str, process: HostedProcess, event: ProcessEvent) -> None:
        connection = self.connection
        if connection is None:
            return
        if isinstance(event, ProcessOutputChunk):
            connection.notify(
                methods.PROCESS_OUTPUT,
                ProcessOutputNotification(
                    process_id=pid, seq=event.seq, stream=event.stream, chunk=event.chunk
                ),
            )
        elif isinstance(event, ExitedEvent):
            if event.termination is not None and PROCESS_ENDINGS in self.extensions:
                exited: ProcessExitedNotification = ProcessExitedWithTermination(
                    process_id=pid,
                    seq=event.seq,
                    exit_code=event.exit_code,
                    sandbox_denied=event.sandbox_denied,
                    termination=event.termination,
                )
            else:
                exited = ProcessExitedNotification(
                    process_id=pid,
                    seq=event.seq,
                    exit_code=event.exit_code,
                    sandbox_denied=event.sandbox_denied,
                )
            connection.notify(methods.PROCESS_EXITED, exited)
        elif isinstance(event, ClosedEvent):
            connection.notify(
                methods.PROCESS_CLOSED, ProcessClosedNotification(process_id=pid, seq=event.seq)
            )
        if not self._waiting_for_drain and connection.channel.is_congested():
            self._waiting_for_drain = True
            self.processes.pause_output()
            connection.channel.call_when_writable(self._drained)

    # -- NetworkPolicyPeer: managed network proxies of this session's processes ---------------

    def policy_decision(self, notification: NetworkPolicyDecisionNotification) -> None:
        connection = self.connection
        if connection is not None:
            connection.notify(methods.NETWORK_POLICY_DECISION, notification)

    async def ask_policy(self, request: NetworkPolicyRequestParams, timeout_s: float) -> Any:
        """Ask the attached client (none attached: refused at once).

        Cancellation: the request is given up on; a late answer is dropped."""
        connection = self.connection
        if connection is None:
            raise Disconnected("no client is attached to the session")
        async with asyncio.timeout(timeout_s):
            return await connection.call(methods.NETWORK_POLICY_REQUEST, request)

    def set_extensions(self, extensions: frozenset[str]) -> None:
        """What the attached client asked for in `initialize`."""
        self.extensions = extensions
        wanted = PROCESS_ENDINGS in extensions
        self.processes.waiting_listener = self._on_waiting_for_input if wanted else None

    def _on_waiting_for_input(
        self, process_id: str, process: HostedProcess, pid: int, command: str
    ) -> None:
        connection = self.connection
        if connection is None or PROCESS_ENDINGS not in self.extensions:
            return
        connection.notify(
            methods.PROCESS_WAITING_FOR_INPUT,
            ProcessWaitingForInputNotification(
                process_id=process_id,
                seq=process.last_seq,
                pid=pid,
                command=command,
            ),
        )

    def _drained(self) -> None:
        self._waiting_for_drain = False
        self.processes.resume_output()

    def attach(self, connection: Attachment) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self.connection = connection

    def detach(self, registry: SessionRegistry) -> None:
        self.connection = None
        if self._waiting_for_drain:
            self._drained()
        registry.note_detached(self)
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_later(registry.ttl_s, registry.expire, self.id)
        if log.isEnabledFor(logging.INFO):  # counting the processes is not free
            log.info(
                "session detached",
                extra={
                    "session_id": self.id,
                    "processes": self.processes.active,
                    "ttl_s": registry.ttl_s,
                },
            )

    async def aclose(self) -> None:
        """Kill every process tree of this session and wait for the children to be reaped."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self.connection = None
        await self.processes.aclose()


class SessionRegistry:
    """All sessions of one server."""

    def __init__(
        self,
        new_table: ProcessTableFactory,
        *,
        ttl_s: float = DETACHED_SESSION_TTL_S,
        max_sessions: int = MAX_SESSIONS,
        max_per_principal: int | None = None,
    ) -> None:
        self._new_table = new_table
        self.max_sessions = max_sessions
        self.max_per_principal = max_per_principal
        self.ttl_s = ttl_s
        self._sessions: dict[str, Session] = {}
        self._detached: OrderedDict[str, Session] = OrderedDict()
        """Detached sessions, the longest detached first (eviction order)."""
        self._closing = TaskOwner("session expiries")

    def __len__(self) -> int:
        return len(self._sessions)

    def active_processes(self) -> int:
        """Processes of every session that have not closed yet."""
        return sum(session.processes.active for session in self._sessions.values())

    def is_detached(self, session_id: str) -> bool:
        """Whether the session exists and waits for a resume."""
        return session_id in self._detached

    def note_detached(self, session: Session) -> None:
        self._detached[session.id] = session

    def _evict(self, *, principal: str | None = None, idle_only: bool = False) -> bool:
        """Expire the longest-detached session matching; False if there is none."""
        for session in self._detached.values():
            if principal is not None and session.principal != principal:
                continue
            if idle_only and session.processes.active:
                continue
            log.info("session evicted", extra={"session_id": session.id})
            self.expire(session.id)
            return True
        return False

    def _make_room(self, principal: str) -> None:
        """Evict a detached session if a cap is reached (see the module docstring)."""
        cap = self.max_per_principal
        if cap is not None:
            owned = sum(1 for s in self._sessions.values() if s.principal == principal)
            if owned >= cap and not (
                self._evict(principal=principal, idle_only=True) or self._evict(principal=principal)
            ):
                raise InvalidRequest(
                    f"too many sessions for this client (limit {cap} per principal, all "
                    "attached); close one or retry later"
                )
        if len(self._sessions) >= self.max_sessions and not (
            self._evict(idle_only=True) or self._evict(principal=principal)
        ):
            raise InvalidRequest(
                f"too many sessions on this server (limit {self.max_sessions}; detached ones "
                "count while a process of theirs runs); resume an existing session or retry later"
            )

    def create(self, connection: Attachment) -> Session:
        self._make_room(connection.principal)
        session_id = str(uuid.uuid4())
        table = self._new_table(session_id, connection.principal)
        session = Session(session_id, table, connection.principal)
        self._sessions[session.id] = session
        session.attach(connection)
        log.info("session created", extra={"session_id": session.id})
        return session

    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    def adopt(self, session_id: str, principal: str) -> Session:
        """A session carried over by an upgrade in place (the caller fills its table, then
        detaches it: it waits a fresh TTL for its client to resume it)."""
        session = Session(session_id, self._new_table(session_id, principal), principal)
        self._sessions[session_id] = session
        return session

    def resume(self, session_id: str, connection: Attachment) -> Session:
        session = self._sessions.get(session_id)
        # Deliberate difference `resume_same_principal`: another principal is told the session
        # does not exist, exactly as for an unknown id (so it learns nothing about it).
        if session is None or session.principal != connection.principal:
            raise InvalidRequest(f"unknown session id {session_id}")
        if session.connection is not None and session.connection is not connection:
            raise SessionAttached(f"session {session_id} is already attached to another connection")
        self._detached.pop(session_id, None)
        session.attach(connection)
        log.info("session resumed", extra={"session_id": session_id})
        return session

    async def close(self, session: Session) -> None:
        """End `session` at its client's request (`session/close`): forget it and kill its
        process trees now rather than after the detach window."""
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]
            self._detached.pop(session.id, None)
        log.info("session closed", extra={"session_id": session.id})
        await session.aclose()

    def expire(self, session_id: str) -> None:
        session = self._sessions.pop(session_id, None)
        self._detached.pop(session_id, None)
        if session is None:
            return
        log.info(
            "session expired",
            extra={
                "session_id": session_id,
                "ttl_s": self.ttl_s,
                "processes": session.processes.active,
            },
        )
        self._closing.spawn(session.aclose())

    async def aclose(self) -> None:
        """Close every session (kill all process trees) and wait for pending expiries."""
        sessions = list(self._sessions.values())
        self._sessions.clear()
        self._detached.clear()
        await asyncio.gather(*(s.aclose() for s in sessions))
        # Expiries in progress are killing their trees: let them finish rather than cancel them.
        await self._closing.join()
        await self._closing.aclose()
