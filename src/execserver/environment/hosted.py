"""`HostedExecBackend`: the orchestrator's `ExecBackend` over an executor's `ProcessTable`.

The same table the server's handlers drive becomes an in-process environment: the table's
events are pushed straight into each handle's `ProcessEventStream`, operations call the table's
entries. `local_environment()` is this over this host's table, so the local kind of the
conformance suite runs exactly what the server runs.
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Awaitable

from execserver.environment.file_system import path_uri
from execserver.environment.process import (
    HostedProcess,
    ProcessEvent,
    ProcessRunner,
    ProcessTable,
)
from execserver.environment.process_events import ProcessEventStream, StreamedProcess
from execserver.protocol.pathuri import PathUri
from execserver.protocol.process import (
    ProcessReadResponse,
    ProcessStartParams,
    SandboxType,
    WriteStatus,
)
from execserver.protocol.process_handles import ProcessInfo


class HostedExecProcess(StreamedProcess):
    def __init__(
        self,
        table: ProcessTable,
        process_id: str,
        process: HostedProcess,
        stream: ProcessEventStream,
        *,
        handle: str | None = None,
        keep_running: bool = False,
        skip_bytes: int = 0,
    ) -> None:
        super().__init__(
            process_id, stream, handle=handle, keep_running=keep_running, skip_bytes=skip_bytes
        )
        self._table = table
        self._process = process

    @property
    def sandbox_type(self) -> SandboxType:
        return self._process.sandbox_type

    async def write(self, data: bytes) -> WriteStatus:
        return self._process.write(data, secrets.token_hex(12))

    async def close_stdin(self) -> None:
        self._process.close_stdin()

    async def signal(self) -> None:
        self._process.interrupt()

    async def terminate(self) -> bool:
        return self._process.terminate()

    async def resize(self, rows: int, cols: int) -> None:
        self._process.resize(rows, cols)

    async def detach(self) -> None:
        self._keep_running = True
        if self._table.get(self.process_id) is not None:
            self._table.detach(self.process_id)
        await self._stop_following()

    async def read(
        self, after_seq: int = 0, *, max_bytes: int | None = None, wait: float = 0.0
    ) -> ProcessReadResponse:
        return await self._process.read(after_seq, max_bytes, wait)


class HostedExecBackend(ProcessRunner):
    """Starts processes in `table`; closing it kills every process tree the table owns."""

    def __init__(self, table: ProcessTable, *, id_prefix: str = "local-") -> None:
        self._table = table
        table.listener = self._on_event
        self._streams: dict[str, ProcessEventStream] = {}
        self._ids = itertools.count(1)
        self._prefix = id_prefix

    def _on_event(self, process_id: str, process: HostedProcess, event: ProcessEvent) -> None:
        stream = self._streams.get(process_id)
        if stream is not None:
            stream.push(event)

    def _new_process_id(self) -> str:
        return f"{self._prefix}{next(self._ids)}"

    def _default_cwd(self) -> PathUri:
        return path_uri(os.getcwd())

    def _follow(
        self, process_id: str, process: HostedProcess, after_seq: int
    ) -> ProcessEventStream:
        async def read(after: int) -> ProcessReadResponse:
            response = process.read_nowait(after, None)
            assert response is not None
            return response

        stream = ProcessEventStream(read, after_seq=after_seq)
        self._streams[process_id] = stream
        return stream

    async def _spawn(self, params: ProcessStartParams) -> HostedExecProcess:
        started = self._table.start(params)
        process = await started if isinstance(started, Awaitable) else started
        stream = self._follow(params.process_id, process, 0)
        # Events logged before the stream existed (none: the spawn is synchronous and output
        # arrives on later loop turns) would be picked up by one catch-up read.
        initial = process.read_nowait(0, None)
        if initial is not None and initial.next_seq > 1:
            stream.request_catch_up()
        handle = process.handle if params.detach else None
        return HostedExecProcess(
            self._table,
            params.process_id,
            process,
            stream,
            handle=handle,
            keep_running=bool(handle),
        )

    async def list_processes(self) -> list[ProcessInfo]:
        return self._table.list_processes()

    async def attach(
        self, handle: str, *, after_seq: int = 0, tail_bytes: int | None = None
    ) -> HostedExecProcess:
        process_id = self._new_process_id()
        response = self._table.attach(handle, process_id, tail_bytes)
        process = self._table.require(process_id)
        after = after_seq if tail_bytes is None else response.replay_after_seq
        stream = self._follow(process_id, process, after)
        stream.request_catch_up()
        return HostedExecProcess(
            self._table,
            process_id,
            process,
            stream,
            handle=handle,
            keep_running=True,
            skip_bytes=response.skip_bytes,
        )

    async def kill(self, handle: str) -> bool:
        return self._table.kill(handle)

    async def aclose(self) -> None:
        await self._table.aclose()
        streams, self._streams = list(self._streams.values()), {}
        for stream in streams:
            await stream.aclose()
