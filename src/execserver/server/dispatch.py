"""The method table of one connection: one line per method, with its gate family."""

from __future__ import annotations

from execserver.protocol import methods
from execserver.protocol.process import (
    ProcessReadParams,
    ProcessSignalParams,
    ProcessStartParams,
    ProcessTerminateParams,
    ProcessWriteParams,
)
from execserver.protocol.session import EnvironmentInfo, InitializeParams
from execserver.rpc.router import Router
from execserver.server.connection import Connection
from execserver.server.handlers.process import ProcessHandler
from execserver.server.handlers.session import SessionHandler
from execserver.server.session import SessionRegistry

EXEC = "exec"
ENVIRONMENT_INFO = "environment info"
ENVIRONMENT_STATUS = "environment status"


def build_router(
    connection: Connection, registry: SessionRegistry, info: EnvironmentInfo
) -> Router:
    router = Router()
    session = SessionHandler(connection, registry, info)
    process = ProcessHandler(connection)

    router.add(methods.INITIALIZE, InitializeParams, session.initialize, gate=None)
    router.add(methods.ENVIRONMENT_INFO, None, session.info, gate=ENVIRONMENT_INFO)
    router.add(methods.ENVIRONMENT_STATUS, None, session.status, gate=ENVIRONMENT_STATUS)

    router.add(methods.PROCESS_START, ProcessStartParams, process.start, gate=EXEC)
    router.add(methods.PROCESS_READ, ProcessReadParams, process.read, gate=EXEC)
    router.add(methods.PROCESS_WRITE, ProcessWriteParams, process.write, gate=EXEC)
    router.add(methods.PROCESS_SIGNAL, ProcessSignalParams, process.signal, gate=EXEC)
    router.add(methods.PROCESS_TERMINATE, ProcessTerminateParams, process.terminate, gate=EXEC)
    return router
