"""`initialize`, `environment/info`, `environment/status`, `session/close` (extension)."""

from __future__ import annotations

from execserver.errors import InvalidRequest
from execserver.protocol.session import (
    EnvironmentInfo,
    EnvironmentStatusResponse,
    InitializeParams,
    InitializeResponse,
    SessionCloseResponse,
)
from execserver.server.connection import Connection, State
from execserver.server.session import SessionRegistry


class SessionHandler:
    def __init__(
        self, connection: Connection, registry: SessionRegistry, info: EnvironmentInfo
    ) -> None:
        self._connection = connection
        self._registry = registry
        self._info = info

    def initialize(self, params: InitializeParams) -> InitializeResponse:
        connection = self._connection
        if connection.state is not State.NEW:
            raise InvalidRequest("initialize may only be sent once per connection")
        if params.resume_session_id is None:
            session = self._registry.create(connection)
        else:
            session = self._registry.resume(params.resume_session_id, connection)
        connection.session = session
        connection.advance("initialize")
        return InitializeResponse(session_id=session.id, environment_info=self._info)

    async def close(self, _: None) -> SessionCloseResponse:
        """Extension `session/close`: kill the session's processes and forget it now; the
        connection answers nothing after this but errors (the client disconnects)."""
        connection = self._connection
        session = connection.session
        connection.session = None
        connection.session_closed = True
        if session is not None:
            await self._registry.close(session)
        return SessionCloseResponse()

    def info(self, _: None) -> EnvironmentInfo:
        return self._info

    def status(self, _: None) -> EnvironmentStatusResponse:
        return EnvironmentStatusResponse(status="ready")
