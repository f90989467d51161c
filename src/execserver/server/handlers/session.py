"""`initialize`, `environment/info`, `environment/status`, `session/close` (extension)."""

from __future__ import annotations

import msgspec

from execserver.errors import InvalidRequest
from execserver.protocol.session import (
    EnvironmentInfo,
    EnvironmentInfoWithExtensions,
    EnvironmentStatusResponse,
    ExecutorExtensions,
    InitializeParams,
    InitializeResponse,
    ProcessEndingsInfo,
    SessionCloseResponse,
)
from execserver.server.connection import Connection, State
from execserver.server.session import SessionRegistry


class SessionHandler:
    def __init__(
        self,
        connection: Connection,
        registry: SessionRegistry,
        info: EnvironmentInfo,
        process_endings: ProcessEndingsInfo | None = None,
    ) -> None:
        self._connection = connection
        self._registry = registry
        self._info = info
        self._extended_info: EnvironmentInfo | None = None
        if process_endings is not None:
            self._extended_info = EnvironmentInfoWithExtensions(
                **msgspec.structs.asdict(info),
                extensions=ExecutorExtensions(process_endings=process_endings),
            )

    def initialize(self, params: InitializeParams) -> InitializeResponse:
        connection = self._connection
        if connection.state is not State.NEW:
            raise InvalidRequest("initialize may only be sent once per connection")
        if params.resume_session_id is None:
            session = self._registry.create(connection)
        else:
            session = self._registry.resume(params.resume_session_id, connection)
        connection.session = session
        session.set_extensions(frozenset(params.extensions or ()))
        connection.advance("initialize")
        return InitializeResponse(session_id=session.id, environment_info=self.info(None))

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
        """The environment; with the `extensions` object for a client that asked for any
        extension (the reference's clients never do, so they see exactly its shape)."""
        session = self._connection.session
        if self._extended_info is not None and session is not None and session.extensions:
            return self._extended_info
        return self._info

    def status(self, _: None) -> EnvironmentStatusResponse:
        return EnvironmentStatusResponse(status="ready")
