"""`Host`: this machine's capabilities, built once, for the server and `local_environment()`.

It owns what every session shares: the child reaper, the blocking-I/O threads (shared fairly,
`blocking.py`), per-process cgroups, the server-wide output and memory budgets, the filesystem
(with its sandbox helper) and the HTTP client, plus the environment description.
`process_table()` makes one session's table. `aclose()` releases everything after the tables
are closed.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from execserver.local import tree
from execserver.local.blocking import FS_WAIT_TIMEOUT_S, BlockingPool
from execserver.local.cgroup import ProcessCgroups
from execserver.local.file_system import LocalFileSystem
from execserver.local.http_client import LocalHttpClient
from execserver.local.info import environment_info
from execserver.local.memory import MemoryBudget
from execserver.local.output_log import MAX_RETAINED_OUTPUT_BYTES, RetainedOutputBudget
from execserver.local.process import (
    CLOSED_PROCESS_RETENTION_S,
    MAX_PROCESSES_PER_SESSION,
    LocalExecBackend,
)
from execserver.local.reaper import ChildReaper
from execserver.local.sandbox.fs_runner import SandboxedFileSystem
from execserver.observability.telemetry import Telemetry
from execserver.protocol.session import EnvironmentInfo


@dataclass(frozen=True, slots=True)
class HostConfig:
    """Tunables of this host's capabilities."""

    closed_process_retention_s: float = CLOSED_PROCESS_RETENTION_S
    """How long a finished process stays readable (and its id taken)."""
    max_processes_per_session: int = MAX_PROCESSES_PER_SESSION
    max_retained_output: int = MAX_RETAINED_OUTPUT_BYTES
    """Output retained by all processes together; past it the oldest chunks anywhere go."""
    process_cgroups: bool = False
    """Start each process in its own cgroup where the host allows it (only for a dedicated
    process: kills then reach daemons and double-forked orphans)."""
    subreaper: bool = False
    """Become the child subreaper and reap orphaned descendants (only for a dedicated process)."""
    blocking_threads: int = 8
    """Threads for blocking filesystem work (whole-file reads and writes, walks, copies)."""
    max_memory: int | None = None
    """The memory budget (`memory.py`); None: derived from the machine."""
    fs_wait_timeout_s: float = FS_WAIT_TIMEOUT_S
    """How long an fs operation waits for a FIFO, socket or device to become ready."""
    telemetry: Telemetry | None = None


class Host:
    """See the module docstring. Create inside the running event loop."""

    def __init__(self, config: HostConfig | None = None) -> None:
        self.config = config = config or HostConfig()
        self.reaper = ChildReaper(asyncio.get_running_loop())
        if config.subreaper:
            self.reaper.become_subreaper()
        self.cgroups = (
            ProcessCgroups.create() if config.process_cgroups else ProcessCgroups.disabled()
        )
        self.output_budget = RetainedOutputBudget(config.max_retained_output)
        self.memory = MemoryBudget.of(config.max_memory)
        self._blocking = ThreadPoolExecutor(
            max_workers=config.blocking_threads, thread_name_prefix="execserver-io"
        )
        self.blocking = BlockingPool(
            self._blocking, config.blocking_threads, wait_timeout_s=config.fs_wait_timeout_s
        )
        self.fs = LocalFileSystem(
            self.blocking,
            SandboxedFileSystem(self.reaper, self._blocking),
            self.memory.file_reads,
        )
        self.http = LocalHttpClient(body_budget=self.memory.http_bodies)
        self.info: EnvironmentInfo = environment_info()

    def process_table(self, session_id: str = "") -> LocalExecBackend:
        """A new, empty process table (one session's)."""
        table = LocalExecBackend(
            self.reaper,
            closed_retention_s=self.config.closed_process_retention_s,
            cgroups=self.cgroups,
            max_processes=self.config.max_processes_per_session,
            output_budget=self.output_budget,
            stdin_budget=self.memory.stdin,
            telemetry=self.config.telemetry,
        )
        table.session_id = session_id
        return table

    async def aclose(self) -> None:
        """Release everything (close the process tables first).

        Cancellation: the threads and the reaper are released anyway.
        """
        try:
            self.cgroups.close()
            if self.config.subreaper:
                # Orphans we adopted that no cgroup or tree walk attributed to a process.
                tree.kill_descendants(os.getpid())
            await self.http.aclose()
        finally:
            self.reaper.close()
            self._blocking.shutdown(wait=False, cancel_futures=True)
