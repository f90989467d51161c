"""`local_environment()`: the `Environment` of this host, in-process, no server involved.

Processes come from a private `LocalExecBackend` whose output-log events are pushed straight
into each handle's `ProcessEventStream`; files go through `LocalFileSystem` (sandbox intent
enforced the same way the server enforces it); HTTP through `LocalHttpClient`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from execserver.environment import Environment
from execserver.environment.file_system import PathArg
from execserver.environment.http_client import Headers, HttpResponse
from execserver.environment.process import (
    INHERIT_ALL,
    ProcessEvent,
    ProcessRunner,
    ReadResult,
)
from execserver.environment.process_events import ProcessEventStream, StreamedProcess
from execserver.local.file_system import LocalFileSystem, native
from execserver.local.http_client import HttpResponse as LocalResponse
from execserver.local.http_client import LocalHttpClient
from execserver.local.info import environment_info
from execserver.local.process import LocalExecBackend, LocalProcess, ProcessSpec
from execserver.local.reaper import ChildReaper
from execserver.local.sandbox.fs_runner import SandboxedFileSystem
from execserver.protocol.http import HttpHeader
from execserver.protocol.process import ExecEnvPolicy, SandboxType, WriteStatus
from execserver.protocol.sandbox import SandboxContext
from execserver.protocol.session import EnvironmentInfo

BLOCKING_THREADS = 4


class LocalExecProcess(StreamedProcess):
    def __init__(self, process: LocalProcess, stream: ProcessEventStream) -> None:
        super().__init__(process.process_id, stream)
        self._process = process

    @property
    def sandbox_type(self) -> SandboxType:
        return self._process.sandbox_type

    async def write(self, data: bytes) -> WriteStatus:
        return self._process.write(data, uuid.uuid4().hex)

    async def close_stdin(self) -> None:
        self._process.close_stdin()

    async def signal(self) -> None:
        self._process.interrupt()

    async def terminate(self) -> bool:
        return self._process.terminate()

    async def read(
        self, after_seq: int = 0, *, max_bytes: int | None = None, wait: float = 0.0
    ) -> ReadResult:
        return await self._process.log.read_wait(after_seq, max_bytes, wait)


class LocalProcessBackend(ProcessRunner):
    """Starts processes on this host. Closing it kills every process tree it started."""

    def __init__(self, reaper: ChildReaper) -> None:
        self._backend = LocalExecBackend(reaper)
        self._backend.listener = self._on_event
        self._streams: dict[str, ProcessEventStream] = {}
        self._ids = itertools.count(1)

    def _on_event(self, process: LocalProcess, event: ProcessEvent) -> None:
        stream = self._streams.get(process.process_id)
        if stream is not None:
            stream.push(event)

    async def start(
        self,
        argv: Sequence[str],
        *,
        cwd: PathArg | None = None,
        env: Mapping[str, str] | None = None,
        tty: bool = False,
        pipe_stdin: bool = False,
        arg0: str | None = None,
        env_policy: ExecEnvPolicy | None = None,
        sandbox: SandboxContext | None = None,
    ) -> LocalExecProcess:
        process_id = f"local-{next(self._ids)}"
        spec = ProcessSpec(
            argv=list(argv),
            cwd=native(os.getcwd() if cwd is None else cwd),
            env=dict(env or {}),
            tty=tty,
            pipe_stdin=pipe_stdin,
            arg0=arg0,
            env_policy=env_policy if env_policy is not None or env is not None else INHERIT_ALL,
            sandbox=sandbox,
        )
        try:
            process = self._backend.start(process_id, spec)
        except OSError as exc:
            from execserver.errors import to_jsonrpc_error

            raise to_jsonrpc_error(exc) from None
        log = process.log

        async def read(after_seq: int) -> ReadResult:
            return log.read(after_seq)

        stream = ProcessEventStream(read)
        self._streams[process_id] = stream
        # Events logged before the stream existed (none yet: the spawn is synchronous, output
        # arrives on later loop iterations) are picked up by one catch-up read if there are any.
        if log.next_seq > 1:
            stream.request_catch_up()
        return LocalExecProcess(process, stream)

    async def aclose(self) -> None:
        await self._backend.aclose()
        self._streams.clear()


class LocalHttpStream:
    def __init__(self, response: LocalResponse) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status

    @property
    def headers(self) -> list[tuple[str, str]]:
        return self._response.headers

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        return self._response.chunks()


class LocalHttp:
    """The HTTP capability of this host (the executor's own request semantics)."""

    def __init__(self, client: LocalHttpClient) -> None:
        self._client = client

    async def _fetch(
        self,
        method: str,
        url: str,
        *,
        headers: Headers,
        body: bytes | None,
        timeout: float | None,
        follow_redirects: bool,
    ) -> LocalResponse:
        return await self._client.fetch(
            method,
            url,
            [HttpHeader(name=name, value=value) for name, value in headers],
            body,
            timeout_ms=None if timeout is None else max(1, round(timeout * 1000)),
            follow_redirects=follow_redirects,
        )

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Headers = (),
        body: bytes | None = None,
        timeout: float | None = None,
        follow_redirects: bool = True,
    ) -> HttpResponse:
        response = await self._fetch(
            method,
            url,
            headers=headers,
            body=body,
            timeout=timeout,
            follow_redirects=follow_redirects,
        )
        return HttpResponse(response.status, response.headers, await response.read_all())

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        headers: Headers = (),
        body: bytes | None = None,
        timeout: float | None = None,
        follow_redirects: bool = True,
    ) -> AsyncIterator[LocalHttpStream]:
        response = await self._fetch(
            method,
            url,
            headers=headers,
            body=body,
            timeout=timeout,
            follow_redirects=follow_redirects,
        )
        try:
            yield LocalHttpStream(response)
        finally:
            await asyncio.shield(response.aclose())


def local_environment() -> Environment:
    """This host as an `Environment`. Must be called inside the running event loop.

    `aclose()` kills every process tree it started and releases threads and connections.
    """
    loop = asyncio.get_running_loop()
    reaper = ChildReaper(loop)
    blocking = ThreadPoolExecutor(max_workers=BLOCKING_THREADS, thread_name_prefix="execserver")
    processes = LocalProcessBackend(reaper)
    http_client = LocalHttpClient()

    async def info() -> EnvironmentInfo:
        return environment_info()

    async def close() -> None:
        try:
            await processes.aclose()
            await http_client.aclose()
        finally:
            reaper.close()
            blocking.shutdown(wait=False, cancel_futures=True)

    return Environment(
        process=processes,
        fs=LocalFileSystem(blocking, SandboxedFileSystem(reaper, blocking)),
        http=LocalHttp(http_client),
        _info=info,
        _close=close,
    )
