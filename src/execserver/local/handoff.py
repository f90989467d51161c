"""The processes of a `Host`, as carried across an upgrade in place (`execve` of the server).

`snapshot_host()` describes every process of the host's directory (pid, the fds of its pipes or
PTY, its output log and journal, stdin state, write ids, handle and principal, its cgroup and
limits, the timeouts still running and what ended it) and every session table's links;
`HostHandoff.fds()` lists the fds that must survive the `execve`.
`restore_host()` rebuilds the same processes in a fresh `Host` of the new image: the children
are still ours (same pid), their fds are the same numbers. Nothing here does I/O beyond fd
flags; the server (server/upgrade.py) carries these structs in a memfd.

This module reaches into `LocalProcess` and `OutputLog` internals on purpose: it is the one
place that knows what a process is made of, and its round trip is tested.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections import OrderedDict

import msgspec

from execserver.local.cgroup import Limits
from execserver.local.host import Host
from execserver.local.journal import JournalState
from execserver.local.output_log import OutputLog
from execserver.local.process import LocalExecBackend, LocalProcess, release_cgroup
from execserver.local.sandbox.bwrap import MountPlan
from execserver.protocol.process import (
    ProcessOutputChunk,
    ProcessStream,
    SandboxType,
    Termination,
    TerminationReason,
)


class LogState(msgspec.Struct, kw_only=True):
    next_seq: int
    exit_code: int | None
    exit_seq: int | None
    sandbox_denied: bool
    closed: bool
    termination: Termination | None
    total_bytes: int
    chunks: list[tuple[int, ProcessStream, bytes]]
    journal: JournalState | None


class ProcessState(msgspec.Struct, kw_only=True):
    process_id: str
    handle: str
    principal: str
    detached: bool
    argv: list[str]
    program: str
    pid: int
    tty: bool
    age_s: float
    started_wall: float
    sandbox_type: SandboxType
    readers: list[tuple[int, ProcessStream]]
    stdin_fd: int | None
    has_stdin: bool
    takes_input: bool
    stdin_buffer: bytes
    stdin_broken: bool
    close_when_flushed: bool
    write_ids: list[str]
    terminated: bool
    terminated_while_running: bool
    reaped: bool
    exit_code: int | None
    cgroup: str | None
    limits: Limits | None
    end_cause: TerminationReason | None
    server_peak_rss: int
    quiet_s: float
    """Seconds since the last output (the idle timeout goes on counting from there)."""
    timeout_left_s: float | None
    idle_timeout_s: float | None
    kill_after_s: float | None
    """A timeout's SIGKILL still to come after its SIGTERM, in that many seconds."""
    kill_grace_s: float
    tty_path: str
    placeholders: list[bytes]
    placeholder_files: list[bytes]
    log: LogState


class LinkState(msgspec.Struct, kw_only=True):
    process_id: str
    handle: str
    owned: bool
    attached: bool


class TableState(msgspec.Struct, kw_only=True):
    session_id: str
    principal: str
    links: list[LinkState]


class HostHandoff(msgspec.Struct, kw_only=True):
    processes: list[ProcessState]

    def fds(self) -> list[int]:
        """Every fd the processes need in the new image."""
        fds = {fd for p in self.processes for fd, _ in p.readers}
        fds.update(p.stdin_fd for p in self.processes if p.stdin_fd is not None)
        return sorted(fds)


def _log_state(log: OutputLog) -> LogState:
    return LogState(
        next_seq=log.next_seq,
        exit_code=log.exit_code,
        exit_seq=log.exit_seq,
        sandbox_denied=log.sandbox_denied,
        closed=log.closed,
        termination=log.termination,
        total_bytes=log.total_bytes,
        chunks=[(c.seq, c.stream, c.chunk) for c in log.retained()],
        journal=log.journal.snapshot() if log.journal is not None else None,
    )


def _process_state(p: LocalProcess) -> ProcessState:
    if p._exit_code is not None and not p.log.exited:
        p._finish_exit()  # a sandbox's trailing-output grace is cut short
    plan = p.sandbox_plan
    loop = asyncio.get_running_loop()
    timeout_left, idle = p._timeouts.remaining() if p._timeouts is not None else (None, None)
    kill_after = p._kill_after
    return ProcessState(
        process_id=p.process_id,
        handle=p.handle,
        principal=p.principal,
        detached=p.detached,
        argv=p.argv,
        program=p.program,
        pid=p.pid,
        tty=p.tty,
        age_s=time.monotonic() - p.started_at,
        started_wall=p.started_wall,
        sandbox_type=p.sandbox_type,
        readers=list(p._readers.items()),
        stdin_fd=p._stdin_fd,
        has_stdin=p._has_stdin,
        takes_input=p._takes_input,
        stdin_buffer=bytes(p._stdin_buffer),
        stdin_broken=p._stdin_broken,
        close_when_flushed=p._close_when_flushed,
        write_ids=list(p._write_ids),
        terminated=p._terminated,
        terminated_while_running=p.terminated_while_running,
        reaped=p._reaped,
        exit_code=p._exit_code,
        cgroup=p.cgroup.name if p.cgroup is not None else None,
        limits=p.limits,
        end_cause=p.end_cause,
        server_peak_rss=p.server_peak_rss,
        quiet_s=max(loop.time() - p.last_output_at, 0.0),
        timeout_left_s=timeout_left,
        idle_timeout_s=idle,
        kill_after_s=max(kill_after.when() - loop.time(), 0.0) if kill_after is not None else None,
        kill_grace_s=p.kill_grace_s,
        tty_path=p.tty_path,
        placeholders=list(plan.placeholders) if plan is not None else [],
        placeholder_files=list(plan.placeholder_files) if plan is not None else [],
        log=_log_state(p.log),
    )


def snapshot_host(host: Host) -> HostHandoff:
    """Describe every process of `host` (synchronous: nothing may run between this and the
    `execve`, or output read meanwhile would be lost)."""
    return HostHandoff(processes=[_process_state(p) for p in host.directory.processes()])


def snapshot_table(table: LocalExecBackend) -> TableState:
    return TableState(
        session_id=table.session_id,
        principal=table.principal,
        links=[
            LinkState(process_id=pid, handle=p.handle, owned=owned, attached=attached)
            for pid, p, owned, attached in table.links()
        ],
    )


def _restore_log(host: Host, state: LogState) -> OutputLog:
    journal = None
    if state.journal is not None and host.journals is not None:
        journal = host.journals.restore(state.journal)
    log = OutputLog(budget=host.output_budget, journal=journal)
    log.next_seq = state.next_seq
    log.exit_code = state.exit_code
    log.exit_seq = state.exit_seq
    log.sandbox_denied = state.sandbox_denied
    log.closed = state.closed
    log.termination = state.termination
    log.total_bytes = state.total_bytes
    log.adopt([ProcessOutputChunk(seq=s, stream=st, chunk=c) for s, st, c in state.chunks])
    return log


def _restore_process(host: Host, state: ProcessState) -> LocalProcess:
    for fd in {fd for fd, _ in state.readers} | {state.stdin_fd} - {None}:
        assert fd is not None
        os.set_inheritable(fd, False)  # inherited through the execve; not by new children
    loop = asyncio.get_running_loop()
    process = LocalProcess(
        state.process_id,
        pid=state.pid,
        tty=state.tty,
        readers=dict(state.readers),
        stdin_fd=state.stdin_fd,
        loop=loop,
        log=_restore_log(host, state.log),
    )
    process.argv = state.argv
    process.program = state.program
    process.started_at = time.monotonic() - state.age_s
    process.started_wall = state.started_wall
    process.sandbox_type = state.sandbox_type
    process._has_stdin = state.has_stdin
    process._takes_input = state.takes_input
    process._stdin_broken = state.stdin_broken
    process._close_when_flushed = state.close_when_flushed
    process._write_ids = OrderedDict.fromkeys(state.write_ids)
    process._terminated = state.terminated
    process.terminated_while_running = state.terminated_while_running
    process._reaped = state.reaped
    process._exit_code = state.exit_code
    process.finish_recorded = state.log.closed
    process.detached = state.detached
    if state.placeholders or state.placeholder_files:
        plan = MountPlan(placeholders=state.placeholders, placeholder_files=state.placeholder_files)
        process.sandbox_plan = plan
        process.cleanup = plan.cleanup
    process.end_cause = state.end_cause
    process.server_peak_rss = state.server_peak_rss
    process.last_output_at = loop.time() - state.quiet_s
    process.tty_path = state.tty_path
    process.limits = state.limits
    if state.cgroup is not None:
        process.cgroup = host.cgroups.adopt(state.cgroup, state.limits)
        if state.detached:  # no table keeps it: it goes with the process
            process.release = functools.partial(release_cgroup, process)
    if state.log.closed:
        process._done.set_result(None)
    if not state.reaped:
        host.reaper.watch(state.pid, process.on_exit_status, process.on_usage)
        process.arm_timeouts(state.timeout_left_s, state.idle_timeout_s, state.kill_grace_s)
        if state.kill_after_s is not None:
            process.kill_later(state.kill_after_s)
    process.stdin_budget = host.memory.stdin
    if state.stdin_buffer:
        process._stdin_buffer += state.stdin_buffer
        if host.memory.stdin.try_reserve(len(state.stdin_buffer)):  # accepted already: kept
            process._stdin_held = len(state.stdin_buffer)
        process._flush_stdin()
    host.directory.adopt(process, state.handle, state.principal)
    return process


def restore_host(host: Host, handoff: HostHandoff) -> dict[str, LocalProcess]:
    """Rebuild the processes in `host` (call before the loop runs anything else: a child's
    exit status must not be collected by anyone but its watcher). Returns them by handle."""
    return {state.handle: _restore_process(host, state) for state in handoff.processes}


def restore_table(
    table: LocalExecBackend, state: TableState, processes: dict[str, LocalProcess]
) -> None:
    """Give `table` its links again (a link to a process that did not make it is dropped)."""
    table.adopt_links(
        [
            (link.process_id, processes[link.handle], link.owned, link.attached)
            for link in state.links
            if link.handle in processes
        ]
    )
