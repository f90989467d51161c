"""Wire structs of the `process/*` methods and notifications. Pure data."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from execserver.compat.serde import variants
from execserver.protocol.base import U16, U64, USIZE, Base64Bytes, WireStruct, check_u64
from execserver.protocol.pathuri import PathUri
from execserver.protocol.sandbox import SandboxContext

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


class TerminalSize(WireStruct):
    """Extension: a terminal's size in character cells (`process/start`'s `size`)."""

    rows: U16
    cols: U16


class ProcessStartParams(WireStruct):
    rust_name = "WireExecParams"
    rust_len = 14

    process_id: str
    argv: list[str]
    cwd: PathUri
    env: dict[str, str]
    tty: bool
    pipe_stdin: bool = False
    arg0: str | None = None
    env_policy: ExecEnvPolicy | None = None
    sandbox: SandboxContext | None = None
    enforce_managed_network: bool = False
    managed_network: dict[str, Any] | None = None
    network_proxy: dict[str, Any] | None = None
    shell_snapshot: dict[str, Any] | None = None
    # Extensions (after the reference's 14 members, so its positional form is unchanged):
    size: TerminalSize | None = None
    """The initial terminal size of a `tty` process (default 24x80)."""
    detach: bool = False
    """Keep the process past its session (until it exits, plus the detached retention); the
    answer then carries its `handle` (see docs/protocol.md, Processes that outlive sessions)."""


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
