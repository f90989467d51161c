"""`process/*`: params -> the session's `ProcessTable` -> response. No error handling here."""

from __future__ import annotations

from collections.abc import Awaitable

import msgspec

from execserver.environment.process import HostedProcess, ProcessTable
from execserver.errors import InvalidParams
from execserver.protocol.process import (
    PROCESS_ENDINGS,
    ProcessCloseStdinParams,
    ProcessReadParams,
    ProcessReadResponse,
    ProcessReadWithTermination,
    ProcessSignalParams,
    ProcessSignalResponse,
    ProcessStartParams,
    ProcessStartResponse,
    ProcessTerminateParams,
    ProcessTerminateResponse,
    ProcessWaitParams,
    ProcessWaitResponse,
    ProcessWriteParams,
    ProcessWriteResponse,
)
from execserver.protocol.process_handles import (
    EmptyResponse,
    ProcessAttachParams,
    ProcessAttachResponse,
    ProcessDetachParams,
    ProcessKillParams,
    ProcessListResponse,
    ProcessResizeParams,
)
from execserver.server.connection import Connection

# Long polls are capped so a huge waitMs cannot overflow the event loop's timer arithmetic.
MAX_WAIT_S = 24 * 3600.0


class ProcessHandler:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    @property
    def _table(self) -> ProcessTable:
        session = self._connection.session
        assert session is not None, "gated: only reachable after initialize"
        return session.processes

    def start(
        self, params: ProcessStartParams
    ) -> ProcessStartResponse | Awaitable[ProcessStartResponse]:
        started = self._table.start(params)
        if isinstance(started, Awaitable):
            return self._started_later(params, started)
        return self._started(params, started)

    async def _started_later(
        self, params: ProcessStartParams, started: Awaitable[HostedProcess]
    ) -> ProcessStartResponse:
        return self._started(params, await started)

    @staticmethod
    def _started(params: ProcessStartParams, process: HostedProcess) -> ProcessStartResponse:
        return ProcessStartResponse(
            process_id=params.process_id,
            sandbox_type=process.sandbox_type,
            handle=process.handle if params.detach else None,
        )

    def read(
        self, params: ProcessReadParams
    ) -> ProcessReadResponse | Awaitable[ProcessReadResponse]:
        process = self._table.require(params.process_id)
        after_seq = params.after_seq or 0
        response = process.read_nowait(
            after_seq, params.max_bytes, only_if_ready=bool(params.wait_ms)
        )
        if response is not None:
            return self._with_termination(process, response)
        return self._long_poll(process, after_seq, params)

    async def _long_poll(
        self, process: HostedProcess, after_seq: int, params: ProcessReadParams
    ) -> ProcessReadResponse:
        wait_s = min((params.wait_ms or 0) / 1000.0, MAX_WAIT_S)
        response = await process.read(after_seq, params.max_bytes, wait_s)
        return self._with_termination(process, response)

    def _with_termination(
        self, process: HostedProcess, response: ProcessReadResponse
    ) -> ProcessReadResponse:
        """The extension's `termination` for a session that asked for `processEndings`."""
        session = self._connection.session
        if session is None or PROCESS_ENDINGS not in session.extensions:
            return response
        return ProcessReadWithTermination(
            **msgspec.structs.asdict(response),
            termination=process.termination if response.exited else None,
        )

    def wait(self, params: ProcessWaitParams) -> Awaitable[ProcessWaitResponse]:
        """Extension `process/wait` (output/local/output_wait.py)."""
        process = self._table.require(params.process_id)
        idle_s = None if params.idle_ms is None else params.idle_ms / 1000.0
        return process.wait_output(
            params.pattern, idle_s, min(params.timeout_ms / 1000.0, MAX_WAIT_S), params.after_seq
        )

    def write(self, params: ProcessWriteParams) -> ProcessWriteResponse:
        if not params.write_id:
            raise InvalidParams("writeId must not be empty")
        process = self._table.get(params.process_id)
        if process is None:
            return ProcessWriteResponse(status="unknownProcess")
        return ProcessWriteResponse(status=process.write(bytes(params.chunk), params.write_id))

    def close_stdin(self, params: ProcessCloseStdinParams) -> ProcessWriteResponse:
        process = self._table.get(params.process_id)
        if process is None:
            return ProcessWriteResponse(status="unknownProcess")
        return ProcessWriteResponse(status=process.close_stdin())

    def signal(self, params: ProcessSignalParams) -> ProcessSignalResponse:
        process = self._table.get(params.process_id)
        if process is not None:
            process.interrupt()
        return ProcessSignalResponse()

    def terminate(self, params: ProcessTerminateParams) -> ProcessTerminateResponse:
        process = self._table.get(params.process_id)
        running = process.terminate() if process is not None else False
        return ProcessTerminateResponse(running=running)

    # -- extensions: terminal size, processes that outlive sessions ----------------------------

    def resize(self, params: ProcessResizeParams) -> EmptyResponse:
        self._table.require(params.process_id).resize(params.rows, params.cols)
        return EmptyResponse()

    def list(self, _: None) -> ProcessListResponse:
        return ProcessListResponse(processes=self._table.list_processes())

    def attach(self, params: ProcessAttachParams) -> ProcessAttachResponse:
        return self._table.attach(params.handle, params.process_id, params.tail_bytes)

    def detach(self, params: ProcessDetachParams) -> EmptyResponse:
        self._table.detach(params.process_id)
        return EmptyResponse()

    def kill(self, params: ProcessKillParams) -> ProcessTerminateResponse:
        return ProcessTerminateResponse(running=self._table.kill(params.handle))
