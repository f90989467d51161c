"""Wire structs of the `fs/*` methods. Pure data."""

from __future__ import annotations

from typing import Literal

from execserver.protocol.base import (
    I64,
    U32,
    U64,
    USIZE,
    Base64Bytes,
    UnitEnum,
    WideU64,
    WireStruct,
    check_u64,
)
from execserver.protocol.pathuri import PathUri
from execserver.protocol.sandbox import SandboxContext


class OpenMode(UnitEnum):
    variants = ("read", "replace")


WalkEntryKind = Literal["file", "directory"]


class FsReadFileParams(WireStruct):
    rust_name = "WireFsReadFileParams"
    rust_len = 3

    path: PathUri
    sandbox: SandboxContext | None = None
    follow_symlinks: bool | None = None


class FsReadFileResponse(WireStruct):
    data_base64: bytes


class FsWriteFileParams(WireStruct):
    rust_name = "WireFsWriteFileParams"
    rust_len = 4

    path: PathUri
    data_base64: str
    sandbox: SandboxContext | None = None
    follow_symlinks: bool | None = None


class FsCreateDirectoryParams(WireStruct):
    rust_name = "WireFsCreateDirectoryParams"
    rust_len = 4

    path: PathUri
    recursive: bool | None = None
    sandbox: SandboxContext | None = None
    follow_symlinks: bool | None = None


class FsGetMetadataParams(WireStruct):
    rust_name = "WireFsGetMetadataParams"
    rust_len = 3

    path: PathUri
    sandbox: SandboxContext | None = None
    follow_symlinks: bool | None = None


class FileMetadata(WireStruct):
    is_directory: bool
    is_file: bool
    is_symlink: bool
    size: int
    created_at_ms: int
    modified_at_ms: int


class FsCanonicalizeParams(WireStruct):
    rust_name = "WireFsCanonicalizeParams"
    rust_len = 2

    path: PathUri
    sandbox: SandboxContext | None = None


class FsCanonicalizeResponse(WireStruct):
    path: PathUri


class FsReadDirectoryParams(WireStruct):
    rust_name = "WireFsReadDirectoryParams"
    rust_len = 2

    path: PathUri
    sandbox: SandboxContext | None = None


class DirectoryEntry(WireStruct):
    file_name: str
    is_directory: bool
    is_file: bool


class FsReadDirectoryResponse(WireStruct):
    entries: list[DirectoryEntry]


class WalkOptions(WireStruct):
    rust_name = "WalkOptions"
    rust_len = 5

    max_depth: USIZE
    max_directories: USIZE
    max_entries: USIZE
    follow_directory_symlinks: bool
    prune_hidden_directories: bool = False

    def __post_init__(self) -> None:
        check_u64(self.max_depth, self.max_directories, self.max_entries)


class FsWalkParams(WireStruct):
    rust_name = "WireFsWalkParams"
    rust_len = 3

    path: PathUri
    options: WalkOptions
    sandbox: SandboxContext | None = None


class WalkEntry(WireStruct):
    path: PathUri
    kind: WalkEntryKind


class WalkError(WireStruct):
    path: PathUri
    message: str


class FsWalkResponse(WireStruct):
    entries: list[WalkEntry]
    errors: list[WalkError]
    truncated: bool


class FsRemoveParams(WireStruct):
    rust_name = "WireFsRemoveParams"
    rust_len = 5

    path: PathUri
    recursive: bool | None = None
    force: bool | None = None
    sandbox: SandboxContext | None = None
    follow_symlinks: bool | None = None


class FsCopyParams(WireStruct):
    rust_name = "WireFsCopyParams"
    rust_len = 4

    source_path: PathUri
    destination_path: PathUri
    recursive: bool
    sandbox: SandboxContext | None = None


class FsOpenParams(WireStruct):
    rust_name = "WireFsOpenParams"
    rust_len = 4

    handle_id: str
    path: PathUri
    sandbox: SandboxContext | None = None
    mode: OpenMode = OpenMode("read")


class FsOpenResponse(WireStruct):
    handle_id: str


class FsReadBlockParams(WireStruct):
    rust_name = "FsReadBlockParams"
    rust_len = 3

    handle_id: str
    offset: WideU64
    len: USIZE

    def __post_init__(self) -> None:
        check_u64(self.len)


class FsReadBlockResponse(WireStruct):
    chunk: bytes
    eof: bool


class FsWriteBlockParams(WireStruct):
    rust_name = "FsWriteBlockParams"
    rust_len = 3

    handle_id: str
    offset: WideU64
    chunk: Base64Bytes


class FsCloseParams(WireStruct):
    rust_name = "FsCloseParams"
    rust_len = 1

    handle_id: str


class FsEmptyResponse(WireStruct):
    """`{}`: the result of writes, removals and closes."""


class FsWatchMissingParams(WireStruct):
    rust_name = "FsWatchMissingParams"
    rust_len = 3

    watch_id: U64
    missing: list[PathUri]
    present: PathUri | None = None

    def __post_init__(self) -> None:
        check_u64(self.watch_id)


class FsWatchMissingResponse(WireStruct):
    watching: bool


class FsMissingChangedNotification(WireStruct):
    watch_id: int


class FsGetAttributesParams(WireStruct):
    """Extension `fs/getAttributes`: the attributes `cp` keeps (symlinks followed)."""

    rust_name = "FsGetAttributesParams"
    rust_len = 2

    path: PathUri
    sandbox: SandboxContext | None = None


class FileAttributes(WireStruct):
    """`mode`: the permission bits (`st_mode & 0o7777`); times in nanoseconds since the epoch."""

    mode: U32
    accessed_at_ns: I64
    modified_at_ns: I64


class FsSetAttributesParams(WireStruct):
    """Extension `fs/setAttributes`: change what is given (symlinks followed); `{}`."""

    rust_name = "FsSetAttributesParams"
    rust_len = 5

    path: PathUri
    mode: U32 | None = None
    accessed_at_ns: I64 | None = None
    modified_at_ns: I64 | None = None
    sandbox: SandboxContext | None = None
