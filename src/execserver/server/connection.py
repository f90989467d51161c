"""Per-connection state machine and resources.

Rule 1: a connection moves NEW -> INITIALIZED (a successful `initialize`) -> READY (the
`initialized` notification) -> CLOSED, and nothing else. A failed `initialize` leaves it NEW.
Rule 2: every method except `initialize` is gated by family: before READY it answers the
reference's "client must ..." errors. This module holds no method logic: handlers do.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from execserver.errors import Disconnected, InvalidRequest
from execserver.protocol import methods
from execserver.rpc.server import ServerEndpoint
from execserver.server.auth import ANONYMOUS
from execserver.server.file_handles import HandleTable
from execserver.server.missing_watches import MissingWatchSlot
from execserver.tasks import TaskOwner
from execserver.transport.base import MessageChannel, writable

if TYPE_CHECKING:
    from execserver.server.session import Session


class State(enum.Enum):
    NEW = "new"
    INITIALIZED = "initialized"
    READY = "ready"
    CLOSED = "closed"


# (state, event) -> next state; anything missing is not a legal transition.
_TRANSITIONS: dict[tuple[State, str], State] = {
    (State.NEW, "initialize"): State.INITIALIZED,
    (State.INITIALIZED, "initialized"): State.READY,
    (State.READY, "initialized"): State.READY,  # a second `initialized` is ignored
    (State.NEW, "close"): State.CLOSED,
    (State.INITIALIZED, "close"): State.CLOSED,
    (State.READY, "close"): State.CLOSED,
}


class Connection:
    """One client connection, attached to at most one session."""

    def __init__(
        self,
        channel: MessageChannel,
        on_closed: Callable[[Connection], None],
        principal: str = ANONYMOUS,
    ) -> None:
        self.channel = channel
        self.principal = principal
        """Who is on the other end (server.auth); a session is resumable only by its creator."""
        self.state = State.NEW
        self.session: Session | None = None
        self.taken_over = False
        self.session_closed = False
        """`session/close` ended this connection's session: nothing more can be asked."""
        # File handles belong to the connection, not the session: a resume does not carry them.
        self.handles = HandleTable()
        # Request ids of the streamed http/request bodies open now (reserved from the start).
        self.http_streams: set[str] = set()
        self.tasks = TaskOwner(f"connection {channel.label}")
        """Work that outlives a request but not the connection (streamed http bodies, the
        `fs/watchMissing` watch)."""
        self.missing_watch = MissingWatchSlot(self)
        self._on_closed = on_closed
        self.endpoint: ServerEndpoint[Any] | None = None

    def bind(self, endpoint: ServerEndpoint[Any]) -> None:
        self.endpoint = endpoint

    def advance(self, event: str) -> bool:
        """Apply `event`; returns False (state unchanged) if it is not legal now."""
        next_state = _TRANSITIONS.get((self.state, event))
        if next_state is None:
            return False
        self.state = next_state
        return True

    def check_gate(self, family: str) -> None:
        if self.taken_over:
            raise InvalidRequest("session has been resumed by another connection")
        if self.session_closed:
            raise InvalidRequest("session has been closed by session/close")
        if self.state is State.NEW:
            raise InvalidRequest(f"client must call initialize before using {family} methods")
        if self.state is State.INITIALIZED:
            raise InvalidRequest(f"client must send initialized before using {family} methods")

    def on_notification(self, method: str) -> bool:
        """Only `initialized` is a legal client notification, and only after `initialize`."""
        return method == methods.INITIALIZED and self.advance("initialized")

    def notify(self, method: str, params: object) -> None:
        if self.endpoint is not None:
            self.endpoint.notify(method, params)

    async def call(self, method: str, params: object) -> Any:
        """A request to the client (`network/policyRequest`): its result. Raises the client's
        error, or `Disconnected` when the connection is (or goes) away.

        Cancellation: the request is given up on; a late answer is dropped."""
        if self.endpoint is None:
            raise Disconnected("the connection is not serving yet")
        return await self.endpoint.call(method, params)

    async def writable(self) -> None:
        """Return once the outbound buffer is below its high-water mark.

        Cancellation: safe.
        """
        await writable(self.channel)

    def closed(self) -> None:
        """The transport is gone: stop the connection's work (`aclose()` waits for it)."""
        self.advance("close")
        self.tasks.cancel_all()
        self._on_closed(self)

    async def aclose(self) -> None:
        """Wait for the connection's tasks and release its handles.

        Cancellation: the handles are released anyway.
        """
        try:
            if self.endpoint is not None:
                await self.endpoint.aclose()
            await self.tasks.aclose()
        finally:
            await asyncio.shield(self.missing_watch.aclose())
            await asyncio.shield(self.handles.aclose())
