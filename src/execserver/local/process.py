"""Local processes: spawn (pipes or PTY), output capture, stdin, signals, exit, teardown.

`LocalExecBackend` is one session's process table (`ProcessTable`); `LocalProcess` one child
(`HostedProcess`). All I/O is driven by event-loop readers and writers on non-blocking fds (no
task per process). Teardown lives in `LocalProcess.kill()`: the whole tree gets SIGKILL and the
child is always reaped.

A table holds *links* to processes (local/directory.py): the processes it started and owns
(killed when the session ends), the ones it started with `detach`, and the ones it attached by
handle. Several tables may link one process: each hears its events under its own id.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import fcntl
import functools
import logging
import os
import resource
import signal
import stat
import struct
import termios
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from execserver.compat.rust import rust_debug_str
from execserver.environment.process import (
    ClosedEvent,
    NetworkPolicyPeer,
    ProcessEvent,
    ProcessListener,
    WaitingListener,
)
from execserver.errors import (
    InternalError,
    InvalidParams,
    InvalidRequest,
    StartFailed,
    StdinBudgetExhausted,
)
from execserver.local import shell_snapshot, tree
from execserver.local.cgroup import (
    NO_PLACEMENT,
    Limits,
    LimitsUnavailable,
    Placement,
    ProcessCgroup,
    ProcessCgroups,
)
from execserver.local.directory import Linker, ProcessDirectory
from execserver.local.endings import (
    DEFAULT_KILL_GRACE_S,
    Timeouts,
    limits_from_wire,
    termination_record,
    timeout_seconds,
)
from execserver.local.env_policy import build_child_env
from execserver.local.input_wait import InputWatch, Reader
from execserver.local.journal import JournalStore
from execserver.local.memory import ByteBudget
from execserver.local.network.options import ExecutorNetworkOptions
from execserver.local.output_log import OutputLog, RetainedOutputBudget
from execserver.local.output_wait import compile_pattern, wait_on_output
from execserver.local.pty import (
    COLS,
    ROWS,
    PtySpawnError,
    open_pty,
    pty_cwd,
    pty_env,
    resolve_pty_program,
    resolve_renamed_pty_program,
)
from execserver.local.reaper import ChildReaper, exit_code_from_status
from execserver.local.sandbox import launch as sandbox_launch
from execserver.local.sandbox.bwrap import MountPlan, SandboxUnavailable
from execserver.local.sandbox.denial import (
    TRAILING_OUTPUT_GRACE_S,
    looks_denied,
    sandbox_denied,
)
from execserver.local.sandbox.policy import Mechanism, ResolvedPolicy, SandboxError
from execserver.local.sandbox.port_bridge import PortBridge
from execserver.local.shell_snapshot import Snapshot, SnapshotCache, SnapshotKey
from execserver.local.spawn import Stdio, resolve_program, spawn
from execserver.observability.telemetry import ProcessTrace, Telemetry
from execserver.protocol.network import RemoteNetworkProxyLaunchConfig
from execserver.protocol.process import (
    ExecEnvPolicy,
    ProcessReadResponse,
    ProcessStartParams,
    ProcessStream,
    ProcessWaitResponse,
    SandboxType,
    Termination,
    TerminationReason,
    WriteStatus,
)
from execserver.protocol.process_handles import ProcessAttachResponse, ProcessInfo
from execserver.protocol.sandbox import SandboxContext
from execserver.tasks import TaskOwner

if TYPE_CHECKING:
    from execserver.local.network.credentials import CredentialBroker
    from execserver.local.network.launch import ManagedProxy

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
    size: tuple[int, int] = (ROWS, COLS)
    """(rows, cols) of a `tty` process's terminal."""


def check_size(rows: int, cols: int) -> None:
    if not (rows and cols):
        raise InvalidParams("terminal size must have at least 1 row and 1 column")


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
        self._pausers: set[object] = set()
        """Who paused the output (each linked table): reading resumes when none is left."""
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
        self.cgroup: ProcessCgroup | None = None
        """The process's own cgroup (every descendant is in it), where the host has them."""
        self.limits: Limits | None = None
        """The limits its cgroup enforces."""
        self.server_peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        """The server's own peak RSS when the child was spawned (see `termination_record`)."""
        self.end_cause: TerminationReason | None = None
        """What the server did to end it (terminate, a timeout, shutdown), for the record."""
        self.last_output_at = loop.time()
        self._status: int | None = None
        self._usage: resource.struct_rusage | None = None
        self._timeouts: Timeouts | None = None
        self._kill_after: asyncio.TimerHandle | None = None
        self.kill_grace_s = DEFAULT_KILL_GRACE_S
        """After a timeout's SIGTERM, how long the tree has before SIGKILL."""
        self.tty_path = ""
        """The PTY slave (PTY mode)."""
        self._last_input_at = 0.0
        self._input_watch: InputWatch | None = None
        self.handle = ""
        """Server-wide handle (local/directory.py)."""
        self.principal = ""
        self.detached = False
        """Outlives the session that started it (the directory owns it)."""
        self.argv: list[str] = []
        self.started_wall = time.time()
        self.links: dict[tuple[Linker, str], bool] = {}
        """The tables showing this process, by (table, id there): True for an attach."""
        self.release: Callable[[], None] | None = None
        """Frees what outlives the child (its cgroup) once the process leaves the server."""
        self.sandbox_plan: MountPlan | None = None
        """Host-side placeholders of its sandbox, removed by `cleanup` (an upgrade carries them)."""
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

    @property
    def termination(self) -> Termination | None:
        return self.log.termination

    @property
    def last_seq(self) -> int:
        return self.log.next_seq - 1

    async def wait_output(
        self,
        pattern: str | None,
        idle_s: float | None,
        timeout_s: float,
        after_seq: int | None,
    ) -> ProcessWaitResponse:
        return await wait_on_output(
            self.log,
            pattern=compile_pattern(pattern) if pattern is not None else None,
            idle_s=idle_s,
            timeout_s=timeout_s,
            after_seq=after_seq,
            last_output=lambda: self.last_output_at,
        )

    # -- output --------------------------------------------------------------------------------

    def _on_readable(self, fd: int) -> None:
        try:
            data = os.read(fd, READ_CHUNK_BYTES)
        except BlockingIOError:
            return
        except OSError:  # EIO: the PTY slave has no holders left
            data = b""
        if data:
            self.last_output_at = self._loop.time()
            self.log.append_output(self._readers[fd], data)
            if self._input_watch is not None:
                self._input_watch.poke()
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
        if not self._pausers:
            self._loop.remove_reader(fd)
        if fd != self._stdin_fd:
            os.close(fd)
        if not self._readers and self._grace is not None:
            self._finish_exit()
        self._maybe_close()

    def pause_output(self, by: object = None) -> None:
        """Stop reading output (back-pressure: the child blocks once its pipe is full) until
        everyone who paused it (`by`) resumed it."""
        if not self._pausers:
            for fd in self._readers:
                self._loop.remove_reader(fd)
        self._pausers.add(by)

    def resume_output(self, by: object = None) -> None:
        if by not in self._pausers:
            return
        self._pausers.discard(by)
        if not self._pausers:
            for fd in self._readers:
                self._loop.add_reader(fd, self._on_readable, fd)

    @property
    def attachers(self) -> int:
        """Tables that attached this process by handle."""
        return sum(self.links.values())

    # -- terminal ------------------------------------------------------------------------------

    def resize(self, rows: int, cols: int) -> None:
        """Set the terminal size; the kernel sends SIGWINCH to the terminal's foreground group.

        Raises `InvalidRequest` for a process without a terminal or one that has exited.
        """
        check_size(rows, cols)
        if not self.tty:
            raise InvalidRequest("process/resize needs a process started with tty")
        if self.log.exited or self._stdin_fd is None:
            raise InvalidRequest("process/resize: the process has exited")
        fcntl.ioctl(self._stdin_fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    # -- exit ----------------------------------------------------------------------------------

    def on_usage(self, usage: resource.struct_rusage) -> None:
        """Called by the reaper (before `on_exit_status`) with the child's resource usage."""
        self._usage = usage

    def on_exit_status(self, status: int) -> None:
        """Called by the reaper with the child's wait status."""
        self._reaped = True
        self._status = status
        if self._timeouts is not None:
            self._timeouts.cancel()
        if self._input_watch is not None:
            self._input_watch.close()
            self._input_watch = None
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
        streams = [(chunk.stream, chunk.data) for chunk in self.log.retained()]
        denied = looks_denied(self.sandbox_type, self._exit_code, streams)
        memory_limited = self.limits is not None and self.limits.memory_bytes is not None
        limited = self.cgroup if memory_limited else None
        termination = termination_record(
            status=self._status,
            usage=self._usage,
            end_cause=self.end_cause,
            oom_kills=limited.oom_kills() if limited is not None else 0,
            sandbox_denied=sandbox_denied(self.sandbox_type, self._exit_code, streams),
            peak_memory=limited.peak_memory() if limited is not None else None,
            server_peak_rss=self.server_peak_rss,
        )
        self.log.record_exit(self._exit_code, denied, termination)
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
            if self._input_watch is not None:
                self._last_input_at = self._loop.time()
                self._input_watch.poke()
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

    def terminate(self, cause: TerminationReason = "terminated") -> bool:
        """SIGKILL the whole tree. Returns whether the child itself was still running."""
        running = not self.log.exited
        self._terminated = True
        if running:
            self.terminated_while_running = True
            if self.end_cause is None and not self._reaped:
                self.end_cause = cause
        self.kill()
        if not running:
            self._abandon_streams()
        return running

    def kill(self) -> None:
        """SIGKILL the child's tree (idempotent). The reaper still reports the exit."""
        if self._kill_after is not None:
            self._kill_after.cancel()
            self._kill_after = None
        if self.cgroup is not None:
            # Every descendant is in the cgroup: no need to walk /proc.
            if not self._reaped:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, signal.SIGKILL)
            self.cgroup.kill()
        else:
            tree.kill_tree(self.pid, root_alive=not self._reaped)

    def signal_tree(self, sig: int) -> None:
        """Send `sig` (once) to the process's group and every descendant found."""
        if not self._reaped:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)
        if self.cgroup is not None:
            self.cgroup.signal(sig)
        elif not self._reaped:
            for pid in tree.descendants(self.pid) | {self.pid}:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)

    # -- waiting for input (PTY) ---------------------------------------------------------------

    def watch_input(self) -> None:
        """Report (once per quiet stretch) to every linked table that listens when the
        terminal's foreground process blocks reading it (local/input_wait.py: a heuristic).
        Idempotent."""
        if not self.tty or self._stdin_fd is None or self._reaped or self._input_watch is not None:
            return

        def pids() -> set[int] | list[int]:
            cgroup = self.cgroup
            if cgroup is not None:
                return cgroup.pids()
            return tree.descendants(self.pid) | {self.pid}

        self._input_watch = InputWatch(
            self._loop,
            master_fd=self._stdin_fd,
            tty_path=self.tty_path,
            pids=pids,
            last_activity=lambda: max(self.last_output_at, self._last_input_at),
            report=self._report_waiting,
        )

    def _report_waiting(self, reader: Reader) -> None:
        for linker, process_id in list(self.links):
            listener = linker.waiting_listener
            if listener is not None:
                listener(process_id, self, reader.pid, reader.command)

    # -- timeouts ------------------------------------------------------------------------------

    def arm_timeouts(self, timeout_s: float | None, idle_s: float | None, grace_s: float) -> None:
        """End the tree (SIGTERM, SIGKILL `grace_s` later) once `timeout_s` has passed or no
        output came for `idle_s`."""
        self.kill_grace_s = grace_s
        if timeout_s is None and idle_s is None:
            return

        def expire(reason: TerminationReason) -> None:
            if self.log.exited or self._reaped or self.end_cause is not None:
                return
            self.end_cause = reason
            self.signal_tree(signal.SIGTERM)
            self.kill_later(grace_s)

        self._timeouts = Timeouts(
            self._loop,
            expire,
            lambda: self.last_output_at,
            timeout_s=timeout_s,
            idle_s=idle_s,
        )

    def kill_later(self, delay_s: float) -> None:
        """SIGKILL the tree in `delay_s` (a timeout's grace period)."""
        self._kill_after = self._loop.call_later(delay_s, self.kill)


class LocalExecBackend:
    """The process table of one session: ids, spawning, links, retention of finished ones."""

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
        kill_grace_s: float = DEFAULT_KILL_GRACE_S,
        network: ExecutorNetworkOptions | None = None,
        directory: ProcessDirectory | None = None,
        journals: JournalStore | None = None,
        principal: str = "",
    ) -> None:
        self._reaper = reaper
        self._kill_grace_s = kill_grace_s
        self._network = network or ExecutorNetworkOptions()
        self._placement: Placement = NO_PLACEMENT
        self._output_budget = output_budget
        self._stdin_budget = stdin_budget
        self._telemetry = telemetry
        self._directory = directory if directory is not None else ProcessDirectory()
        self._journals = journals
        self.principal = principal
        """Who this table's session belongs to (handles are found per principal)."""
        self.session_id = ""
        """For log lines only."""
        self._max_processes = max_processes
        self._cgroups = cgroups or ProcessCgroups.disabled()
        self._cgroups_held: dict[str, tuple[ProcessCgroup, LocalProcess]] = {}
        """Cgroups of the processes this table started (with the process), kept after an entry
        expires while still busy; a detached process's goes with the process."""
        self._loop = asyncio.get_running_loop()
        self._server_env = server_env if server_env is not None else os.environ
        self._retention_s = closed_retention_s
        self._processes: dict[str, LocalProcess] = {}
        """Links by this table's ids."""
        self._owned: set[str] = set()
        """Ids of the processes this table started and owns (not detached)."""
        self._listeners: dict[str, Callable[[ProcessEvent], None]] = {}
        self._expiry: dict[str, asyncio.TimerHandle] = {}
        self._output_paused = False
        self._snapshots = SnapshotCache()
        """This session's shell snapshots (a scope lives as long as the session)."""
        self.listener: ProcessListener | None = None
        self.network_peer: NetworkPolicyPeer | None = None
        self._proxies: set[ManagedProxy] = set()
        """Managed proxies of processes not closed yet."""
        self._proxy_tasks = TaskOwner("closing network proxies")
        self._waiting_listener: WaitingListener | None = None

    @property
    def waiting_listener(self) -> WaitingListener | None:
        """Hears that a PTY process waits for input (set by a session that asked for it)."""
        return self._waiting_listener

    @waiting_listener.setter
    def waiting_listener(self, listener: WaitingListener | None) -> None:
        self._waiting_listener = listener
        if listener is not None:  # processes linked before (adopted, attached) are watched too
            for process in self._processes.values():
                if process.tty:
                    process.watch_input()

    def __len__(self) -> int:
        return len(self._processes)

    @property
    def active(self) -> int:
        """Processes this table started that have not closed yet (attached ones not counted:
        they are counted where they were started)."""
        return sum(
            1
            for process_id, process in self._processes.items()
            if not process.closed and not process.links.get((self, process_id))
        )

    def get(self, process_id: str) -> LocalProcess | None:
        return self._processes.get(process_id)

    def require(self, process_id: str) -> LocalProcess:
        process = self._processes.get(process_id)
        if process is None:
            raise InvalidRequest(f"unknown process id {process_id}")
        return process

    def start(self, params: ProcessStartParams) -> LocalProcess | Awaitable[LocalProcess]:
        """Spawn a child under `params.process_id`. Raises the reference's errors on failure,
        in the reference's order of checks.

        Returns an awaitable instead when the child must wait for a shell snapshot to be
        captured first (the first use of a snapshot scope); every check that can fail has been
        made by then, except the spawn itself.
        """
        sandbox = params.sandbox
        _check_network_members(params)
        cwd = params.cwd.native_cwd()  # checked before argv, as the reference does
        if not params.argv:
            raise InvalidParams("argv must not be empty")
        if sandbox is not None and params.enforce_managed_network and params.network_proxy is None:
            # Fail closed: enforcement needs the executor's own managed proxy.
            raise InvalidParams(
                "failed to prepare process sandbox: managed network enforcement needs a "
                "network proxy (`networkProxy`)"
            )
        env = build_child_env(params.env, params.env_policy, self._server_env)
        policy = None
        if sandbox is not None:
            try:
                policy = sandbox_launch.resolve_policy(sandbox, cwd, env)
            except SandboxError as exc:
                raise StartFailed(
                    f"failed to prepare process sandbox: {exc}", "sandboxPreparation"
                ) from None
        snapshot_key = self._snapshot_key(params)
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
        self._check_new_id(params.process_id)
        if params.network_proxy is not None:
            managed = sandbox is not None and params.enforce_managed_network
            _refuse_unsupported_proxy_features(
                params.network_proxy, transparent=managed and self._network.transparent_tcp
            )
        extras = self._extras(params)
        if params.size is not None:
            spec = dataclasses.replace(spec, size=(params.size.rows, params.size.cols))
        network = None
        if params.network_proxy is not None:
            network = self._start_proxy(params)
            env.update(network.proxy.snapshot.env())
            if network.proxy.broker is not None:
                try:
                    env.update(self._credential_env(network.proxy, env))
                except BaseException:
                    self._release_proxy(network)
                    raise
        try:
            if snapshot_key is None:
                return self._start(
                    params.process_id, spec, env, policy, None, extras=extras, network=network
                )
            known, snapshot = self._snapshots.lookup(snapshot_key)
            if known:
                return self._start(
                    params.process_id, spec, env, policy, snapshot, extras=extras, network=network
                )
        except BaseException:
            self._release_proxy(network)
            raise
        return self._start_after_capture(
            params.process_id, spec, env, policy, snapshot_key, extras=extras, network=network
        )

    def _start_proxy(self, params: ProcessStartParams) -> _Network:
        """The process's managed proxy, started (its snapshot is final)."""
        # Imported on first use: the proxy (and its HTTP stack) costs nothing to the others.
        from execserver.local.network.launch import ManagedProxy

        launch = params.network_proxy
        assert launch is not None
        try:
            proxy = ManagedProxy.start(
                params.process_id,
                launch,
                lambda: self.network_peer,
                self._server_env,
                tcp_upstream=self._network.tcp_upstream,
            )
        except OSError as exc:
            raise InternalError(f"failed to start the network proxy: {exc.strerror}") from None
        self._proxies.add(proxy)
        confined = params.sandbox is not None and params.enforce_managed_network
        return _Network(proxy, confined)

    def _credential_env(self, proxy: ManagedProxy, env: dict[str, str]) -> dict[str, str]:
        """Credential masking: the CA bundle's variables (the bundle is noted on `proxy`), and
        `env`'s secrets replaced by their dummies (its broker remembers the real values)."""
        broker = proxy.broker
        assert broker is not None
        from execserver.errors import CodexHomeInvalid
        from execserver.local.discovery import codex_home
        from execserver.local.network.certs import CertificateAuthorityError, authority, ca_env

        try:
            bundle = authority().bundle(os.fsdecode(codex_home(self._server_env)))
        except (CodexHomeInvalid, CertificateAuthorityError) as exc:
            raise InternalError(f"failed to start the network proxy: {exc}") from None
        proxy.ca_bundle = str(bundle)
        masked = dict(env)
        broker.virtualize(masked)
        masked.update(ca_env(bundle))
        return masked

    def _release_proxy(self, network: _Network | None) -> None:
        """Stop a proxy (its process ended, or never started); `aclose()` waits for it."""
        if network is None or network.proxy not in self._proxies:
            return
        self._proxies.discard(network.proxy)
        network.proxy.close()
        self._proxy_tasks.spawn(network.proxy.aclose())

    def _snapshot_key(self, params: ProcessStartParams) -> SnapshotKey | None:
        """The snapshot a start uses, if any; raises the reference's errors for a bad one."""
        request = params.shell_snapshot
        if request is None:
            return None
        if not 0 < len(request.scope_id.encode()) <= 256:
            raise InvalidParams("shell snapshot scope must be non-empty and at most 256 bytes")
        if not shell_snapshot.applies(params.argv, request.shell.path):
            return None
        if not shell_snapshot.supported(request.shell.name):
            raise InvalidParams(f"shell snapshots are unsupported for shell `{request.shell.name}`")
        return (
            request.scope_id,
            request.shell.name,
            request.shell.path,
            shell_snapshot.encoded_policy(params.env_policy),
        )

    def _check_new_id(self, process_id: str) -> None:
        if process_id in self._processes:
            raise InvalidRequest(f"process {process_id} already exists")
        if len(self._processes) >= self._max_processes:
            raise InvalidRequest(
                f"too many processes in this session (limit {self._max_processes}, finished "
                "ones included until they expire); terminate some or wait"
            )

    def _extras(self, params: ProcessStartParams) -> _Extras:
        """The extension members (timeouts, limits, size, detach), checked before anything
        runs; limits that this executor cannot enforce are refused, never ignored."""
        extras = _Extras(
            timeout_s=timeout_seconds("timeoutMs", params.timeout_ms),
            idle_s=timeout_seconds("idleTimeoutMs", params.idle_timeout_ms),
            limits=limits_from_wire(params.limits),
            detach=params.detach,
        )
        try:
            self._cgroups.check(extras.limits)
        except LimitsUnavailable as exc:
            raise InvalidParams(f"process/start limits cannot be enforced: {exc}") from None
        if params.size is not None:
            check_size(params.size.rows, params.size.cols)
        if params.detach:
            self._directory.check_detach(self.principal)
        return extras

    async def _start_after_capture(
        self,
        process_id: str,
        spec: ProcessSpec,
        env: dict[str, str],
        policy: ResolvedPolicy | None,
        key: SnapshotKey,
        *,
        extras: _Extras,
        network: _Network | None,
    ) -> LocalProcess:
        """Capture the scope's snapshot (once), then start.

        Cancellation: the start is abandoned; a capture in progress goes on for the scope.
        """
        try:
            if not spec.tty:
                _check_cwd(spec.cwd)  # a missing cwd fails the start, not the capture
            snapshot = await self._snapshots.get(
                key, functools.partial(self._capture_snapshot, key, spec, env, policy)
            )
            self._check_new_id(process_id)  # another start may have taken the id meanwhile
            if extras.detach:
                self._directory.check_detach(self.principal)  # nor the last detached place
            return self._start(
                process_id, spec, env, policy, snapshot, extras=extras, network=network
            )
        except BaseException:
            self._release_proxy(network)
            raise

    def _start(
        self,
        process_id: str,
        spec: ProcessSpec,
        env: dict[str, str],
        policy: ResolvedPolicy | None,
        snapshot: Snapshot | None,
        *,
        extras: _Extras,
        network: _Network | None = None,
    ) -> LocalProcess:
        limits = extras.limits
        try:
            # A fresh cgroup (with the limits) that the child is born in.
            placement = self._cgroups.placement(limits)
        except LimitsUnavailable as exc:
            raise InvalidParams(f"process/start limits cannot be enforced: {exc}") from None
        except OSError as exc:
            raise InvalidParams(f"process/start limits could not be applied: {exc}") from None
        run = _Run(spec.argv, ())
        process = None
        self._placement = placement
        try:
            if snapshot is not None:
                if network is not None and network.proxy.broker is not None:
                    snapshot = _masked_snapshot(snapshot, network.proxy.broker, env)
                data = snapshot.render(pty_env(env) if spec.tty else env)
                run = _Run(
                    shell_snapshot.restore_argv(snapshot.shell, spec.argv),
                    ((shell_snapshot.memfd_with(data), shell_snapshot.SNAPSHOT_FD),),
                )
            if policy is None:
                process = self._spawn(process_id, spec, env, run)
            else:
                process = self._spawn_sandboxed(process_id, spec, env, policy, run, network=network)
        finally:
            self._placement = NO_PLACEMENT
            for fd, _ in run.extra_fds:
                os.close(fd)
            cgroup = placement.finish(process is not None)
        if network is not None:
            self._tie_proxy(process, network)
        if cgroup is not None:
            self._cgroups_held[cgroup.name] = (cgroup, process)
            process.cgroup = cgroup
            process.limits = limits
        process.arm_timeouts(extras.timeout_s, extras.idle_s, self._kill_grace_s)
        process.stdin_budget = self._stdin_budget
        process.argv = list(spec.argv)
        self._directory.register(process, self.principal, detached=extras.detach)
        self._link(process_id, process, attached=False)
        if not extras.detach:
            self._owned.add(process_id)
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
        return process

    # -- links ---------------------------------------------------------------------------------

    def _link(self, process_id: str, process: LocalProcess, *, attached: bool) -> None:
        self._processes[process_id] = process
        listener = self._forward(process_id, process)
        self._listeners[process_id] = listener
        process.log.listeners.append(listener)
        process.links[(self, process_id)] = attached
        if self._output_paused:
            process.pause_output((self, process_id))
        if self._waiting_listener is not None and process.tty:
            process.watch_input()
        if process.closed:
            self._schedule_expiry(process_id)

    def unlink(self, process_id: str) -> None:
        """Drop this table's link `process_id` (the process itself is unaffected)."""
        process = self._processes.pop(process_id, None)
        if process is None:
            return
        self._owned.discard(process_id)
        handle = self._expiry.pop(process_id, None)
        if handle is not None:
            handle.cancel()
        listener = self._listeners.pop(process_id)
        with contextlib.suppress(ValueError):
            process.log.listeners.remove(listener)
        process.links.pop((self, process_id), None)
        process.resume_output((self, process_id))

    def _forward(self, process_id: str, process: LocalProcess) -> Callable[[ProcessEvent], None]:
        def forward(event: ProcessEvent) -> None:
            if self.listener is not None:
                self.listener(process_id, process, event)
            if isinstance(event, ClosedEvent):
                self._schedule_expiry(process_id)

        return forward

    def attach(
        self, handle: str, process_id: str | None = None, tail_bytes: int | None = None
    ) -> ProcessAttachResponse:
        """Link the caller's process `handle` under `process_id` (default: the handle).

        Raises `InvalidRequest` for an unknown (or someone else's) handle, an id in use, and
        past the table's or the process's attacher limit.
        """
        process = self._directory.find(handle, self.principal)
        process_id = handle if process_id is None else process_id
        self._check_new_id(process_id)
        self._directory.check_attach(process)
        after_seq, skip = (0, 0) if tail_bytes is None else process.log.tail_start(tail_bytes)
        self._link(process_id, process, attached=True)
        return ProcessAttachResponse(
            process_id=process_id,
            handle=handle,
            tty=process.tty,
            sandbox_type=process.sandbox_type,
            next_seq=process.log.next_seq,
            replay_after_seq=after_seq,
            skip_bytes=skip,
        )

    def detach(self, process_id: str) -> None:
        """Drop the link `process_id`; a process this table owns becomes detached first (it
        then outlives the session)."""
        process = self.require(process_id)
        if process_id in self._owned:
            self._directory.detach(process)
        self.unlink(process_id)

    def links(self) -> list[tuple[str, LocalProcess, bool, bool]]:
        """(id, process, owned, attached) of every link (for an upgrade in place)."""
        return [
            (pid, p, pid in self._owned, p.links.get((self, pid), False))
            for pid, p in self._processes.items()
        ]

    def adopt_links(self, links: list[tuple[str, LocalProcess, bool, bool]]) -> None:
        """Take links carried over by an upgrade in place (see `links()`)."""
        for process_id, process, owned, attached in links:
            self._link(process_id, process, attached=attached)
            if owned:
                self._owned.add(process_id)
                process.on_closed = self._on_closed
                if process.cgroup is not None:
                    self._cgroups_held[process.cgroup.name] = (process.cgroup, process)

    def list_processes(self) -> list[ProcessInfo]:
        """Every process of this table's principal on the server."""
        return self._directory.list(self.principal)

    def kill(self, handle: str) -> bool:
        """Kill the caller's process `handle` (whole tree); True if it was still running."""
        return self._directory.find(handle, self.principal).terminate()

    def _spawn_sandboxed(
        self,
        process_id: str,
        spec: ProcessSpec,
        env: dict[str, str],
        policy: ResolvedPolicy,
        run: _Run,
        *,
        network: _Network | None = None,
    ) -> LocalProcess:
        """Start the program under bubblewrap (or directly, if the intent restricts nothing
        and no managed network confines it).

        Fails closed: if the sandbox cannot be prepared, nothing runs. A program that cannot
        be started at all (missing, not executable) is reported as without a sandbox, before
        anything runs.
        """
        bridge = None
        if network is not None and network.confined:
            bridge = PortBridge(network.proxy.snapshot.ports)
        if network is not None and network.proxy.ca_bundle is not None:
            # The CA bundle the child's TLS clients are pointed at must be readable there.
            policy = sandbox_launch.with_readable(policy, os.fsencode(network.proxy.ca_bundle))
        argv0 = run.argv[0]
        if not argv0:
            raise StartFailed(
                f"missing program for {'PTY' if spec.tty else 'pipe'} spawn", "spawnFailed"
            )
        if not spec.tty:  # checked before the sandbox is built, as the reference does
            _check_cwd(spec.cwd)
        if any("\0" in arg for arg in run.argv):
            raise StartFailed("nul byte found in provided data", "spawnFailed")
        if policy.mechanism is Mechanism.PLAIN and bridge is None:
            process = self._spawn(process_id, spec, env, run)
            process.sandbox_type = "linuxSeccomp"
            return process
        self._check_program(spec, env, argv0)
        try:
            launch = sandbox_launch.prepare(
                policy, spec.cwd, bridge=bridge, probe_run=self._cgroups.aside
            )
        except (SandboxUnavailable, SandboxError) as exc:
            if bridge is not None:
                bridge.close()
            raise StartFailed(
                f"failed to prepare process sandbox: {exc}",
                "sandboxUnavailable"
                if isinstance(exc, SandboxUnavailable)
                else "sandboxPreparation",
            ) from None
        assert launch is not None
        try:
            if spec.tty:
                env = pty_env(env)
            envp = _encode_env(env)
            arg0 = None if spec.arg0 is None else os.fsencode(spec.arg0)
            argv = launch.command([os.fsencode(arg) for arg in run.argv], arg0)
            extra_fds = (*launch.extra_fds, *run.extra_fds)
            if spec.tty:
                process = self._spawn_pty(
                    process_id,
                    launch.prefix[0],
                    argv,
                    envp,
                    cwd=b"/",
                    size=spec.size,
                    extra_fds=extra_fds,
                )
            else:
                process = self._spawn_pipes(
                    process_id, launch.prefix[0], argv, envp, spec, cwd=b"/", extra_fds=extra_fds
                )
        except BaseException:
            launch.close()
            raise
        if bridge is not None and network is not None:
            bridge.receive(network.proxy.adopt_list)
        process.sandbox_type = "linuxSeccomp"
        process.cleanup = launch.close
        process.sandbox_plan = launch.plan
        return process

    def _tie_proxy(self, process: LocalProcess, network: _Network) -> None:
        """The proxy lives as long as the process: it stops when the process closes."""
        previous = process.cleanup

        def cleanup() -> None:
            try:
                if previous is not None:
                    previous()
            finally:
                self._release_proxy(network)

        process.cleanup = cleanup

    def _check_program(self, spec: ProcessSpec, env: dict[str, str], program: str) -> None:
        """Fail now, as an unsandboxed start would, when `program` cannot be started at all:
        not found, not executable, a directory. (Inside the sandbox it would only be seen
        failing, not told apart from a denial.)"""
        if spec.tty:
            child_env = pty_env(env)
            cwd = pty_cwd(spec.cwd, child_env)
            resolve = resolve_pty_program if spec.arg0 is None else resolve_renamed_pty_program
            try:
                path = resolve(program, child_env, cwd)
            except PtySpawnError as exc:
                raise StartFailed(str(exc), exc.kind) from None
        else:
            cwd = spec.cwd
            search_path = env["PATH"] if "PATH" in env else self._server_env.get("PATH")
            try:
                path = resolve_program(program, search_path, cwd)
            except OSError as exc:
                raise StartFailed.from_os_error(exc) from None
        try:
            st = os.stat(os.path.join(cwd, path))
        except OSError as exc:
            raise StartFailed.from_os_error(exc) from None
        if not stat.S_ISREG(st.st_mode) or not os.access(os.path.join(cwd, path), os.X_OK):
            raise StartFailed.from_os_error(PermissionError(errno.EACCES, "denied"))

    def _spawn(
        self, process_id: str, spec: ProcessSpec, env: dict[str, str], run: _Run
    ) -> LocalProcess:
        cwd = spec.cwd
        if spec.tty:
            env = pty_env(env)
            cwd = pty_cwd(cwd, env)
            resolve = resolve_pty_program if spec.arg0 is None else resolve_renamed_pty_program
            try:
                program = resolve(run.argv[0], env, cwd)
            except PtySpawnError as exc:
                raise StartFailed(str(exc), exc.kind) from None
        elif not run.argv[0]:
            raise StartFailed("missing program for pipe spawn", "spawnFailed")
        envp = _encode_env(env)
        argv = [spec.arg0 if spec.arg0 is not None else run.argv[0], *run.argv[1:]]
        if any("\0" in arg for arg in (*argv, run.argv[0])):
            raise StartFailed("nul byte found in provided data", "spawnFailed")
        argv_bytes = [os.fsencode(arg) for arg in argv]
        if spec.tty:
            return self._spawn_pty(
                process_id,
                program,
                argv_bytes,
                envp,
                cwd=cwd,
                size=spec.size,
                extra_fds=run.extra_fds,
            )
        search_path = env["PATH"] if "PATH" in env else self._server_env.get("PATH")
        try:
            program = resolve_program(run.argv[0], search_path, cwd)
        except OSError as exc:
            raise StartFailed.from_os_error(exc) from None
        return self._spawn_pipes(
            process_id, program, argv_bytes, envp, spec, cwd=spec.cwd, extra_fds=run.extra_fds
        )

    # -- shell snapshots --------------------------------------------------------------------------

    async def _capture_snapshot(
        self,
        key: SnapshotKey,
        spec: ProcessSpec,
        env: dict[str, str],
        policy: ResolvedPolicy | None,
    ) -> Snapshot | None:
        """Run the login shell once to describe itself, then check the snapshot sources.

        In the command's environment, working directory and sandbox; None on any failure."""
        _scope, name, shell_path, _policy = key
        if spec.tty:
            env = pty_env(env)
        cwd = pty_cwd(spec.cwd, env) if spec.tty else spec.cwd
        marker = shell_snapshot.new_marker()
        script = shell_snapshot.capture_script(name, marker)
        status, output = await self._run_helper([shell_path, "-lc", script], env, cwd, policy)
        if status != 0:
            return None
        snapshot = shell_snapshot.parse_capture(name, marker, output, env)
        if snapshot is None:
            return None
        fd = shell_snapshot.memfd_with(snapshot.render({}))
        try:
            check = [shell_path, "-c", f". /dev/fd/{shell_snapshot.SNAPSHOT_FD}"]
            status, _ = await self._run_helper(
                check, env, cwd, policy, extra_fds=((fd, shell_snapshot.SNAPSHOT_FD),)
            )
        finally:
            os.close(fd)
        return snapshot if status == 0 else None

    async def _run_helper(
        self,
        argv: list[str],
        env: dict[str, str],
        cwd: bytes,
        policy: ResolvedPolicy | None,
        *,
        extra_fds: tuple[tuple[int, int], ...] = (),
    ) -> tuple[int | None, bytes]:
        """Run a short internal command (stdin and stderr /dev/null) under `policy`; return its
        exit code (None if it could not run or overran the time limit) and its stdout.

        Cancellation: the command's tree is killed and reaped before the cancellation goes on.
        """
        launch = None
        try:
            if policy is not None:
                launch = sandbox_launch.prepare(policy, cwd, probe_run=self._cgroups.aside)
            if launch is not None:
                program = launch.prefix[0]
                argv_bytes = [*launch.prefix, *(os.fsencode(arg) for arg in argv)]
                spawn_cwd = b"/"
                extra_fds = (*launch.extra_fds, *extra_fds)
            else:
                program = os.fsencode(argv[0])
                argv_bytes = [os.fsencode(arg) for arg in argv]
                spawn_cwd = cwd
            envp = _encode_env(env)
        except (SandboxUnavailable, SandboxError, StartFailed, ValueError):
            if launch is not None:
                launch.close()
            return None, b""
        return await _run_collecting(
            self._reaper,
            program,
            argv_bytes,
            envp,
            cwd=spawn_cwd,
            extra_fds=extra_fds,
            launch=launch,
        )

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
            pid = spawn(
                program,
                argv,
                envp,
                cwd,
                Stdio(in_r, out_w, err_w, extra_fds=extra_fds),
                cgroup_fd=self._placement.cgroup_fd,
                run=self._placement.run,
            )
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
            log=self._new_log(),
        )
        self._reaper.watch(pid, process.on_exit_status, process.on_usage)
        return process

    def _new_log(self) -> OutputLog:
        journal = self._journals.open() if self._journals is not None else None
        return OutputLog(budget=self._output_budget, journal=journal)

    def _spawn_pty(
        self,
        process_id: str,
        program: bytes,
        argv: list[bytes],
        envp: list[bytes],
        *,
        cwd: bytes,
        size: tuple[int, int],
        extra_fds: tuple[tuple[int, int], ...] = (),
    ) -> LocalProcess:
        master, slave = open_pty(*size)
        try:
            tty = os.fsencode(os.ttyname(slave))
            pid = spawn(
                program,
                argv,
                envp,
                cwd,
                Stdio(tty_path=tty, extra_fds=extra_fds),
                cgroup_fd=self._placement.cgroup_fd,
                run=self._placement.run,
            )
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
            log=self._new_log(),
        )
        process.tty_path = os.fsdecode(tty)
        self._reaper.watch(pid, process.on_exit_status, process.on_usage)
        return process

    def _on_closed(self, process: LocalProcess) -> None:
        if self._telemetry is None:
            self._record_finish(process)
        else:  # the span after this loop turn, once the closed notification has been written
            self._loop.call_soon(self._record_finish, process)
        cgroup = process.cgroup
        with contextlib.suppress(OSError):
            if cgroup is not None and self._cgroups.release(cgroup):
                # Empty: nothing of the tree is left (and the cgroup may serve another process).
                self._cgroups_held.pop(cgroup.name, None)
                process.cgroup = None

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
            termination = process.termination
            log.info(
                "process finished",
                extra={
                    "session_id": self.session_id,
                    "process_id": process.process_id,
                    "pid": process.pid,
                    "exit_code": exit_code,
                    "result": result,
                    "reason": termination.reason if termination is not None else None,
                    "signal": termination.signal if termination is not None else None,
                    "duration_ms": round(seconds * 1000, 3),
                },
            )

    def _schedule_expiry(self, process_id: str) -> None:
        if process_id not in self._expiry:
            handle = self._loop.call_later(self._retention_s, self._expire, process_id)
            self._expiry[process_id] = handle

    def _expire(self, process_id: str) -> None:
        self._expiry.pop(process_id, None)
        process = self._processes.get(process_id)
        if process is None:
            return
        if process_id in self._owned:
            self._directory.discard(process)  # unlinks it here and everywhere else
        else:
            self.unlink(process_id)
        self._remove_empty_cgroups()

    def _remove_empty_cgroups(self) -> None:
        for name, (cgroup, _) in list(self._cgroups_held.items()):
            with contextlib.suppress(OSError):
                if cgroup.remove():
                    del self._cgroups_held[name]

    def pause_output(self) -> None:
        """Back-pressure: stop reading every process's output until `resume_output()`."""
        self._output_paused = True
        for process_id, process in self._processes.items():
            process.pause_output((self, process_id))

    def resume_output(self) -> None:
        self._output_paused = False
        for process_id, process in self._processes.items():
            process.resume_output((self, process_id))

    async def aclose(self, grace_s: float = 2.0) -> None:
        """Kill every process tree this table owns and wait (bounded) until each child is
        reaped; detached and attached processes only lose their link here.

        Cancellation: the kills are sent before the first await; waiting may be cut short.
        """
        self._snapshots.cancel()  # shell snapshot captures in progress: their children die
        owned = [(pid, p) for pid, p in self._processes.items() if pid in self._owned]
        pending = []
        for _, process in owned:
            if not process.closed:
                process.terminate("shutdown")
                pending.append(process.wait_closed())
        for handle in self._expiry.values():
            handle.cancel()
        self._expiry.clear()
        for process_id in [pid for pid in self._processes if pid not in self._owned]:
            self.unlink(process_id)
        # A detached process's cgroup goes when the process leaves the server.
        for name, (_, process) in list(self._cgroups_held.items()):
            if process.detached:
                del self._cgroups_held[name]
                process.release = functools.partial(release_cgroup, process)
        # Daemons and double-forked orphans of processes that already finished.
        for cgroup, _ in list(self._cgroups_held.values()):
            cgroup.kill()
        if pending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace_s):
                    await asyncio.gather(*pending)
        await self._snapshots.aclose()
        for proxy in list(self._proxies):  # of processes that did not close in time
            proxy.close()
            self._proxy_tasks.spawn(proxy.aclose())
        self._proxies.clear()
        await self._proxy_tasks.aclose()
        for _, process in owned:
            self._record_finish(process)
            self._directory.discard(process)
        self._processes.clear()
        self._owned.clear()
        self._remove_empty_cgroups()


def release_cgroup(process: LocalProcess) -> None:
    """Kill what is left in a (detached) process's cgroup and remove it: the process leaves
    the server."""
    cgroup, process.cgroup = process.cgroup, None
    if cgroup is not None:
        with contextlib.suppress(OSError):
            cgroup.kill()
            cgroup.remove()


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


@dataclass(slots=True, frozen=True)
class _Extras:
    """`process/start`'s extension members, checked: how the process may end besides by
    itself (timeouts, limits) and whether it outlives its session (`detach`)."""

    timeout_s: float | None
    idle_s: float | None
    limits: Limits | None
    detach: bool


@dataclass(slots=True, frozen=True)
class _Network:
    """A process's managed proxy, and whether the process is confined to it (a sandbox with
    `enforceManagedNetwork`: its own network namespace, where only the proxy is reachable)."""

    proxy: ManagedProxy
    confined: bool


@dataclass(slots=True, frozen=True)
class _Run:
    """The argv actually started (rewritten for a shell snapshot) and fds the child inherits."""

    argv: list[str]
    extra_fds: tuple[tuple[int, int], ...]


def _masked_snapshot(snapshot: Snapshot, broker: CredentialBroker, env: dict[str, str]) -> Snapshot:
    """`snapshot` as a credential-masked child replays it: secrets its profile exported become
    dummies too (the broker learns them), and real values anywhere else in it are replaced."""
    view = {**snapshot.exports, **env}
    broker.virtualize(view)
    return dataclasses.replace(
        snapshot,
        exports={name: broker.mask_text(view[name]) for name in snapshot.exports},
        functions=broker.mask_text(snapshot.functions),
        aliases=[broker.mask_text(alias) for alias in snapshot.aliases],
    )


def _check_network_members(params: ProcessStartParams) -> None:
    """The reference's first checks: the managed-network members, and MXC among them."""
    proxy = params.network_proxy
    managed = params.managed_network
    proxied_tcp = proxy is not None and proxy.proxy.transparent_tcp
    if managed is not None and managed.transparent_tcp and not proxied_tcp:
        raise InvalidParams("transparent TCP requires an executor-local managed proxy")
    if proxy is not None and proxy.policy_decision_timeout_ms == 0:
        raise InvalidParams("network policy decision callback timeout must be nonzero")
    sandbox = params.sandbox
    if sandbox is not None and sandbox.windows_sandbox_level == "mxc":
        raise StartFailed("native MXC is unavailable on this executor", "sandboxUnavailable")
    if proxy is None:
        return
    if proxy.proxy.transparent_tcp and sandbox is None:
        raise InvalidParams("transparent TCP requires a managed Linux sandbox")
    if not proxy.proxy.enabled:
        raise InvalidParams(
            "invalid network proxy config: executor-local network proxy launch requires an "
            "enabled proxy"
        )
    from execserver.local.network.policy import NetworkPolicy, PolicyConfigError

    try:
        NetworkPolicy.from_config(proxy.proxy)
    except PolicyConfigError as exc:
        raise InvalidParams(f"invalid network proxy config: {exc}") from None
    if proxy.proxy.credential_masking:
        from execserver.local.network.credentials import ProviderConfigError, compile_providers

        try:
            compile_providers(proxy.proxy.credential_providers)
        except ProviderConfigError as exc:
            raise InvalidParams(f"invalid network proxy config: {exc}") from None
    allowed = [path for path, rule in (proxy.proxy.unix_sockets or {}).items() if rule == "allow"]
    for index, path in enumerate(allowed):
        if not path.startswith("/") or "\0" in path:
            raise InvalidParams(
                f"invalid network proxy config: invalid network.allow_unix_sockets[{index}]: "
                f"expected a NUL-free absolute path for Linux, got {rust_debug_str(path)}"
            )


def _refuse_unsupported_proxy_features(
    launch: RemoteNetworkProxyLaunchConfig, *, transparent: bool = False
) -> None:
    """Proxy features this executor does not have (their capabilities are false): refused
    clearly rather than run with less than was asked (docs/protocol.md, Capabilities)."""
    if launch.proxy.transparent_tcp or transparent:
        raise InvalidParams(
            "transparent TCP is not supported by this executor "
            "(capability networkProxyTransparentTcp is false)"
        )


async def _run_collecting(
    reaper: ChildReaper,
    program: bytes,
    argv: list[bytes],
    envp: list[bytes],
    *,
    cwd: bytes,
    extra_fds: tuple[tuple[int, int], ...],
    launch: sandbox_launch.SandboxLaunch | None,
) -> tuple[int | None, bytes]:
    """Spawn, collect stdout (bounded) until the exit, within the capture time limit."""
    loop = asyncio.get_running_loop()
    out_r, out_w = os.pipe()
    try:
        pid = spawn(program, argv, envp, cwd, Stdio(None, out_w, None, extra_fds=extra_fds))
    except OSError:
        os.close(out_r)
        if launch is not None:
            launch.close()
        return None, b""
    finally:
        os.close(out_w)
    exited: asyncio.Future[int] = loop.create_future()

    def on_exit(status: int) -> None:
        if not exited.done():
            exited.set_result(status)

    reaper.watch(pid, on_exit)
    output = bytearray()
    overflow = False

    def read() -> None:
        nonlocal overflow
        while True:
            try:
                data = os.read(out_r, READ_CHUNK_BYTES)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data or len(output) + len(data) > shell_snapshot.MAX_CAPTURE_BYTES:
                overflow = overflow or bool(data)
                loop.remove_reader(out_r)
                return
            output.extend(data)

    os.set_blocking(out_r, False)
    loop.add_reader(out_r, read)
    status: int | None = None
    try:
        async with asyncio.timeout(shell_snapshot.CAPTURE_TIMEOUT_S):
            status = await asyncio.shield(exited)
        read()  # what the child wrote just before it exited
    except TimeoutError:
        status = None
    finally:
        loop.remove_reader(out_r)
        os.close(out_r)
        if not exited.done():
            tree.kill_tree(pid, root_alive=True)
            with contextlib.suppress(BaseException):
                await asyncio.shield(exited)
        if launch is not None:
            launch.close()
    if status is None or overflow:
        return None, b""
    return exit_code_from_status(status), bytes(output)
