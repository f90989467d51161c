"""The process capability: what every environment (local or remote) offers, and its values.

Two faces. The orchestrator's (`ExecBackend` -> `ExecProcess`): start a command, iterate its
events, write, wait, `run()` to completion. The executor's (`ProcessTable` -> `HostedProcess`):
the process table of one session, driven by the server's `process/*` handlers with the ids and
sequence numbers of the wire. `local/` implements the executor face; `HostedExecBackend`
(environment/hosted.py) turns any table into an orchestrator face, and `remote/` implements the
orchestrator face over a client.

Values are the wire structs: output events are `ProcessOutputChunk`s, reads answer
`ProcessReadResponse`s, starts take `ProcessStartParams`. Contracts are documented here once;
implementations add only deviations. Outcomes are values (`WriteStatus`, exit codes,
`terminate()`'s bool); only `run(check=True)` raises for a non-zero exit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Self, runtime_checkable

from execserver.environment.file_system import PathArg, path_uri
from execserver.errors import ExecServerError
from execserver.protocol.network import (
    NetworkPolicyDecisionNotification,
    NetworkPolicyRequestParams,
)
from execserver.protocol.pathuri import PathUri
from execserver.protocol.process import (
    ExecEnvPolicy,
    ProcessLimits,
    ProcessOutputChunk,
    ProcessReadResponse,
    ProcessStartParams,
    ProcessWaitResponse,
    SandboxType,
    TerminalSize,
    Termination,
    WriteStatus,
)
from execserver.protocol.process_handles import ProcessAttachResponse, ProcessInfo
from execserver.protocol.sandbox import SandboxContext

# `env=None`: the environment's own variables, minus names that look like secrets (§10).
INHERIT_ALL = ExecEnvPolicy(
    inherit="all", ignore_default_excludes=False, exclude=[], set={}, include_only=[]
)
# How long `run()` waits for the process to close after killing it on cancellation or timeout.
KILL_WAIT_S = 10.0

OutputEvent = ProcessOutputChunk
"""A chunk of output (`seq`, `stream`, `chunk`, also readable as `.data`)."""

ReadResult = ProcessReadResponse
"""What a read returns: retained chunks after a seq, and the process state."""


@dataclass(slots=True, frozen=True)
class ExitedEvent:
    seq: int
    exit_code: int
    sandbox_denied: bool
    termination: Termination | None = None
    """Why it ended (execserver executors, with the `processEndings` extension)."""


@dataclass(slots=True, frozen=True)
class ClosedEvent:
    seq: int


@dataclass(slots=True, frozen=True)
class OutputGap:
    """Output the executor no longer keeps (the middle of a journal over its cap): chunk seqs
    `from_seq` to `seq`, `size` bytes. Only executors with an output journal report it; others
    fail the stream with `ProcessFailed` instead."""

    from_seq: int
    seq: int
    size: int


ProcessEvent = ProcessOutputChunk | ExitedEvent | ClosedEvent | OutputGap


@dataclass(slots=True)
class CompletedProcess:
    """What `run()` returns."""

    argv: list[str]
    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""
    sandbox_denied: bool = False
    sandbox_type: SandboxType = "none"
    termination: Termination | None = None
    """Why it ended (execserver executors)."""

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


# -- the orchestrator's face ---------------------------------------------------------------------


@runtime_checkable
class ExecProcess(Protocol):
    """A started (or attached) process.

    Iterating yields its events in seq order: output chunks, then (possibly more output from
    descendants, then) exactly one `ExitedEvent` and one final `ClosedEvent`; every event
    exactly once, also across reconnects. Iterate it once. If the events can no longer be
    followed, iteration and `wait()` raise `ProcessFailed`. `async with` terminates the process
    on exit if it is still running, unless it was started with `detach` or attached: then it
    only stops following it.
    """

    @property
    def process_id(self) -> str: ...

    @property
    def handle(self) -> str | None:
        """The server-wide handle (processes started with `detach`, or attached), else None."""
        ...

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

    async def resize(self, rows: int, cols: int) -> None:
        """Resize the process's terminal (SIGWINCH reaches its foreground group).

        Raises `InvalidRequest` for a process without a terminal or one that has exited,
        `Unsupported` where the executor cannot (`process/resize` is an execserver extension).
        """
        ...

    async def detach(self) -> None:
        """Stop following the process and let it run on (it outlives this client's session).

        Raises `Unsupported` where the executor cannot (`process/detach` is an extension).
        """
        ...

    async def wait(self) -> int:
        """The exit code, once the process has exited (output may still follow).

        Cancellation: safe; the process is unaffected.
        """
        ...

    async def read(
        self, after_seq: int = 0, *, max_bytes: int | None = None, wait: float = 0.0
    ) -> ProcessReadResponse:
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
        timeout_ms: int | None = None,
        idle_timeout_ms: int | None = None,
        limits: ProcessLimits | None = None,
        size: tuple[int, int] | None = None,
        detach: bool = False,
    ) -> ExecProcess:
        """Start `argv` in `cwd` (default: the environment's working directory).

        `timeout_ms`, `idle_timeout_ms` and `limits` are execserver extensions (the executor
        ends or limits the process tree; others ignore them: check
        `ExecServerClient.process_endings`).

        `env=None` gives the child the environment's own variables minus names that look like
        secrets (*KEY*, *SECRET*, *TOKEN*); a mapping gives it exactly that (or, with
        `env_policy`, what the policy builds from it). `size` is the (rows, cols) of a `tty`
        process's terminal (default 24x80). With `detach` the process outlives this client's
        session and has a `handle` (see `attach()`). Raises `RpcError`s with the executor's
        wording when the process cannot start.
        """
        ...

    async def list_processes(self) -> list[ProcessInfo]:
        """The processes of this client's principal on the executor (running, or finished and
        still retained). Raises `Unsupported` where the executor cannot (an extension)."""
        ...

    async def attach(
        self, handle: str, *, after_seq: int = 0, tail_bytes: int | None = None
    ) -> ExecProcess:
        """Follow the process `handle` from this client: its events after `after_seq` (or
        the last `tail_bytes` bytes of output, then everything new). Writes, signals and
        resizes go to the process; leaving `async with` (or `detach()`) lets it run on.

        Raises `InvalidRequest` for an unknown handle (or another principal's), `Unsupported`
        where the executor cannot (`process/attach` is an extension).
        """
        ...

    async def kill(self, handle: str) -> bool:
        """Kill the process `handle` (whole tree); True if it was still running."""
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
    """`start()` and `run()` written once: an implementation supplies `_spawn(params)` (the
    wire's start parameters, with a fresh process id) and `_default_cwd()`."""

    def _new_process_id(self) -> str:
        raise NotImplementedError

    def _default_cwd(self) -> PathUri:
        raise NotImplementedError

    async def _spawn(self, params: ProcessStartParams) -> ExecProcess:
        raise NotImplementedError

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
        timeout_ms: int | None = None,
        idle_timeout_ms: int | None = None,
        limits: ProcessLimits | None = None,
        size: tuple[int, int] | None = None,
        detach: bool = False,
    ) -> ExecProcess:
        params = ProcessStartParams(
            process_id=self._new_process_id(),
            argv=list(argv),
            cwd=self._default_cwd() if cwd is None else path_uri(cwd),
            env=dict(env or {}),
            tty=tty,
            pipe_stdin=pipe_stdin,
            arg0=arg0,
            env_policy=env_policy if env_policy is not None or env is not None else INHERIT_ALL,
            sandbox=sandbox,
            timeout_ms=timeout_ms,
            idle_timeout_ms=idle_timeout_ms,
            limits=limits,
            size=None if size is None else TerminalSize(rows=size[0], cols=size[1]),
            detach=detach,
        )
        return await self._spawn(params)

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
        process = await self.start(argv, cwd=cwd, env=env, tty=tty, sandbox=sandbox)
        try:
            async with asyncio.timeout(timeout):
                result = await collect(process, argv)
        except BaseException:
            await asyncio.shield(_kill_and_wait(process))
            raise
        finally:
            await asyncio.shield(process.aclose())
        return result.check() if check else result


async def collect(process: ExecProcess, argv: Sequence[str]) -> CompletedProcess:
    """Consume a process's events into a `CompletedProcess`."""
    stdout: list[bytes] = []
    stderr: list[bytes] = []
    exit_code = -1
    denied = False
    termination = None
    async for event in process:
        if isinstance(event, ProcessOutputChunk):
            (stderr if event.stream == "stderr" else stdout).append(event.chunk)
        elif isinstance(event, ExitedEvent):
            exit_code, denied = event.exit_code, event.sandbox_denied
            termination = event.termination
    return CompletedProcess(
        argv=list(argv),
        exit_code=exit_code,
        stdout=b"".join(stdout),
        stderr=b"".join(stderr),
        sandbox_denied=denied,
        sandbox_type=process.sandbox_type,
        termination=termination,
    )


async def _kill_and_wait(process: ExecProcess) -> None:
    with contextlib.suppress(ExecServerError, TimeoutError):
        await process.terminate()
        async with asyncio.timeout(KILL_WAIT_S):
            await process.wait()


# -- the executor's face -------------------------------------------------------------------------


class HostedProcess(Protocol):
    """One entry of a `ProcessTable`: a process the executor runs (or ran, while retained).

    Every operation but the long poll answers at once.
    """

    @property
    def process_id(self) -> str: ...

    @property
    def handle(self) -> str:
        """Server-wide handle (`process/list`, `process/attach`)."""
        ...

    @property
    def sandbox_type(self) -> SandboxType: ...

    def read_nowait(
        self, after_seq: int, max_bytes: int | None, *, only_if_ready: bool = False
    ) -> ProcessReadResponse | None:
        """Retained output after `after_seq` and the state; with `only_if_ready`, None when
        a long poll would wait (nothing new yet)."""
        ...

    async def read(
        self, after_seq: int, max_bytes: int | None, wait_s: float
    ) -> ProcessReadResponse:
        """`read_nowait`, waiting up to `wait_s` for something new. Cancellation: safe."""
        ...

    def write(self, data: bytes, write_id: str) -> WriteStatus:
        """Queue `data` for stdin once per `write_id` (a retry with the same id is a no-op)."""
        ...

    def close_stdin(self) -> WriteStatus: ...

    def interrupt(self) -> None:
        """SIGINT to the foreground process group."""
        ...

    def terminate(self) -> bool:
        """Kill the whole tree; True if the process itself was still running."""
        ...

    def resize(self, rows: int, cols: int) -> None:
        """Set the terminal size. Raises `InvalidRequest` without a terminal or after exit."""
        ...

    # Extensions (issue 20): why it ended, and waiting on output.

    @property
    def last_seq(self) -> int:
        """The seq of the latest event (0 before the first)."""
        ...

    @property
    def termination(self) -> Termination | None:
        """Why the process ended and what it used, once it has exited."""
        ...

    async def wait_output(
        self, pattern: str | None, idle_s: float | None, timeout_s: float, after_seq: int | None
    ) -> ProcessWaitResponse:
        """Until new output matches `pattern`, output is idle for `idle_s`, the process exits,
        or `timeout_s` passes (`process/wait`). Cancellation: safe."""
        ...


ProcessListener = Callable[[str, HostedProcess, ProcessEvent], None]
"""Called with the table's id of the process, the process, and the event."""
WaitingListener = Callable[[str, HostedProcess, int, str], None]
"""Hears (the table's id of the process, the process, pid, command) when a PTY process's
foreground process waits for input."""


class NetworkPolicyPeer(Protocol):
    """The client a process's managed network proxy reports to and asks (its session's)."""

    def policy_decision(self, notification: NetworkPolicyDecisionNotification) -> None:
        """Audit one decision (`network/policyDecision`); must not block."""
        ...

    async def ask_policy(self, request: NetworkPolicyRequestParams, timeout_s: float) -> Any:
        """Ask the client to decide (`network/policyRequest`); its raw answer. Raises when
        there is no answer within `timeout_s`, an error answer, or no client."""
        ...


class ProcessTable(Protocol):
    """The processes of one session, by the ids its client chose."""

    listener: ProcessListener | None
    """Hears every event of every process, in order, as it happens (must not block)."""
    waiting_listener: WaitingListener | None
    """Extension: hears that a PTY process waits for input (None: nobody asks, no looking)."""

    network_peer: NetworkPolicyPeer | None
    """Where managed network proxies send their decisions and questions (None: nobody
    listens, and questions are denied)."""

    @property
    def active(self) -> int:
        """Processes in the table that have not closed yet."""
        ...

    def start(self, params: ProcessStartParams) -> HostedProcess | Awaitable[HostedProcess]:
        """Spawn under `params.process_id`. Raises the executor's errors.

        Spawns now, or returns an awaitable that spawns once something the start needs is ready
        (a shell snapshot's first capture); the params are checked before either. Cancelling
        the awaitable abandons the start."""
        ...

    def get(self, process_id: str) -> HostedProcess | None: ...

    def require(self, process_id: str) -> HostedProcess:
        """The entry, or the executor's `unknown process id` error."""
        ...

    def pause_output(self) -> None:
        """Back-pressure: stop reading every process's output until `resume_output()`."""
        ...

    def resume_output(self) -> None: ...

    def list_processes(self) -> list[ProcessInfo]:
        """Every process of this table's principal on the executor."""
        ...

    def attach(
        self, handle: str, process_id: str | None = None, tail_bytes: int | None = None
    ) -> ProcessAttachResponse:
        """Show the principal's process `handle` in this table under `process_id`."""
        ...

    def detach(self, process_id: str) -> None:
        """Drop `process_id` from this table without ending the process (which then outlives
        the session if this table started it)."""
        ...

    def kill(self, handle: str) -> bool:
        """Kill the principal's process `handle`; True if it was still running."""
        ...

    async def aclose(self) -> None:
        """Kill every process tree and wait (bounded) until each child is reaped."""
        ...
