"""Local processes: spawn (pipes or PTY), output capture, stdin, signals, exit, teardown.

`LocalExecBackend` is one session's process table (`ProcessTable`); `LocalProcess` one child
(`HostedProcess`). All I/O is driven by event-loop readers and writers on non-blocking fds (no
task per process). Teardown lives in `LocalProcess.kill()`: the whole tree gets SIGKILL and the
child is always reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import signal
import stat
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from execserver.environment.process import ProcessEvent, ProcessListener
from execserver.errors import (
    InternalError,
    InvalidParams,
    InvalidRequest,
    StartFailed,
    StdinBudgetExhausted,
)
from execserver.local import tree
from execserver.local.cgroup import ProcessCgroups
from execserver.local.env_policy import build_child_env
from execserver.local.memory import ByteBudget
from execserver.local.output_log import OutputLog, RetainedOutputBudget
from execserver.local.pty import (
    PtySpawnError,
    open_pty,
    pty_cwd,
    pty_env,
    resolve_pty_program,
    resolve_renamed_pty_program,
)
from execserver.local.reaper import ChildReaper, exit_code_from_status
from execserver.local.sandbox import launch as sandbox_launch
from execserver.local.sandbox.bwrap import SandboxUnavailable
from execserver.local.sandbox.denial import TRAILING_OUTPUT_GRACE_S, looks_denied
from execserver.local.sandbox.policy import SandboxError
from execserver.local.spawn import Stdio, resolve_program, spawn
from execserver.observability.telemetry import ProcessTrace, Telemetry
from execserver.protocol.process import (
    ExecEnvPolicy,
    ProcessReadResponse,
    ProcessStartParams,
    ProcessStream,
    SandboxType,
    WriteStatus,
)
from execserver.protocol.sandbox import SandboxContext

log = logging.getLogger(__name__)

READ_CHUNK_BYTES = 64 * 1024
MAX_PROCESSES_PER_SESSION = 1024
"""Entries in one session's process table, running or finished-and-retained."""
# At exit, read at most this much more per stream before reporting the exit (a default pipe
# holds 64 KiB; the rest arrives after the exit, as late output).
DRAIN_BUDGET_BYTES = 1024 * 1024
CLOSED_PROCESS_RETENTION_S = 80.0
WRITE_ID_MEMORY = 4096
MAX_PENDING_STDIN_BYTES = 64 * 1024 * 1024


@dataclass(slots=True, frozen=True)
class ProcessSpec:
    """What to run, resolved from `ProcessStartParams`: `cwd` is the native path."""

    argv: list[str]
    cwd: bytes
    env: dict[str, str]
    tty: bool
    pipe_stdin: bool
    arg0: str | None
    env_policy: ExecEnvPolicy | None
    sandbox: SandboxContext | None


class LocalProcess:
    """One running (or finished, still retained) child."""

    def __init__(
        self,
        process_id: str,
        *,
        pid: int,
        tty: bool,
        readers: dict[int, ProcessStream],
        stdin_fd: int | None,
        loop: asyncio.AbstractEventLoop,
        log: OutputLog,
    ) -> None:
        self.process_id = process_id
        self.pid = pid
        self.tty = tty
        self.log = log
        self._loop = loop
        self._readers = readers
        self._stdin_fd = stdin_fd
        self._has_stdin = stdin_fd is not None
        self._takes_input = stdin_fd is not None
        """Started with a stdin (a pipe, or the terminal), whether or not it is closed now."""
        self._stdin_buffer = bytearray()
        self._stdin_broken = False
        self.stdin_budget: ByteBudget | None = None
        """The server's budget for pending stdin (memory.py); the buffer's bytes are held in it."""
        self._stdin_held = 0
        self._close_when_flushed = False
        self._writing = False
        self._write_ids: OrderedDict[str, None] = OrderedDict()
        self._paused = False
        self._terminated = False
        self.terminated_while_running = False
        self.started_at = time.monotonic()
        self.trace: ProcessTrace | None = None
        """Where the process's trace span goes (observability); made once it finishes."""
        self.finish_recorded = False
        self.program = ""
        self._reaped = False
        self._exit_code: int | None = None
        self._grace: asyncio.TimerHandle | None = None
        self.sandbox_type: SandboxType = "none"
        self._done = loop.create_future()
        self.on_closed: Callable[[LocalProcess], None] | None = None
        self.cleanup: Callable[[], None] | None = None
        self.kill_escaped: Callable[[], None] | None = None
        """Kills descendants the tree walk cannot find (the process's cgroup), if tracked."""
        for fd in readers:
            loop.add_reader(fd, self._on_readable, fd)

    # -- state ---------------------------------------------------------------------------------

    @property
    def exited(self) -> bool:
        return self.log.exited

    @property
    def closed(self) -> bool:
        return self.log.closed

    async def wait_closed(self) -> None:
        """Wait until the process has exited and its output streams have ended.

        Cancellation: safe; the process is unaffected.
        """
        await asyncio.shield(self._done)

    def read_nowait(
        self, after_seq: int, max_bytes: int | None, *, only_if_ready: bool = False
    ) -> ProcessReadResponse | None:
        result = self.log.read(after_seq, max_bytes)
        if only_if_ready and not self.log.is_ready(result, after_seq):
            return None
        return result

    async def read(
        self, after_seq: int, max_bytes: int | None, wait_s: float
    ) -> ProcessReadResponse:
        return await self.log.read_wait(after_seq, max_bytes, wait_s)

    # -- output --------------------------------------------------------------------------------

    def _on_readable(self, fd: int) -> None:
        try:
            data = os.read(fd, READ_CHUNK_BYTES)
        except BlockingIOError:
            return
        except OSError:  # EIO: the PTY slave has no holders left
            data = b""
        if data:
            self.log.append_output(self._readers[fd], data)
        else:
            self._end_stream(fd)

    def _drain(self) -> None:
        """Read what is already buffered in the pipes: the child's output before its exit.

        Bounded per stream, so a grandchild that keeps writing cannot hold the loop here.
        """
        for fd in list(self._readers):
            budget = DRAIN_BUDGET_BYTES
            while fd in self._readers and budget > 0:
                try:
                    data = os.read(fd, READ_CHUNK_BYTES)
                except BlockingIOError:
                    break
                except OSError:
                    data = b""
                if data:
                    budget -= len(data)
                    self.log.append_output(self._readers[fd], data)
                else:
                    self._end_stream(fd)

    def _end_stream(self, fd: int) -> None:
        del self._readers[fd]
        if not self._paused:
            self._loop.remove_reader(fd)
        if fd != self._stdin_fd:
            os.close(fd)
        if not self._readers and self._grace is not None:
            self._finish_exit()
        self._maybe_close()

    def pause_output(self) -> None:
        """Stop reading output (back-pressure: the child blocks once its pipe is full)."""
        if not self._paused:
            self._paused = True
            for fd in self._readers:
                self._loop.remove_reader(fd)

    def resume_output(self) -> None:
        if self._paused:
            self._paused = False
            for fd in self._readers:
                self._loop.add_reader(fd, self._on_readable, fd)

    # -- exit ----------------------------------------------------------------------------------

    def on_exit_status(self, status: int) -> None:
        """Called by the reaper with the child's wait status."""
        self._reaped = True
        self._drain()
        self._exit_code = exit_code_from_status(status)
        if self.sandbox_type != "none" and self._readers and not self._terminated:
            # Give trailing output a moment, so the denial heuristic sees it (the reference's
            # grace period); the exit is recorded when the streams end or the grace is over.
            self._grace = self._loop.call_later(TRAILING_OUTPUT_GRACE_S, self._finish_exit)
        else:
            self._finish_exit()

    def _finish_exit(self) -> None:
        if self._exit_code is None or self.log.exited:
            return
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        denied = looks_denied(
            self.sandbox_type,
            self._exit_code,
            ((chunk.stream, chunk.data) for chunk in self.log.retained()),
        )
        self.log.record_exit(self._exit_code, denied)
        if self._terminated:
            self._abandon_streams()
        self._maybe_close()

    def _abandon_streams(self) -> None:
        # After terminate the reference closes at once, even if a survivor holds the pipes.
        for fd in list(self._readers):
            self._end_stream(fd)

    def _maybe_close(self) -> None:
        if self._readers or not self.log.exited or self.log.closed:
            return
        self._close_stdin()
        if self.cleanup is not None:
            cleanup, self.cleanup = self.cleanup, None
            cleanup()
        self.log.record_close()
        if not self._done.done():
            self._done.set_result(None)
        if self.on_closed is not None:
            self.on_closed(self)

    # -- stdin ---------------------------------------------------------------------------------

    def write(self, data: bytes, write_id: str) -> WriteStatus:
        """Queue `data` for stdin once per `write_id`; returns the wire status."""
        if write_id in self._write_ids:
            return "accepted"
        if self.terminated_while_running and self._takes_input and self.log.exited:
            # Once a process it killed on request has exited, the reference's new stdin writes
            # fail; after an exit of its own they are `accepted` and dropped.
            raise InternalError("failed to write to process stdin")
        if not self._has_stdin:
            return "stdinClosed"
        if len(self._stdin_buffer) + len(data) > MAX_PENDING_STDIN_BYTES:
            raise InternalError("failed to write to process stdin")
        budget = self.stdin_budget
        queued = bool(data) and self._stdin_fd is not None and not self._stdin_broken
        if budget is not None and queued:
            if not budget.try_reserve(len(data)):
                raise StdinBudgetExhausted(budget.limit)
            self._stdin_held += len(data)
        self._write_ids[write_id] = None
        if len(self._write_ids) > WRITE_ID_MEMORY:
            self._write_ids.popitem(last=False)
        # Like the reference, a write to a process whose stdin is gone (it exited, or closed
        # its end) is accepted and the bytes are dropped.
        if queued:
            self._stdin_buffer += data
            self._flush_stdin()
        return "accepted"

    def _flush_stdin(self) -> None:
        fd = self._stdin_fd
        if fd is None:
            return
        while self._stdin_buffer:
            try:
                written = os.write(fd, self._stdin_buffer)
            except BlockingIOError:
                break
            except OSError:
                self._stdin_broken = True
                self._stdin_buffer.clear()
                break
            del self._stdin_buffer[:written]
        if self._stdin_buffer and not self._writing:
            self._writing = True
            self._loop.add_writer(fd, self._on_writable)
        elif not self._stdin_buffer and self._writing:
            self._writing = False
            self._loop.remove_writer(fd)
        if not self._stdin_buffer and self._close_when_flushed:
            self._close_stdin()
        self._release_stdin_budget()

    def _release_stdin_budget(self) -> None:
        """Give back what the buffer no longer holds."""
        written = self._stdin_held - len(self._stdin_buffer)
        if written > 0 and self.stdin_budget is not None:
            self._stdin_held -= written
            self.stdin_budget.release(written)

    def _on_writable(self) -> None:
        self._flush_stdin()

    def close_stdin(self) -> WriteStatus:
        """End the child's input: EOF on its stdin pipe (later writes: `stdinClosed`), or the
        terminal's EOF character in PTY mode. `stdinClosed` if there is no stdin to close."""
        if self.tty:
            if self._stdin_fd is not None and not self._stdin_broken:
                self._stdin_buffer += b"\x04"
                self._flush_stdin()
            return "accepted"
        if not self._has_stdin:
            return "stdinClosed"
        self._has_stdin = False
        # EOF comes after every accepted byte: with writes still queued (the child reads slower
        # than we write), the pipe closes once they are flushed.
        if self._stdin_buffer and not self._stdin_broken:
            self._close_when_flushed = True
        else:
            self._close_stdin()
        return "accepted"

    def _close_stdin(self) -> None:
        fd = self._stdin_fd
        if fd is None:
            return
        if self._writing:
            self._loop.remove_writer(fd)
            self._writing = False
        self._stdin_fd = None
        self._stdin_buffer.clear()
        self._release_stdin_budget()
        self._close_when_flushed = False
        if fd not in self._readers:  # a PTY master is also the output fd
            os.close(fd)

    # -- signals -------------------------------------------------------------------------------

    def interrupt(self) -> None:
        """SIGINT to the foreground group (the terminal's, in PTY mode; the child's otherwise)."""
        if self.log.exited:
            return
        group = self.pid
        if self.tty and self._stdin_fd is not None:
            with contextlib.suppress(OSError):
                group = os.tcgetpgrp(self._stdin_fd)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGINT)

    def terminate(self) -> bool:
        """SIGKILL the whole tree. Returns whether the child itself was still running."""
        running = not self.log.exited
        self._terminated = True
        if running:
            self.terminated_while_running = True
        self.kill()
        if not running:
            self._abandon_streams()
        return running

    def kill(self) -> None:
        """SIGKILL the child's tree (idempotent). The reaper still reports the exit."""
        tree.kill_tree(self.pid, root_alive=not self._reaped)
        if self.kill_escaped is not None:
            self.kill_escaped()


class LocalExecBackend:
    """The process table of one session: ids, spawning, retention of finished processes."""

    def __init__(
        self,
        reaper: ChildReaper,
        *,
        server_env: Mapping[str, str] | None = None,
        closed_retention_s: float = CLOSED_PROCESS_RETENTION_S,
        cgroups: ProcessCgroups | None = None,
        max_processes: int = MAX_PROCESSES_PER_SESSION,
        output_budget: RetainedOutputBudget | None = None,
        stdin_budget: ByteBudget | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._reaper = reaper
        self._output_budget = output_budget
        self._stdin_budget = stdin_budget
        self._telemetry = telemetry
        self.session_id = ""
        """For log lines only."""
        self._max_processes = max_processes
        self._cgroups = cgroups or ProcessCgroups.disabled()
        self._cgroup_names: set[str] = set()
        """Cgroups of this backend's processes, kept after an entry expires while still busy."""
        self._spawned = 0
        self._loop = asyncio.get_running_loop()
        self._server_env = server_env if server_env is not None else os.environ
        self._retention_s = closed_retention_s
        self._processes: dict[str, LocalProcess] = {}
        self._expiry: dict[str, asyncio.TimerHandle] = {}
        self._output_paused = False
        self.listener: ProcessListener | None = None

    def __len__(self) -> int:
        return len(self._processes)

    @property
    def active(self) -> int:
        """Processes in the table that have not closed yet."""
        return sum(1 for process in self._processes.values() if not process.closed)

    def get(self, process_id: str) -> LocalProcess | None:
        return self._processes.get(process_id)

    def require(self, process_id: str) -> LocalProcess:
        process = self._processes.get(process_id)
        if process is None:
            raise InvalidRequest(f"unknown process id {process_id}")
        return process

    def start(self, params: ProcessStartParams) -> LocalProcess:
        """Spawn a child under `params.process_id`. Raises the reference's errors on failure,
        in the reference's order of checks."""
        cwd = params.cwd.native_cwd()  # checked before argv, as the reference does
        if not params.argv:
            raise InvalidParams("argv must not be empty")
        sandbox = params.sandbox
        if sandbox is not None:
            if sandbox.windows_sandbox_level == "mxc":
                raise StartFailed(
                    "native MXC is unavailable on this executor", "sandboxUnavailable"
                )
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
        process_id = params.process_id
        if process_id in self._processes:
            raise InvalidRequest(f"process {process_id} already exists")
        if len(self._processes) >= self._max_processes:
            raise InvalidRequest(
                f"too many processes in this session (limit {self._max_processes}, finished "
                "ones included until they expire); terminate some or wait"
            )
        env = build_child_env(spec.env, spec.env_policy, self._server_env)
        self._spawned += 1
        cgroup = f"{id(self):x}-{self._spawned}"
        with self._cgroups.enter(cgroup):
            if spec.sandbox is None:
                process = self._spawn(process_id, spec, env)
            else:
                process = self._spawn_sandboxed(process_id, spec, env, spec.sandbox)
        if self._cgroups.enabled:
            self._cgroup_names.add(cgroup)
            process.kill_escaped = functools.partial(self._cgroups.kill, cgroup)
        self._processes[process_id] = process
        process.stdin_budget = self._stdin_budget
        process.log.listener = self._forward(process)
        process.on_closed = self._on_closed
        if self._telemetry is not None:
            process.trace = self._telemetry.process_started()
            process.program = os.path.basename(spec.argv[0])
        if log.isEnabledFor(logging.INFO):  # the extras are built only when someone reads them
            log.info(
                "process started",
                extra={
                    "session_id": self.session_id,
                    "process_id": process_id,
                    "pid": process.pid,
                    "tty": spec.tty,
                    "sandbox": process.sandbox_type,
                },
            )
        if self._output_paused:
            process.pause_output()
        return process

    def _forward(self, process: LocalProcess) -> Callable[[ProcessEvent], None]:
        def forward(event: ProcessEvent) -> None:
            if self.listener is not None:
                self.listener(process, event)

        return forward

    def _spawn_sandboxed(
        self, process_id: str, spec: ProcessSpec, env: dict[str, str], sandbox: SandboxContext
    ) -> LocalProcess:
        """Start the program under bubblewrap (or directly, if the intent restricts nothing).

        Fails closed: if the sandbox cannot be prepared, nothing runs.
        """
        if not spec.argv[0]:
            raise StartFailed(
                f"missing program for {'PTY' if spec.tty else 'pipe'} spawn", "spawnFailed"
            )
        if not spec.tty:  # checked before the sandbox is built, as the reference does
            _check_cwd(spec.cwd)
        try:
            launch = sandbox_launch.prepare(sandbox, spec.cwd, env)
        except (SandboxUnavailable, SandboxError) as exc:
            raise StartFailed(
                f"failed to prepare process sandbox: {exc}",
                "sandboxUnavailable"
                if isinstance(exc, SandboxUnavailable)
                else "sandboxPreparation",
            ) from None
        if launch is None:
            process = self._spawn(process_id, spec, env)
            process.sandbox_type = "linuxSeccomp"
            return process
        try:
            if spec.tty:
                env = pty_env(env)
            envp = _encode_env(env)
            argv = [*launch.prefix]
            if spec.arg0 is not None and launch.argv0_supported:
                argv[-1:-1] = [b"--argv0", os.fsencode(spec.arg0)]
            if any("\0" in arg for arg in spec.argv):
                raise StartFailed("nul byte found in provided data", "spawnFailed")
            argv += [os.fsencode(arg) for arg in spec.argv]
            if spec.tty:
                process = self._spawn_pty(
                    process_id, launch.prefix[0], argv, envp, cwd=b"/", extra_fds=launch.extra_fds
                )
            else:
                process = self._spawn_pipes(
                    process_id,
                    launch.prefix[0],
                    argv,
                    envp,
                    spec,
                    cwd=b"/",
                    extra_fds=launch.extra_fds,
                )
        except BaseException:
            launch.close()
            raise
        process.sandbox_type = "linuxSeccomp"
        process.cleanup = launch.close
        return process

    def _spawn(self, process_id: str, spec: ProcessSpec, env: dict[str, str]) -> LocalProcess:
        cwd = spec.cwd
        if spec.tty:
            env = pty_env(env)
            cwd = pty_cwd(cwd, env)
            resolve = resolve_pty_program if spec.arg0 is None else resolve_renamed_pty_program
            try:
                program = resolve(spec.argv[0], env, cwd)
            except PtySpawnError as exc:
                raise StartFailed(str(exc), exc.kind) from None
        elif not spec.argv[0]:
            raise StartFailed("missing program for pipe spawn", "spawnFailed")
        envp = _encode_env(env)
        argv = [spec.arg0 if spec.arg0 is not None else spec.argv[0], *spec.argv[1:]]
        if any("\0" in arg for arg in (*argv, spec.argv[0])):
            raise StartFailed("nul byte found in provided data", "spawnFailed")
        argv_bytes = [os.fsencode(arg) for arg in argv]
        if spec.tty:
            return self._spawn_pty(process_id, program, argv_bytes, envp, cwd=cwd)
        search_path = env["PATH"] if "PATH" in env else self._server_env.get("PATH")
        try:
            program = resolve_program(spec.argv[0], search_path, cwd)
        except OSError as exc:
            raise StartFailed.from_os_error(exc) from None
        return self._spawn_pipes(process_id, program, argv_bytes, envp, spec, cwd=spec.cwd)

    def _spawn_pipes(
        self,
        process_id: str,
        program: bytes,
        argv: list[bytes],
        envp: list[bytes],
        spec: ProcessSpec,
        *,
        cwd: bytes,
        extra_fds: tuple[tuple[int, int], ...] = (),
    ) -> LocalProcess:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        in_r, in_w = os.pipe() if spec.pipe_stdin else (None, None)
        child_side = [out_w, err_w] + ([in_r] if in_r is not None else [])
        parent_side = [out_r, err_r] + ([in_w] if in_w is not None else [])
        try:
            pid = spawn(program, argv, envp, cwd, Stdio(in_r, out_w, err_w, extra_fds=extra_fds))
        except OSError as exc:
            for fd in child_side + parent_side:
                os.close(fd)
            raise StartFailed.from_os_error(exc) from None
        for fd in child_side:
            os.close(fd)
        for fd in parent_side:
            os.set_blocking(fd, False)
        process = LocalProcess(
            process_id,
            pid=pid,
            tty=False,
            readers={out_r: "stdout", err_r: "stderr"},
            stdin_fd=in_w,
            loop=self._loop,
            log=OutputLog(budget=self._output_budget),
        )
        self._reaper.watch(pid, process.on_exit_status)
        return process

    def _spawn_pty(
        self,
        process_id: str,
        program: bytes,
        argv: list[bytes],
        envp: list[bytes],
        *,
        cwd: bytes,
        extra_fds: tuple[tuple[int, int], ...] = (),
    ) -> LocalProcess:
        master, slave = open_pty()
        try:
            tty = os.fsencode(os.ttyname(slave))
            pid = spawn(program, argv, envp, cwd, Stdio(tty_path=tty, extra_fds=extra_fds))
        except OSError as exc:
            os.close(master)
            raise StartFailed.from_os_error(exc) from None
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        process = LocalProcess(
            process_id,
            pid=pid,
            tty=True,
            readers={master: "pty"},
            stdin_fd=master,
            loop=self._loop,
            log=OutputLog(budget=self._output_budget),
        )
        self._reaper.watch(pid, process.on_exit_status)
        return process

    def _on_closed(self, process: LocalProcess) -> None:
        if self._telemetry is None:
            self._record_finish(process)
        else:  # the span after this loop turn, once the closed notification has been written
            self._loop.call_soon(self._record_finish, process)
        self._schedule_expiry(process)

    def _record_finish(self, process: LocalProcess) -> None:
        """Count and log a process once: when it closes, or when shutdown gives up on it."""
        if process.finish_recorded:
            return
        process.finish_recorded = True
        exit_code = process.log.exit_code
        if process.terminated_while_running:
            result = "terminated"
        else:
            result = "success" if exit_code == 0 else "error"
        seconds = time.monotonic() - process.started_at
        if self._telemetry is not None and process.trace is not None:
            self._telemetry.process_finished(
                process.trace,
                process_id=process.process_id,
                program=process.program,
                pid=process.pid,
                result=result,
                exit_code=exit_code,
                seconds=seconds,
            )
        if log.isEnabledFor(logging.INFO):
            log.info(
                "process finished",
                extra={
                    "session_id": self.session_id,
                    "process_id": process.process_id,
                    "pid": process.pid,
                    "exit_code": exit_code,
                    "result": result,
                    "duration_ms": round(seconds * 1000, 3),
                },
            )

    def _schedule_expiry(self, process: LocalProcess) -> None:
        handle = self._loop.call_later(self._retention_s, self._expire, process.process_id)
        self._expiry[process.process_id] = handle

    def _expire(self, process_id: str) -> None:
        self._expiry.pop(process_id, None)
        process = self._processes.pop(process_id, None)
        if process is not None:
            process.log.discard()
        for cgroup in [c for c in self._cgroup_names if not self._cgroups.pids(c)]:
            if self._cgroups.remove(cgroup):
                self._cgroup_names.discard(cgroup)

    def pause_output(self) -> None:
        """Back-pressure: stop reading every process's output until `resume_output()`."""
        self._output_paused = True
        for process in self._processes.values():
            process.pause_output()

    def resume_output(self) -> None:
        self._output_paused = False
        for process in self._processes.values():
            process.resume_output()

    async def aclose(self, grace_s: float = 2.0) -> None:
        """Kill every process tree and wait (bounded) until each child is reaped.

        Cancellation: the kills are sent before the first await; waiting may be cut short.
        """
        pending = []
        for process in self._processes.values():
            if not process.closed:
                process.terminate()
                pending.append(process.wait_closed())
        for handle in self._expiry.values():
            handle.cancel()
        self._expiry.clear()
        # Daemons and double-forked orphans of processes that already finished.
        for cgroup in list(self._cgroup_names):
            self._cgroups.kill(cgroup)
        if pending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace_s):
                    await asyncio.gather(*pending)
        for process in self._processes.values():
            self._record_finish(process)
            process.log.discard()
        self._processes.clear()
        for cgroup in list(self._cgroup_names):
            if self._cgroups.remove(cgroup):
                self._cgroup_names.discard(cgroup)


def _check_cwd(cwd: bytes) -> None:
    """A pipe child's cwd must be a directory (a PTY child falls back to the home directory)."""
    try:
        if not stat.S_ISDIR(os.stat(cwd).st_mode):
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
    except OSError as exc:
        raise StartFailed.from_os_error(exc) from None


def _encode_env(env: Mapping[str, str]) -> list[bytes]:
    """`K=V` items sorted by name, as the reference's (BTreeMap-backed) command env is."""
    envp = []
    for key, value in sorted(env.items(), key=lambda kv: os.fsencode(kv[0])):
        item = f"{key}={value}"
        if "\0" in item:
            raise StartFailed("data provided contains a nul byte", "spawnFailed")
        envp.append(os.fsencode(item))
    return envp
