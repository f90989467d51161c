"""The process capability: what every environment (local or remote) offers, and its values.

Contracts are documented here once; implementations add only deviations. Paths are native
path strings of the environment's host. Outcomes are values (`WriteStatus`, exit codes,
`terminate()`'s bool); only `run(check=True)` raises for a non-zero exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, Self, runtime_checkable

from execserver.errors import ExecServerError
from execserver.protocol.process import ExecEnvPolicy, ProcessStream, SandboxType, WriteStatus
from execserver.protocol.sandbox import SandboxContext

PathArg = str | bytes | os.PathLike[str] | os.PathLike[bytes]

# `env=None`: the environment's own variables, minus names that look like secrets (§10).
INHERIT_ALL = ExecEnvPolicy(
    inherit="all", ignore_default_excludes=False, exclude=[], set={}, include_only=[]
)
# How long `run()` waits for the process to close after killing it on cancellation or timeout.
KILL_WAIT_S = 10.0


@dataclass(slots=True, frozen=True)
class OutputEvent:
    seq: int
    stream: ProcessStream
    data: bytes


@dataclass(slots=True, frozen=True)
class ExitedEvent:
    seq: int
    exit_code: int
    sandbox_denied: bool


@dataclass(slots=True, frozen=True)
class ClosedEvent:
    seq: int


ProcessEvent = OutputEvent | ExitedEvent | ClosedEvent


@dataclass(slots=True)
class ReadResult:
    """A `process/read` answer: retained chunks after a seq, and the process state."""

    chunks: list[OutputEvent]
    next_seq: int
    exited: bool
    exit_code: int | None
    closed: bool
    sandbox_denied: bool
    failure: str | None = None


@dataclass(slots=True)
class CompletedProcess:
    """What `run()` returns."""

    argv: list[str]
    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""
    sandbox_denied: bool = False
    sandbox_type: SandboxType = "none"

    @property
    def returncode(self) -> int:
        return self.exit_code

    def check(self) -> CompletedProcess:
        if self.exit_code != 0:
            raise ProcessExitError(self)
        return self


class ProcessExitError(ExecServerError):
    """`run(check=True)` saw a non-zero exit; `.result` is the whole `CompletedProcess`."""

    def __init__(self, result: CompletedProcess) -> None:
        super().__init__(f"{result.argv!r} exited with {result.exit_code}")
        self.result = result


class ProcessFailed(ExecServerError):
    """The process can no longer be followed (e.g. its events are no longer retained after a
    reconnect). The process itself may still be running on the executor."""


class Unsupported(ExecServerError):
    """The environment cannot do this (e.g. the exec-server protocol has no method for it)."""


@runtime_checkable
class ExecProcess(Protocol):
    """A started process.

    Iterating yields its events in seq order: output chunks, then (possibly more output from
    descendants, then) exactly one `ExitedEvent` and one final `ClosedEvent`; every event
    exactly once, also across reconnects. Iterate it once. If the events can no longer be
    followed, iteration and `wait()` raise `ProcessFailed`. `async with` terminates the process
    on exit if it is still running.
    """

    @property
    def process_id(self) -> str: ...

    @property
    def sandbox_type(self) -> SandboxType: ...

    def __aiter__(self) -> AsyncIterator[ProcessEvent]: ...

    async def write(self, data: bytes) -> WriteStatus:
        """Send bytes to stdin (applied once, even when retried after a reconnect).

        Returns the executor's status: `accepted`, `stdinClosed` (no `pipe_stdin`),
        `unknownProcess`. Cancellation: the bytes may or may not have been written.
        """
        ...

    async def close_stdin(self) -> None:
        """Close stdin: EOF for a `pipe_stdin` child, the EOF character (^D) on a terminal.

        Raises `Unsupported` where the executor cannot (codex exec-server has no such method;
        `process/closeStdin` is an execserver extension)."""
        ...

    async def signal(self) -> None:
        """Interrupt (SIGINT) the process."""
        ...

    async def terminate(self) -> bool:
        """Kill the whole process tree; True if the process was still running."""
        ...

    async def wait(self) -> int:
        """The exit code, once the process has exited (output may still follow).

        Cancellation: safe; the process is unaffected.
        """
        ...

    async def read(
        self, after_seq: int = 0, *, max_bytes: int | None = None, wait: float = 0.0
    ) -> ReadResult:
        """Retained output after `after_seq` (no consumption: repeatable, cancellation-safe)."""
        ...

    async def aclose(self) -> None:
        """Terminate the process if it is still running and stop following it."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc_info: object) -> None: ...


class ExecBackend(Protocol):
    """Starts processes in an environment."""

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
    ) -> ExecProcess:
        """Start `argv` in `cwd` (default: the environment's working directory).

        `env=None` gives the child the environment's own variables minus names that look like
        secrets (*KEY*, *SECRET*, *TOKEN*); a mapping gives it exactly that (or, with
        `env_policy`, what the policy builds from it). Raises `RpcError`s with the executor's
        wording when the process cannot start.
        """
        ...

    async def run(
        self,
        argv: Sequence[str],
        *,
        cwd: PathArg | None = None,
        env: Mapping[str, str] | None = None,
        tty: bool = False,
        sandbox: SandboxContext | None = None,
        timeout: float | None = None,
        check: bool = False,
    ) -> CompletedProcess:
        """Run `argv` to completion and collect its output (`pty` output counts as stdout).

        Raises `ProcessExitError` for a non-zero exit with `check=True`, `TimeoutError` after
        `timeout` seconds. Cancellation and timeout kill the process tree and wait (up to
        `KILL_WAIT_S`) for it to close before returning.
        """
        ...


class ProcessRunner:
    """`run()` for a backend, written once on top of its `start()`."""

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
    ) -> ExecProcess:
        raise NotImplementedError

    async def run(
        self,
        argv: Sequence[str],
        *,
        cwd: PathArg | None = None,
        env: Mapping[str, str] | None = None,
        tty: bool = False,
        sandbox: SandboxContext | None = None,
        timeout: float | None = None,
        check: bool = False,
    ) -> CompletedProcess:
        return await run_process(
            self, argv, timeout=timeout, check=check, cwd=cwd, env=env, tty=tty, sandbox=sandbox
        )


async def collect(process: ExecProcess, argv: Sequence[str]) -> CompletedProcess:
    """Consume a process's events into a `CompletedProcess`."""
    stdout: list[bytes] = []
    stderr: list[bytes] = []
    exit_code = -1
    denied = False
    async for event in process:
        if isinstance(event, OutputEvent):
            (stderr if event.stream == "stderr" else stdout).append(event.data)
        elif isinstance(event, ExitedEvent):
            exit_code, denied = event.exit_code, event.sandbox_denied
    return CompletedProcess(
        argv=list(argv),
        exit_code=exit_code,
        stdout=b"".join(stdout),
        stderr=b"".join(stderr),
        sandbox_denied=denied,
        sandbox_type=process.sandbox_type,
    )


async def run_process(
    backend: ExecBackend | ProcessRunner,
    argv: Sequence[str],
    *,
    timeout: float | None = None,
    check: bool = False,
    cwd: PathArg | None = None,
    env: Mapping[str, str] | None = None,
    tty: bool = False,
    sandbox: SandboxContext | None = None,
) -> CompletedProcess:
    """`ExecBackend.run()`, written once for every backend."""
    process = await backend.start(argv, cwd=cwd, env=env, tty=tty, sandbox=sandbox)
    try:
        async with asyncio.timeout(timeout):
            result = await collect(process, argv)
    except BaseException:
        await asyncio.shield(_kill_and_wait(process))
        raise
    finally:
        await asyncio.shield(process.aclose())
    return result.check() if check else result


async def _kill_and_wait(process: ExecProcess) -> None:
    with contextlib.suppress(ExecServerError, TimeoutError):
        await process.terminate()
        async with asyncio.timeout(KILL_WAIT_S):
            await process.wait()
