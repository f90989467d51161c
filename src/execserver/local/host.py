"""`Host`: this machine's capabilities, built once, for the server and `local_environment()`.

It owns what every session shares: the child reaper, the blocking-I/O threads (shared fairly,
`blocking.py`), per-process cgroups, the server-wide output and memory budgets, the output
journals (with a state directory), the directory of processes by handle, the filesystem (with
its sandbox helper), executor discovery and the HTTP client, plus the environment description.
`process_table()` makes one session's table. `aclose()` releases everything after the tables
are closed (and kills the detached processes left).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from execserver.local import tree
from execserver.local.blocking import FS_WAIT_TIMEOUT_S, BlockingPool
from execserver.local.cgroup import ProcessCgroups
from execserver.local.crash_guard import CrashGuard
from execserver.local.directory import (
    DETACHED_RETENTION_S,
    MAX_ATTACHERS,
    MAX_DETACHED_PER_PRINCIPAL,
    ProcessDirectory,
)
from execserver.local.discovery import LocalExecutorDiscovery
from execserver.local.endings import DEFAULT_KILL_GRACE_S
from execserver.local.file_system import LocalFileSystem
from execserver.local.http_client import LocalHttpClient
from execserver.local.info import environment_info
from execserver.local.journal import JOURNAL_BUDGET_BYTES, JOURNAL_MAX_BYTES, JournalStore
from execserver.local.memory import MemoryBudget
from execserver.local.network.options import ExecutorNetworkOptions
from execserver.local.output_log import MAX_RETAINED_OUTPUT_BYTES, RetainedOutputBudget
from execserver.local.process import (
    CLOSED_PROCESS_RETENTION_S,
    MAX_PROCESSES_PER_SESSION,
    LocalExecBackend,
)
from execserver.local.reaper import ChildReaper, ExitScope
from execserver.local.sandbox.fs_runner import SandboxedFileSystem
from execserver.observability.telemetry import Telemetry
from execserver.protocol.session import EnvironmentInfo, ProcessEndingsInfo


@dataclass(frozen=True, slots=True)
class HostConfig:
    """Tunables of this host's capabilities."""

    closed_process_retention_s: float = CLOSED_PROCESS_RETENTION_S
    """How long a finished process stays readable (and its id taken)."""
    max_processes_per_session: int = MAX_PROCESSES_PER_SESSION
    max_retained_output: int = MAX_RETAINED_OUTPUT_BYTES
    """Output retained by all processes together; past it the oldest chunks anywhere go."""
    process_cgroups: bool = False
    """Start each process in its own cgroup where the host allows it (kills then reach daemons
    and double-forked orphans; limits can be enforced)."""
    subreaper: bool = False
    """Become the child subreaper and reap orphaned descendants, and start the crash watchdog
    (only for a dedicated process)."""
    kill_grace_s: float = DEFAULT_KILL_GRACE_S
    """After a timeout's SIGTERM, how long a process tree has before SIGKILL."""
    blocking_threads: int = 8
    """Threads for blocking filesystem work (whole-file reads and writes, walks, copies)."""
    max_memory: int | None = None
    """The memory budget (`memory.py`); None: derived from the machine."""
    fs_wait_timeout_s: float = FS_WAIT_TIMEOUT_S
    """How long an fs operation waits for a FIFO, socket or device to become ready."""
    telemetry: Telemetry | None = None
    journal_dir: str | None = None
    """Where output journals go (None: output past the memory window is dropped)."""
    journal_dir_owned: bool = False
    """Remove `journal_dir` on `aclose()` (a directory made for this server)."""
    journal_max_bytes: int = JOURNAL_MAX_BYTES
    """Journal kept per process (head + tail, the middle dropped past it)."""
    journal_budget_bytes: int = JOURNAL_BUDGET_BYTES
    """Journal kept by all processes together (oldest segments dropped first past it)."""
    detached_retention_s: float = DETACHED_RETENTION_S
    max_detached_per_principal: int = MAX_DETACHED_PER_PRINCIPAL
    max_attachers: int = MAX_ATTACHERS
    network: ExecutorNetworkOptions = field(default_factory=ExecutorNetworkOptions)
    """Executor-wide managed-network settings (serve's flags)."""
    exit_scope: ExitScope = contextlib.nullcontext
    """What wraps each reaped child's exit callback (`ChildReaper`)."""


class Host:
    """See the module docstring. Create inside the running event loop."""

    def __init__(self, config: HostConfig | None = None) -> None:
        self.config = config = config or HostConfig()
        self.reaper = ChildReaper(asyncio.get_running_loop(), config.exit_scope)
        if config.subreaper:
            self.reaper.become_subreaper()
        self.cgroups = (
            ProcessCgroups.create(dedicated=config.subreaper)
            if config.process_cgroups
            else ProcessCgroups.disabled()
        )
        # With cgroups the watchdog sweeps them; without, it follows our children (tree mode).
        self.crash_guard = CrashGuard(self.reaper, self.cgroups.bases) if config.subreaper else None
        self.output_budget = RetainedOutputBudget(config.max_retained_output)
        self.journals = (
            JournalStore(
                config.journal_dir,
                max_bytes_per_process=config.journal_max_bytes,
                budget_bytes=config.journal_budget_bytes,
                owned=config.journal_dir_owned,
            )
            if config.journal_dir is not None
            else None
        )
        self.directory = ProcessDirectory(
            detached_retention_s=config.detached_retention_s,
            max_detached_per_principal=config.max_detached_per_principal,
            max_attachers=config.max_attachers,
        )
        self.memory = MemoryBudget.of(config.max_memory)
        self._blocking = ThreadPoolExecutor(
            max_workers=config.blocking_threads, thread_name_prefix="execserver-io"
        )
        self.blocking = BlockingPool(
            self._blocking, config.blocking_threads, wait_timeout_s=config.fs_wait_timeout_s
        )
        sandboxed = SandboxedFileSystem(self.reaper, self._blocking, self._spawn_aside)
        self.fs = LocalFileSystem(self.blocking, sandboxed, self.memory.file_reads)
        self.discovery = LocalExecutorDiscovery(self.blocking, sandboxed)
        self.http = LocalHttpClient(body_budget=self.memory.http_bodies)
        self.info: EnvironmentInfo = environment_info()
        self.process_endings = ProcessEndingsInfo(
            termination=True,
            timeouts=True,
            wait=True,
            waiting_for_input=True,
            whole_tree_kill="cgroup" if self.cgroups.enabled else "processTree",
            cgroup=self.cgroups.kind,
            limits=sorted(self.cgroups.enforceable),
        )
        """What the `processEndings` extension offers here (told to clients that ask)."""

    def process_table(self, session_id: str = "", principal: str = "") -> LocalExecBackend:
        """A new, empty process table (one session's, of `principal`)."""
        table = LocalExecBackend(
            self.reaper,
            closed_retention_s=self.config.closed_process_retention_s,
            cgroups=self.cgroups,
            max_processes=self.config.max_processes_per_session,
            output_budget=self.output_budget,
            stdin_budget=self.memory.stdin,
            telemetry=self.config.telemetry,
            kill_grace_s=self.config.kill_grace_s,
            network=self.config.network,
            directory=self.directory,
            journals=self.journals,
            principal=principal,
        )
        table.session_id = session_id
        return table

    def _spawn_aside(self, spawn: Callable[[], int]) -> int:
        """A helper's spawn, outside any process's cgroup (whichever `cgroups` is current)."""
        return self.cgroups.aside(spawn)

    async def aclose(self) -> None:
        """Release everything (close the process tables first).

        Cancellation: the threads and the reaper are released anyway.
        """
        try:
            await self.directory.aclose()
            if self.journals is not None:
                self.journals.close()
            self.cgroups.close()
            if self.crash_guard is not None:
                self.crash_guard.close()
            if self.config.subreaper:
                # Orphans we adopted that no cgroup or tree walk attributed to a process.
                tree.kill_descendants(os.getpid())
            await self.http.aclose()
        finally:
            self.reaper.close()
            self._blocking.shutdown(wait=False, cancel_futures=True)
