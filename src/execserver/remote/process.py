"""Processes on a remote executor: `RemoteExecBackend` starts them, `RemoteExecProcess` drives
one. Events come from the pushed `process/*` notifications, in seq order; `process/read` is used
only to fill a gap (events dropped while the connection was down, a consumer that fell behind,
or an exit notification without `sandboxDenied`).
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Awaitable
from typing import TypeVar

import msgspec

from execserver.client.client import ExecServerClient
from execserver.environment.process import (
    ClosedEvent,
    ExitedEvent,
    ProcessFailed,
    ProcessRunner,
    Unsupported,
)
from execserver.environment.process_events import ProcessEventStream, StreamedProcess
from execserver.errors import Disconnected, ExecServerError, MethodNotFound, ProtocolViolation
from execserver.protocol import methods
from execserver.protocol.base import Base64Bytes, WireStruct, dec_hook
from execserver.protocol.pathuri import PathUri
from execserver.protocol.process import (
    ProcessClosedNotification,
    ProcessCloseStdinParams,
    ProcessOutputChunk,
    ProcessOutputNotification,
    ProcessReadParams,
    ProcessReadResponse,
    ProcessReadWithTermination,
    ProcessSignalParams,
    ProcessSignalResponse,
    ProcessStartParams,
    ProcessStartResponse,
    ProcessTerminateParams,
    ProcessTerminateResponse,
    ProcessWriteParams,
    ProcessWriteResponse,
    SandboxType,
    Termination,
    WriteStatus,
)
from execserver.protocol.process_handles import (
    EmptyResponse,
    ProcessAttachParams,
    ProcessAttachResponse,
    ProcessDetachParams,
    ProcessInfo,
    ProcessKillParams,
    ProcessListResponse,
    ProcessResizeParams,
)


class _ExitedNotification(WireStruct):
    """`process/exited` as older servers may send it: without `sandboxDenied`; `termination`
    from execserver executors (the `processEndings` extension)."""

    process_id: str
    seq: int
    exit_code: int
    sandbox_denied: bool | None = None
    termination: Termination | None = None


class RemoteExecProcess(StreamedProcess):
    def __init__(
        self,
        backend: RemoteExecBackend,
        process_id: str,
        stream: ProcessEventStream,
        sandbox_type: SandboxType,
        *,
        handle: str | None = None,
        keep_running: bool = False,
        skip_bytes: int = 0,
    ) -> None:
        super().__init__(
            process_id, stream, handle=handle, keep_running=keep_running, skip_bytes=skip_bytes
        )
        self._backend = backend
        self._client = backend.client
        self._sandbox_type = sandbox_type

    @property
    def sandbox_type(self) -> SandboxType:
        return self._sandbox_type

    async def write(self, data: bytes) -> WriteStatus:
        # One write id for every attempt: the executor applies a retried write only once.
        params = ProcessWriteParams(
            process_id=self.process_id, chunk=Base64Bytes(data), write_id=secrets.token_hex(12)
        )
        while True:
            try:
                response = await self._client.call(
                    methods.PROCESS_WRITE, params, ProcessWriteResponse
                )
            except Disconnected:
                await self._client.wait_connected()
                continue
            return response.status

    async def close_stdin(self) -> None:
        # An extension of ours: codex exec-server has no way to close a process's stdin.
        try:
            await self._client.call(
                methods.PROCESS_CLOSE_STDIN,
                ProcessCloseStdinParams(process_id=self.process_id),
                ProcessWriteResponse,
            )
        except MethodNotFound:
            raise Unsupported(
                "this executor cannot close a process's stdin (process/closeStdin is an "
                "execserver extension)"
            ) from None

    async def signal(self) -> None:
        await self._client.call(
            methods.PROCESS_SIGNAL,
            ProcessSignalParams(process_id=self.process_id, signal="interrupt"),
            ProcessSignalResponse,
        )

    async def terminate(self) -> bool:
        response = await self._client.call(
            methods.PROCESS_TERMINATE,
            ProcessTerminateParams(process_id=self.process_id),
            ProcessTerminateResponse,
        )
        return response.running

    async def resize(self, rows: int, cols: int) -> None:
        params = ProcessResizeParams(process_id=self.process_id, rows=rows, cols=cols)
        await extension(self._client.call(methods.PROCESS_RESIZE, params, EmptyResponse))

    async def detach(self) -> None:
        self._keep_running = True
        params = ProcessDetachParams(process_id=self.process_id)
        try:
            await extension(self._client.call(methods.PROCESS_DETACH, params, EmptyResponse))
        finally:
            await self._stop_following()

    async def read(
        self, after_seq: int = 0, *, max_bytes: int | None = None, wait: float = 0.0
    ) -> ProcessReadResponse:
        return await self._backend.read(self.process_id, after_seq, max_bytes, wait)

    async def _stop_following(self) -> None:
        try:
            await super()._stop_following()
        finally:
            self._backend.forget(self.process_id)


class RemoteExecBackend(ProcessRunner):
    """The process capability of a remote executor (one per client)."""

    def __init__(self, client: ExecServerClient) -> None:
        self.client = client
        self._streams: dict[str, ProcessEventStream] = {}
        # Process ids are the client's to choose; a random prefix keeps several clients of one
        # session (or one session over many runs) from colliding.
        self._prefix = f"py-{secrets.token_hex(4)}-"
        self._ids = itertools.count(1)
        client.add_listener(self)

    # -- ClientListener ------------------------------------------------------------------------

    def on_notification(self, method: str, params: msgspec.Raw) -> None:
        try:
            if method == methods.PROCESS_OUTPUT:
                output = _decode(params, ProcessOutputNotification)
                stream = self._streams.get(output.process_id)
                if stream is not None:
                    stream.push(
                        ProcessOutputChunk(seq=output.seq, stream=output.stream, chunk=output.chunk)
                    )
            elif method == methods.PROCESS_EXITED:
                exited = _decode(params, _ExitedNotification)
                stream = self._streams.get(exited.process_id)
                if stream is None:
                    return
                if exited.sandbox_denied is None:
                    stream.request_catch_up()  # the read answer carries the classification
                else:
                    stream.push(
                        ExitedEvent(
                            exited.seq, exited.exit_code, exited.sandbox_denied, exited.termination
                        )
                    )
            elif method == methods.PROCESS_CLOSED:
                closed = _decode(params, ProcessClosedNotification)
                stream = self._streams.get(closed.process_id)
                if stream is not None:
                    stream.push(ClosedEvent(closed.seq))
        except ProtocolViolation:
            pass  # not a notification we can use; a gap (if any) is filled by a read

    def on_disconnected(self) -> None:
        pass

    def on_resumed(self) -> None:
        for stream in list(self._streams.values()):
            stream.request_catch_up()

    def on_failed(self, error: ExecServerError) -> None:
        for stream in list(self._streams.values()):
            stream.fail(ProcessFailed(f"the executor connection is gone: {error}"))

    # -- processes -----------------------------------------------------------------------------

    def forget(self, process_id: str) -> None:
        self._streams.pop(process_id, None)

    async def read(
        self, process_id: str, after_seq: int, max_bytes: int | None, wait: float
    ) -> ProcessReadResponse:
        return await self.client.call(
            methods.PROCESS_READ,
            ProcessReadParams(
                process_id=process_id,
                after_seq=after_seq,
                max_bytes=max_bytes,
                wait_ms=round(wait * 1000),
            ),
            ProcessReadWithTermination,
        )

    def _new_process_id(self) -> str:
        return f"{self._prefix}{next(self._ids)}"

    def _default_cwd(self) -> PathUri:
        info = self.client.environment_info
        if info is None:
            raise ProtocolViolation("the executor did not report its working directory")
        return info.cwd

    def _follow(self, process_id: str, after_seq: int = 0) -> ProcessEventStream:
        async def read(after: int) -> ProcessReadResponse:
            return await self.read(process_id, after, None, 0.0)

        stream = ProcessEventStream(read, after_seq=after_seq)
        self._streams[process_id] = stream
        return stream

    async def _spawn(self, params: ProcessStartParams) -> RemoteExecProcess:
        process_id = params.process_id
        # Registered before the request: output may be pushed before the answer arrives.
        stream = self._follow(process_id)
        try:
            response = await self.client.call(methods.PROCESS_START, params, ProcessStartResponse)
        except BaseException:
            self._streams.pop(process_id, None)
            await stream.aclose()
            raise
        if params.detach and response.handle is None:
            await self._abandon(process_id, stream)
            raise Unsupported(
                "this executor cannot detach processes (process/start `detach` is an "
                "execserver extension); the process was started and then terminated"
            )
        return RemoteExecProcess(
            self,
            process_id,
            stream,
            response.sandbox_type,
            handle=response.handle,
            keep_running=params.detach,
        )

    async def _abandon(self, process_id: str, stream: ProcessEventStream) -> None:
        """A start the executor did not understand fully: end the process, stop following."""
        try:
            await self.client.call(
                methods.PROCESS_TERMINATE,
                ProcessTerminateParams(process_id=process_id),
                ProcessTerminateResponse,
            )
        except ExecServerError:
            pass
        finally:
            self._streams.pop(process_id, None)
            await stream.aclose()

    async def list_processes(self) -> list[ProcessInfo]:
        call = self.client.call(methods.PROCESS_LIST, None, ProcessListResponse)
        return (await extension(call)).processes

    async def attach(
        self, handle: str, *, after_seq: int = 0, tail_bytes: int | None = None
    ) -> RemoteExecProcess:
        process_id = self._new_process_id()
        params = ProcessAttachParams(handle=handle, process_id=process_id, tail_bytes=tail_bytes)
        call = self.client.call(methods.PROCESS_ATTACH, params, ProcessAttachResponse)
        response = await extension(call)
        # Output pushed between the answer and now was dropped (no stream yet): the replay
        # read below covers it.
        after = after_seq if tail_bytes is None else response.replay_after_seq
        stream = self._follow(process_id, after)
        stream.request_catch_up()
        return RemoteExecProcess(
            self,
            process_id,
            stream,
            response.sandbox_type,
            handle=handle,
            keep_running=True,
            skip_bytes=response.skip_bytes,
        )

    async def kill(self, handle: str) -> bool:
        call = self.client.call(
            methods.PROCESS_KILL, ProcessKillParams(handle=handle), ProcessTerminateResponse
        )
        return (await extension(call)).running

    async def aclose(self) -> None:
        self.client.remove_listener(self)
        streams, self._streams = list(self._streams.values()), {}
        for stream in streams:
            stream.fail(ProcessFailed("the environment was closed"))
            await stream.aclose()


S = TypeVar("S", bound=WireStruct)
R = TypeVar("R")


async def extension(call: Awaitable[R]) -> R:
    """Await a call that uses an execserver extension: `-32601` becomes `Unsupported`."""
    try:
        return await call
    except MethodNotFound as exc:
        raise Unsupported(
            f"this executor does not implement it (an execserver extension): {exc.message}"
        ) from None


def _decode(params: msgspec.Raw, kind: type[S]) -> S:
    try:
        return msgspec.json.decode(params, type=kind, dec_hook=dec_hook)
    except msgspec.ValidationError as exc:
        raise ProtocolViolation(f"unexpected notification: {exc}") from None
