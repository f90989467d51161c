"""The server-wide directory of processes by handle: list, attach, kill, and detached processes.

Every process a table starts is registered here under a short random handle with the principal
of its session. A process started with `detach` (or detached later) belongs to the directory
rather than to its session: it outlives the session, and once it has closed it stays listable
and attachable for the detached retention, then leaves the server. Every session table that
shows the process (the one that started it, and any that attached it) holds a *link*; when the
process leaves the server, every link goes. Limits: detached processes per principal, attachers
per process. Only a process's principal can find it; to others a handle does not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from execserver.environment.process import WaitingListener
from execserver.errors import InvalidRequest
from execserver.protocol.process_handles import ProcessInfo, ProcessState

if TYPE_CHECKING:
    from execserver.local.process import LocalProcess

DETACHED_RETENTION_S = 3600.0
"""How long a detached process stays listable and attachable after it closed."""
MAX_DETACHED_PER_PRINCIPAL = 64
"""Detached processes of one principal, running or retained."""
MAX_ATTACHERS = 16
"""Sessions attached to one process at once (the one that started it not counted)."""
KILL_WAIT_S = 2.0


class Linker(Protocol):
    """A table holding links to processes (local/process.py `LocalExecBackend`)."""

    @property
    def waiting_listener(self) -> WaitingListener | None:
        """Hears that a linked PTY process waits for input (None: nobody asks)."""
        ...

    def unlink(self, process_id: str) -> None: ...


def unknown_handle(handle: str) -> InvalidRequest:
    return InvalidRequest(f"unknown process handle {handle}")


class ProcessDirectory:
    """See the module docstring."""

    def __init__(
        self,
        *,
        detached_retention_s: float = DETACHED_RETENTION_S,
        max_detached_per_principal: int = MAX_DETACHED_PER_PRINCIPAL,
        max_attachers: int = MAX_ATTACHERS,
    ) -> None:
        self.detached_retention_s = detached_retention_s
        self.max_detached_per_principal = max_detached_per_principal
        self.max_attachers = max_attachers
        self._processes: dict[str, LocalProcess] = {}
        self._expiry: dict[str, asyncio.TimerHandle] = {}

    def __len__(self) -> int:
        return len(self._processes)

    def processes(self) -> list[LocalProcess]:
        return list(self._processes.values())

    def register(self, process: LocalProcess, principal: str, *, detached: bool = False) -> str:
        """Give `process` a handle (`check_detach()` first for a detached one)."""
        handle = secrets.token_hex(4)
        while handle in self._processes:
            handle = secrets.token_hex(4)
        self.adopt(process, handle, principal)
        process.detached = detached
        return handle

    def adopt(self, process: LocalProcess, handle: str, principal: str) -> None:
        """Register `process` under a known handle (an upgrade in place carries them over)."""
        process.handle = handle
        process.principal = principal
        self._processes[handle] = process
        process.log.close_listeners.append(self._watcher(process))
        if process.detached and process.closed:
            self._schedule_discard(process)

    def _watcher(self, process: LocalProcess) -> Callable[[], None]:
        def closed() -> None:
            if process.detached:
                self._schedule_discard(process)

        return closed

    def check_detach(self, principal: str) -> None:
        """Raise the limit's error if `principal` may not detach one more process."""
        count = sum(1 for p in self._processes.values() if p.detached and p.principal == principal)
        if count >= self.max_detached_per_principal:
            raise InvalidRequest(
                f"too many detached processes (limit {self.max_detached_per_principal} per "
                "principal, finished ones included until their retention ends); kill some with "
                "process/kill or wait"
            )

    def detach(self, process: LocalProcess) -> None:
        """Let `process` outlive the session that started it."""
        if process.detached:
            return
        self.check_detach(process.principal)
        process.detached = True
        if process.closed:
            self._schedule_discard(process)

    def find(self, handle: str, principal: str) -> LocalProcess:
        """The process with `handle`, if `principal` started it; else `unknown process handle`
        (also for someone else's: they learn nothing about it)."""
        process = self._processes.get(handle)
        if process is None or process.principal != principal:
            raise unknown_handle(handle)
        return process

    def check_attach(self, process: LocalProcess) -> None:
        if process.attachers >= self.max_attachers:
            raise InvalidRequest(
                f"too many attachers on process handle {process.handle} (limit "
                f"{self.max_attachers}); detach one first"
            )

    def list(self, principal: str) -> list[ProcessInfo]:
        """The principal's processes, oldest first."""
        return [
            _info(process) for process in self._processes.values() if process.principal == principal
        ]

    def _schedule_discard(self, process: LocalProcess) -> None:
        if process.handle in self._expiry:
            return
        loop = asyncio.get_running_loop()
        self._expiry[process.handle] = loop.call_later(
            self.detached_retention_s, self.discard, process
        )

    def discard(self, process: LocalProcess) -> None:
        """`process` leaves the server: every link goes, its output (and journal) with it."""
        handle = process.handle
        if self._processes.get(handle) is not process:
            return
        del self._processes[handle]
        timer = self._expiry.pop(handle, None)
        if timer is not None:
            timer.cancel()
        for linker, process_id in list(process.links):
            linker.unlink(process_id)
        process.log.discard()
        if process.release is not None:
            release, process.release = process.release, None
            release()

    async def aclose(self) -> None:
        """Kill every process still here (detached ones: nothing else will) and wait (bounded)
        for them to close; then forget them all.

        Cancellation: the kills are sent before the first await.
        """
        pending = []
        for process in self._processes.values():
            if not process.closed:
                process.terminate("shutdown")
                pending.append(process.wait_closed())
        if pending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(KILL_WAIT_S):
                    await asyncio.gather(*pending)
        for process in list(self._processes.values()):
            self.discard(process)


def _state(process: LocalProcess) -> ProcessState:
    if process.closed:
        return "closed"
    return "exited" if process.exited else "running"


def _info(process: LocalProcess) -> ProcessInfo:
    return ProcessInfo(
        handle=process.handle,
        argv=process.argv,
        state=_state(process),
        exit_code=process.log.exit_code,
        started_at_ms=int(process.started_wall * 1000),
        output_bytes=process.log.total_bytes,
        tty=process.tty,
        detached=process.detached,
        attachers=process.attachers,
        pid=process.pid,
    )
