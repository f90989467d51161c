"""Wire structs of the process extensions: resize, and processes that outlive their sessions
(list, attach, detach, kill by handle). Pure data.

None of these exist in the reference (it answers `-32601`); docs/protocol.md lists them.
"""

from __future__ import annotations

from typing import Literal

from execserver.protocol.base import U16, U64, WireStruct, check_u64
from execserver.protocol.process import SandboxType

ProcessState = Literal["running", "exited", "closed"]


class ProcessResizeParams(WireStruct):
    rust_name = "ResizeParams"
    rust_len = 3

    process_id: str
    rows: U16
    cols: U16


class EmptyResponse(WireStruct):
    """`{}`: the answer of `process/resize` and `process/detach`."""


class ProcessInfo(WireStruct):
    """One entry of `process/list`: a process of the caller's principal."""

    handle: str
    argv: list[str]
    state: ProcessState
    exit_code: int | None
    started_at_ms: int
    """Unix time of the start, in milliseconds."""
    output_bytes: int
    """Bytes of output the process has produced so far (retained or not)."""
    tty: bool
    detached: bool
    """Started with `detach` (or detached later): it outlives the session that started it."""
    attachers: int
    """Sessions following it through `process/attach`."""
    pid: int


class ProcessListResponse(WireStruct):
    processes: list[ProcessInfo]


class ProcessAttachParams(WireStruct):
    rust_name = "AttachParams"
    rust_len = 3

    handle: str
    process_id: str | None = None
    """The id this session uses for it (default: the handle)."""
    tail_bytes: U64 | None = None
    """Replay only (at least) the last N bytes of output; `replayAfterSeq` says from where."""

    def __post_init__(self) -> None:
        check_u64(self.tail_bytes)


class ProcessAttachResponse(WireStruct):
    process_id: str
    handle: str
    tty: bool
    sandbox_type: SandboxType
    next_seq: int
    """The seq the next event will take (what `process/read` reports now)."""
    replay_after_seq: int
    """Read with this `afterSeq` to replay: 0 (everything kept), or where the tail begins."""
    skip_bytes: int
    """With `tailBytes`: bytes at the start of the replay beyond the N asked for."""


class ProcessDetachParams(WireStruct):
    rust_name = "DetachParams"
    rust_len = 1

    process_id: str


class ProcessKillParams(WireStruct):
    rust_name = "KillParams"
    rust_len = 1

    handle: str
