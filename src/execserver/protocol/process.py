"""Wire structs of the `process/*` methods and notifications. Pure data."""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec

from execserver.compat.serde import variants
from execserver.protocol.base import U64, USIZE, Base64Bytes, UuidText, WireStruct, check_u64
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


class ProcessStartResponse(WireStruct):
    process_id: str
    sandbox_type: SandboxType


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


class ProcessReadResponse(WireStruct):
    chunks: list[ProcessOutputChunk]
    next_seq: int
    exited: bool
    exit_code: int | None
    closed: bool
    failure: str | None
    sandbox_denied: bool


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
