"""Capability interfaces shared by the local and remote environments. Imports protocol and
errors only.

An `Environment` bundles one implementation of each capability: `process` (`ExecBackend`),
`fs` (`FileSystem`), `http` (`HttpClient`) and `discovery` (`ExecutorDiscovery`), plus
`info()`. Only the factories (`local_environment()`, `remote_environment()`) know which
implementation they hold.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Self

from execserver.environment.discovery import ExecutorDiscovery
from execserver.environment.file_system import FileHandle, FileSystem, MissingWatch
from execserver.environment.http_client import HttpClient, HttpResponse, HttpStream
from execserver.environment.process import (
    ClosedEvent,
    CompletedProcess,
    ExecBackend,
    ExecProcess,
    ExitedEvent,
    OutputEvent,
    ProcessEvent,
    ProcessExitError,
    ProcessFailed,
    Unsupported,
)
from execserver.protocol.session import EnvironmentInfo


@dataclass(frozen=True, slots=True)
class Environment:
    """Where commands run and files live: this host, or an executor behind a client."""

    process: ExecBackend
    fs: FileSystem
    http: HttpClient
    discovery: ExecutorDiscovery
    _info: Callable[[], Awaitable[EnvironmentInfo]] = field(repr=False)
    _close: Callable[[], Awaitable[None]] = field(repr=False)
    _end_session: Callable[[], Awaitable[bool]] | None = field(default=None, repr=False)

    async def info(self) -> EnvironmentInfo:
        """The executor's shell, platform, directories and capabilities."""
        return await self._info()

    async def end_session(self) -> bool:
        """Tell the executor we are done: it kills this session's processes and forgets the
        session now, instead of keeping it detached for a resume. Returns False where the
        executor cannot (codex exec-server: the session then ends when its detach window
        passes). Call it just before `aclose()`; the environment is unusable after it."""
        if self._end_session is None:
            return True
        return await self._end_session()

    async def aclose(self) -> None:
        """Release the environment (stop its processes' followers, close its connection).

        Cancellation: cleanup completes first.
        """
        await self._close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


__all__ = [
    "ClosedEvent",
    "CompletedProcess",
    "Environment",
    "ExecBackend",
    "ExecProcess",
    "ExecutorDiscovery",
    "ExitedEvent",
    "FileHandle",
    "FileSystem",
    "HttpClient",
    "HttpResponse",
    "HttpStream",
    "MissingWatch",
    "OutputEvent",
    "ProcessEvent",
    "ProcessExitError",
    "ProcessFailed",
    "Unsupported",
]
