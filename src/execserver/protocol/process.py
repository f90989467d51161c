"""Wire structs of the `process/*` methods and notifications. Pure data."""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec

from execserver.compat.serde import variants
from execserver.protocol.base import U16, U64, USIZE, Base64Bytes, UuidText, WireStruct, check_u64
from execserver.protocol.network import ManagedNetworkSandboxContext, RemoteNetworkProxyLaunchConfig
from execserver.protocol.pathuri import PathUri
from execserver.protocol.sandbox import SandboxContext
from execserver.protocol.session import ShellInfo

ProcessStream = Literal["stdout", "stderr", "pty"]
SandboxType = Literal["none", "linuxSeccomp", "macosSeatbelt", "windowsRestrictedToken"]
WriteStatus = Literal["accepted", "unknownProcess", "stdinClosed", "starting"]
Inherit = Literal["core", "all", "none"]
variants(Inherit)


class ExecEnvPolicy(WireStruct):
    """How the child environment is built from the server's own (PROTOCOL.md §10)."""

    rust_name = "ExecEnvPolicy"
    rust_len = 5

    inherit: Inherit
    ignore_default_excludes: bool
    exclude: list[str]
    set: dict[str, str] = msgspec.field(name="set")
    include_only: list[str]


class ExecMetadata(WireStruct):
    """Who asked for a process (`threadId` must be a UUID); carried, not used here."""

    rust_name = "ExecMetadata"
    rust_len = 2
    rust_defaults: ClassVar[frozenset[str]] = frozenset({"threadId", "toolCallId"})

    thread_id: UuidText | None = None
    tool_call_id: str | None = None


class ShellSnapshotRequest(WireStruct):
    """Run a login-shell command from a captured snapshot of the login environment."""

    rust_name = "ShellSnapshotRequest"
    rust_len = 2

    scope_id: str
    shell: ShellInfo


class ProcessLimits(WireStruct):
    """Extension: resource limits of the whole process tree (enforced with cgroups)."""

    memory_bytes: U64 | None = None
    pids: U64 | None = None
    cpus: float | None = None
    """CPU time per wall-clock time: 0.5 is half a core."""

    def __post_init__(self) -> None:
        check_u64(self.memory_bytes, self.pids)


class TerminalSize(WireStruct):
    """Extension: a terminal's size in character cells (`process/start`'s `size`)."""

    rows: U16
    cols: U16


class ProcessStartParams(WireStruct, kw_only=True):
    """Members in the reference's order (which its positional, array form follows)."""

    rust_name = "WireExecParams"
    rust_len = 14
    rust_defaults: ClassVar[frozenset[str]] = frozenset({"pipeStdin", "enforceManagedNetwork"})

    process_id: str
    metadata: ExecMetadata | None = None
    argv: list[str]
    cwd: PathUri
    env_policy: ExecEnvPolicy | None = None
    shell_snapshot: ShellSnapshotRequest | None = None
    env: dict[str, str]
    tty: bool
    pipe_stdin: bool = False
    arg0: str | None = None
    sandbox: SandboxContext | None = None
    enforce_managed_network: bool = False
    managed_network: ManagedNetworkSandboxContext | None = None
    network_proxy: RemoteNetworkProxyLaunchConfig | None = None
    # Extensions (docs/protocol.md "Extensions"), after the reference's 14 members so its
    # positional form is unchanged; the reference ignores them.
    timeout_ms: U64 | None = None
    idle_timeout_ms: U64 | None = None
    limits: ProcessLimits | None = None
    size: TerminalSize | None = None
    """The initial terminal size of a `tty` process (default 24x80)."""
    detach: bool = False
    """Keep the process past its session (until it exits, plus the detached retention); the
    answer then carries its `handle` (see docs/protocol.md, Processes that outlive sessions)."""

    def __post_init__(self) -> None:
        check_u64(self.timeout_ms, self.idle_timeout_ms)


class ProcessStartResponse(WireStruct, omit_defaults=True):
    process_id: str
    sandbox_type: SandboxType
    handle: str | None = None
    """Extension: the server-wide handle of a process started with `detach`."""


class ProcessReadParams(WireStruct):
    rust_name = "ReadParams"
    rust_len = 4

    process_id: str
    after_seq: U64 | None = None
    max_bytes: USIZE | None = None
    wait_ms: U64 | None = None

    def __post_init__(self) -> None:
        check_u64(self.after_seq, self.max_bytes, self.wait_ms)


class ProcessOutputChunk(WireStruct):
    """One chunk of output: a `process/read` entry, and the output event of the Python API."""

    seq: int
    stream: ProcessStream
    chunk: bytes

    @property
    def data(self) -> bytes:
        """The output bytes (`chunk`)."""
        return self.chunk


class OutputGap(WireStruct):
    """Extension: output the executor produced but no longer keeps (the middle of a journal
    over its cap): chunk seqs `fromSeq` to `toSeq` (inclusive), `bytes` of output."""

    from_seq: int
    to_seq: int
    bytes: int


class ProcessReadResponse(WireStruct, omit_defaults=True):
    chunks: list[ProcessOutputChunk]
    next_seq: int
    exited: bool
    exit_code: int | None
    closed: bool
    failure: str | None
    sandbox_denied: bool
    gaps: list[OutputGap] = msgspec.field(default_factory=list)
    """Extension: dropped output within this read's range (only when some was dropped)."""


class ProcessWriteParams(WireStruct):
    rust_name = "WriteParams"
    rust_len = 3

    process_id: str
    chunk: Base64Bytes
    write_id: str


class ProcessWriteResponse(WireStruct):
    status: WriteStatus


class ProcessCloseStdinParams(WireStruct):
    """Extension: `process/closeStdin` (EOF on a pipe, the EOF character on a terminal)."""

    rust_name = "CloseStdinParams"
    rust_len = 1

    process_id: str


class ProcessSignalParams(WireStruct):
    rust_name = "SignalParams"
    rust_len = 2

    process_id: str
    signal: Literal["interrupt"]


class ProcessSignalResponse(WireStruct):
    pass


class ProcessTerminateParams(WireStruct):
    rust_name = "TerminateParams"
    rust_len = 1

    process_id: str


class ProcessTerminateResponse(WireStruct):
    running: bool


class ProcessOutputNotification(WireStruct):
    process_id: str
    seq: int
    stream: ProcessStream
    chunk: bytes


class ProcessExitedNotification(WireStruct):
    process_id: str
    seq: int
    exit_code: int
    sandbox_denied: bool = False


class ProcessClosedNotification(WireStruct):
    process_id: str
    seq: int


# -- extensions (issue 20): termination records, waiting on output ---------------------------------

PROCESS_ENDINGS = "processEndings"
"""The `initialize` extension name that turns on termination records and input notifications."""

TerminationReason = Literal[
    "exited", "signaled", "timeout", "idleTimeout", "oom", "terminated", "sandboxDenied", "shutdown"
]


class Termination(WireStruct):
    """Why a process ended, and what it used (its own and its waited-for descendants' usage)."""

    reason: TerminationReason
    signal: str | None
    """The signal that ended the process (`SIGKILL`), if one did."""
    user_ms: int
    sys_ms: int
    max_rss_bytes: int | None
    """Peak memory, where it can be measured (docs/protocol.md says when), else null."""


class ProcessExitedWithTermination(ProcessExitedNotification, kw_only=True):
    """`process/exited` for a session that asked for `processEndings`."""

    termination: Termination


class ProcessReadWithTermination(ProcessReadResponse, kw_only=True):
    """`process/read` for a session that asked for `processEndings` (`termination` once exited;
    None from servers without the extension)."""

    termination: Termination | None = None


WaitReason = Literal["match", "idle", "exited", "timeout"]


class ProcessWaitParams(WireStruct):
    """Extension `process/wait`: until new output matches `pattern`, output is idle for
    `idleMs`, the process exits, or `timeoutMs` passes, whichever comes first."""

    rust_name = "WaitParams"
    rust_len = 5

    process_id: str
    timeout_ms: U64
    pattern: str | None = None
    idle_ms: U64 | None = None
    after_seq: U64 | None = None
    """Match output after this seq (default: output from now on)."""

    def __post_init__(self) -> None:
        check_u64(self.timeout_ms, self.idle_ms, self.after_seq)


class ProcessWaitResponse(WireStruct):
    reason: WaitReason
    seq: int | None
    """The output chunk where the match ended (`match`)."""
    match: str | None
    next_seq: int
    exited: bool
    exit_code: int | None


class ProcessWaitingForInputNotification(WireStruct):
    """Extension: the foreground process of a PTY blocks reading the terminal (a heuristic)."""

    process_id: str
    seq: int
    """The last seq of the process's output before it started waiting."""
    pid: int
    command: str
