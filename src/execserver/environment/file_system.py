"""The filesystem capability: what every environment offers for files, and its values.

Paths are absolute native paths of the environment's host (`str`, `bytes` or `os.PathLike`);
they are normalised lexically (`a/../b` is `b`) exactly as the wire's file URIs are. Failures
raise `RpcError`s with the executor's code and wording: `NotFound` (-32004, also a
`FileNotFoundError`) for missing paths, `InvalidRequest` (-32600) for permission denials and
sandbox refusals, `InternalError` (-32603) for the rest.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal, Protocol, Self

from execserver.errors import InvalidRequest
from execserver.protocol.file_system import (
    DirectoryEntry,
    FileAttributes,
    FileMetadata,
    FsWalkResponse,
    WalkOptions,
)
from execserver.protocol.pathuri import PathUri
from execserver.protocol.sandbox import SandboxContext

PathArg = str | bytes | os.PathLike[str] | os.PathLike[bytes] | PathUri
OpenModeName = Literal["read", "replace"]

# What `walk()` uses when no options are given: the largest limits executors accept (§7.7).
DEFAULT_WALK_OPTIONS = WalkOptions(
    max_depth=64, max_directories=10_000, max_entries=50_000, follow_directory_symlinks=False
)


MAX_BLOCK_BYTES = 1024 * 1024
"""The most one `read_block`/`write_block` moves (the executors' limit)."""


def check_block_length(length: int, op: Literal["read", "write"]) -> None:
    """The executors' block-size rule, with their wording."""
    if not 1 <= length <= MAX_BLOCK_BYTES:
        raise InvalidRequest(f"file {op} block length must be between 1 and {MAX_BLOCK_BYTES}")


MAX_FILE_OFFSET = 2**63 - 1


def check_write_range(offset: int, length: int) -> None:
    """A block write must end within the signed 64-bit file offset range."""
    if offset + length > MAX_FILE_OFFSET:
        raise InvalidRequest("file write range exceeds the signed 64-bit file offset limit")


def path_uri(path: PathArg) -> PathUri:
    """The wire URI of an absolute native path. Raises `ValueError` for a relative path."""
    if isinstance(path, PathUri):
        return path
    return PathUri.from_native(os.fsencode(path))


class MissingWatch(Protocol):
    """A one-shot watch (`watch_missing()`): tells once that the watched paths changed."""

    async def wait(self) -> bool:
        """Return True once a missing path (or an ancestor on its way) appeared or the present
        path changed or went away; False if the watch ended first (closed, replaced by a newer
        watch of the same connection, or the connection was lost).

        Cancellation: safe; the watch stays armed.
        """
        ...

    async def aclose(self) -> None:
        """Stop watching (idempotent); a pending `wait()` returns False.

        Cancellation: the watch is released anyway.
        """
        ...


class FileHandle(Protocol):
    """An open file (`open()`), read or written in blocks at explicit offsets."""

    async def read_block(self, offset: int, length: int) -> tuple[bytes, bool]:
        """Up to `length` bytes at `offset`, and whether the end of the file was reached.

        Cancellation: safe; nothing is consumed (reads are positional).
        """
        ...

    async def write_block(self, offset: int, data: bytes) -> None:
        """Write `data` at `offset` (handles opened with mode `replace`)."""
        ...

    async def aclose(self) -> None:
        """Release the handle (idempotent). Cancellation: the handle is released anyway."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc_info: object) -> None: ...


class FileSystem(Protocol):
    """File operations on the environment's host, optionally confined by a sandbox intent."""

    async def read_file(
        self, path: PathArg, *, follow_symlinks: bool = True, sandbox: SandboxContext | None = None
    ) -> bytes:
        """The whole file. Cancellation: safe."""
        ...

    async def write_file(
        self,
        path: PathArg,
        data: bytes,
        *,
        follow_symlinks: bool = True,
        sandbox: SandboxContext | None = None,
    ) -> None:
        """Create or replace the file with `data`.

        Cancellation: the file holds either the old or the new content.
        """
        ...

    async def create_directory(
        self,
        path: PathArg,
        *,
        recursive: bool = True,
        follow_symlinks: bool = True,
        sandbox: SandboxContext | None = None,
    ) -> None: ...

    async def get_metadata(
        self, path: PathArg, *, follow_symlinks: bool = True, sandbox: SandboxContext | None = None
    ) -> FileMetadata: ...

    def get_metadata_nowait(
        self, path: PathArg, *, follow_symlinks: bool = True
    ) -> FileMetadata | None:
        """`get_metadata` without a sandbox, answered at once if this environment can (one
        `stat` on this host); None where it would have to wait (a remote environment)."""
        ...

    async def get_attributes(
        self, path: PathArg, *, sandbox: SandboxContext | None = None
    ) -> FileAttributes:
        """Permission bits and times (symlinks followed). Raises `Unsupported` where the
        executor has no `fs/getAttributes` (an execserver extension)."""
        ...

    async def set_attributes(
        self,
        path: PathArg,
        *,
        mode: int | None = None,
        accessed_at_ns: int | None = None,
        modified_at_ns: int | None = None,
        sandbox: SandboxContext | None = None,
    ) -> None:
        """Change the permission bits and/or times given (symlinks followed). Raises
        `Unsupported` where the executor has no `fs/setAttributes` (an execserver extension)."""
        ...

    async def canonicalize(self, path: PathArg, *, sandbox: SandboxContext | None = None) -> str:
        """The absolute path with every symlink resolved."""
        ...

    async def read_directory(
        self, path: PathArg, *, sandbox: SandboxContext | None = None
    ) -> list[DirectoryEntry]:
        """The directory's entries (those whose metadata cannot be read are left out)."""
        ...

    async def walk(
        self,
        path: PathArg,
        options: WalkOptions = DEFAULT_WALK_OPTIONS,
        *,
        sandbox: SandboxContext | None = None,
    ) -> FsWalkResponse:
        """Every file and directory below `path`, within the limits of `options`."""
        ...

    async def remove(
        self,
        path: PathArg,
        *,
        recursive: bool = True,
        force: bool = True,
        follow_symlinks: bool = True,
        sandbox: SandboxContext | None = None,
    ) -> None: ...

    async def copy(
        self,
        source: PathArg,
        destination: PathArg,
        *,
        recursive: bool = False,
        sandbox: SandboxContext | None = None,
    ) -> None:
        """Copy a file, or a directory tree with `recursive=True` (symlinks stay symlinks)."""
        ...

    async def open(
        self, path: PathArg, mode: OpenModeName = "read", *, sandbox: SandboxContext | None = None
    ) -> FileHandle:
        """Open for block reads, or (`replace`) create/truncate for block writes.

        The handle belongs to the current connection of a remote environment: after a
        reconnect its operations fail with `NotFound`.
        """
        ...

    async def watch_missing(
        self, missing: Sequence[PathArg], present: PathArg | None = None
    ) -> MissingWatch | None:
        """Watch for any of `missing` to appear (or `present` to change or go away).

        None when there is nothing to watch: `missing` is empty, one of them exists already
        (by `lstat`), its nearest existing ancestor is not a directory, `present` is missing or
        a symlink, or a path is not a path of this host. A remote environment keeps one watch
        per connection: a new watch ends the previous one (its `wait()` returns False).
        """
        ...
