"""`process/*`: params -> the session's process table -> response. No error handling here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from execserver.environment.process import ReadResult
from execserver.errors import InvalidParams
from execserver.local.process import LocalExecBackend, ProcessSpec
from execserver.protocol.process import (
    ProcessCloseStdinParams,
    ProcessOutputChunk,
    ProcessReadParams,
    ProcessReadResponse,
    ProcessSignalParams,
    ProcessSignalResponse,
    ProcessStartParams,
    ProcessStartResponse,
    ProcessTerminateParams,
    ProcessTerminateResponse,
    ProcessWriteParams,
    ProcessWriteResponse,
)
from execserver.server.connection import Connection

ReadWait = Callable[[int, int | None, float], Awaitable[ReadResult]]

# Long polls are capped so a huge waitMs cannot overflow the event loop's timer arithmetic.
MAX_WAIT_S = 24 * 3600.0


def read_response(result: ReadResult) -> ProcessReadResponse:
    return ProcessReadResponse(
        chunks=[
            ProcessOutputChunk(seq=c.seq, stream=c.stream, chunk=c.data) for c in result.chunks
        ],
        next_seq=result.next_seq,
        exited=result.exited,
        exit_code=result.exit_code,
        closed=result.closed,
        failure=None,
        sandbox_denied=result.sandbox_denied,
    )


class ProcessHandler:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    @property
    def _backend(self) -> LocalExecBackend:
        session = self._connection.session
        assert session is not None, "gated: only reachable after initialize"
        return session.backend

    def start(self, params: ProcessStartParams) -> ProcessStartResponse:
        cwd = params.cwd.native_cwd()  # checked before argv, as the reference does
        if not params.argv:
            raise InvalidParams("argv must not be empty")
        sandbox = params.sandbox
        if sandbox is not None:
            if sandbox.windows_sandbox_level == "mxc":
                raise InvalidParams("native MXC is unavailable on this executor")
            if params.enforce_managed_network:
                # Fail closed: there is no managed network proxy on this executor.
                raise InvalidParams(
                    "failed to prepare process sandbox: managed network enforcement needs a "
                    "network proxy, which this executor does not provide"
                )
        spec = ProcessSpec(
            argv=params.argv,
            cwd=cwd,
            env=params.env,
            tty=params.tty,
            pipe_stdin=params.pipe_stdin,
            arg0=params.arg0,
            env_policy=params.env_policy,
            sandbox=sandbox,
        )
        process = self._backend.start(params.process_id, spec)
        return ProcessStartResponse(process_id=params.process_id, sandbox_type=process.sandbox_type)

    def read(
        self, params: ProcessReadParams
    ) -> ProcessReadResponse | Awaitable[ProcessReadResponse]:
        log = self._backend.require(params.process_id).log
        after_seq = params.after_seq or 0
        result = log.read(after_seq, params.max_bytes)
        if not params.wait_ms or log.is_ready(result, after_seq):
            return read_response(result)
        return self._long_poll(log.read_wait, after_seq, params)

    async def _long_poll(
        self, read_wait: ReadWait, after_seq: int, params: ProcessReadParams
    ) -> ProcessReadResponse:
        wait_s = min((params.wait_ms or 0) / 1000.0, MAX_WAIT_S)
        return read_response(await read_wait(after_seq, params.max_bytes, wait_s))

    def write(self, params: ProcessWriteParams) -> ProcessWriteResponse:
        if not params.write_id:
            raise InvalidParams("writeId must not be empty")
        process = self._backend.get(params.process_id)
        if process is None:
            return ProcessWriteResponse(status="unknownProcess")
        return ProcessWriteResponse(status=process.write(bytes(params.chunk), params.write_id))

    def close_stdin(self, params: ProcessCloseStdinParams) -> ProcessWriteResponse:
        process = self._backend.get(params.process_id)
        if process is None:
            return ProcessWriteResponse(status="unknownProcess")
        return ProcessWriteResponse(status=process.close_stdin())

    def signal(self, params: ProcessSignalParams) -> ProcessSignalResponse:
        process = self._backend.get(params.process_id)
        if process is not None:
            process.interrupt()
        return ProcessSignalResponse()

    def terminate(self, params: ProcessTerminateParams) -> ProcessTerminateResponse:
        process = self._backend.get(params.process_id)
        running = process.terminate() if process is not None else False
        return ProcessTerminateResponse(running=running)
