"""`LocalFileSystem`: the filesystem capability on this host, with sandbox intent enforced.

Operations run on blocking-I/O threads shared fairly between clients (`blocking.py`: waits on
FIFOs, sockets and devices happen on the event loop, with a deadline), metadata of unsandboxed
requests inline, or in a one-shot helper under bubblewrap when the request's sandbox restricts
them (`sandbox/fs_runner.py`). The primitives live in `fs_ops.py`; this class chooses where
they run and maps failures to the executor's errors. Whole-file reads hold their bytes in the
server's memory budget (`memory.py`) until the response is sent. The server's `fs/*` handlers
(one view per connection, `for_client`) and the local environment both use it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from execserver.environment.file_system import (
    DEFAULT_WALK_OPTIONS,
    OpenModeName,
    PathArg,
    path_uri,
)
from execserver.errors import FileReadTooLarge, InvalidRequest, os_errors
from execserver.local import fs_ops
from execserver.local import walk as fs_walk
from execserver.local.blocking import LOCAL, BlockingPool, Client
from execserver.local.file_handles import LocalFileHandle, open_handle_fd
from execserver.local.memory import ByteBudget, Reservation
from execserver.local.missing_watch import LocalMissingWatch
from execserver.local.missing_watch import watch_missing as _watch_missing
from execserver.local.sandbox.fs_runner import SandboxedFileSystem, fs_policy, needs_helper
from execserver.local.sandbox.policy import (
    Mechanism,
    ResolvedPolicy,
    SandboxError,
    SandboxPathError,
)
from execserver.protocol.file_system import (
    DirectoryEntry,
    FileAttributes,
    FileMetadata,
    FsWalkResponse,
    WalkOptions,
)
from execserver.protocol.pathuri import PathUri
from execserver.protocol.sandbox import SandboxContext

T = TypeVar("T")

_MXC_UNAVAILABLE = (
    "failed to prepare fs sandbox: failed to prepare MXC sandbox: native MXC is unavailable on "
    "this executor"
)


def sandbox_policy(sandbox: SandboxContext | None) -> ResolvedPolicy | None:
    """The resolved policy of a restricting sandbox, or None when the request runs directly."""
    if sandbox is None:
        return None
    try:
        policy = fs_policy(sandbox)
    except SandboxPathError as exc:
        raise InvalidRequest(f"invalid sandbox {exc.what} URI: {exc.detail}") from None
    except SandboxError as exc:
        raise InvalidRequest(f"failed to prepare fs sandbox: {exc}") from None
    if policy.mechanism is not Mechanism.FILESYSTEM:
        return None
    return policy


def native(path: PathArg | PathUri) -> bytes:
    """A native byte path, normalised exactly as a file URI of it would be."""
    uri = path if isinstance(path, PathUri) else path_uri(path)
    return uri.native_path()


AfterSend = Callable[[Callable[[], None]], None]
"""Runs a release once the response of the current request is sent (see `for_client`)."""


def _now(release: Callable[[], None]) -> None:
    release()


class LocalFileSystem:
    """Filesystem operations on this host. Paths may be native paths or `PathUri`s."""

    def __init__(
        self,
        pool: BlockingPool,
        sandboxed: SandboxedFileSystem,
        file_reads: ByteBudget | None = None,
        *,
        client: Client = LOCAL,
        after_send: AfterSend = _now,
    ) -> None:
        self._pool = pool
        self._sandboxed = sandboxed
        self._file_reads = file_reads
        self._client = client
        self._after_send = after_send

    def for_client(self, client: Client, after_send: AfterSend = _now) -> LocalFileSystem:
        """The same filesystem for one client: its blocking work takes the client's turns, and
        what a whole-file read holds is released by `after_send` (once the response is out)."""
        return LocalFileSystem(
            self._pool, self._sandboxed, self._file_reads, client=client, after_send=after_send
        )

    async def _blocking(self, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        return await self._pool.run(self._client, functools.partial(function, *args, **kwargs))

    async def _run(
        self,
        sandbox: SandboxContext | None,
        op: str,
        *args: Any,
        writes: bool,
        result_type: Any = None,
        local_only: dict[str, Any] | None = None,
        helper_only: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run `op` directly, or inside the sandbox when the policy restricts it."""
        policy = sandbox_policy(sandbox)
        with os_errors():
            if policy is not None and needs_helper(policy, writes=writes):
                if sandbox is not None and sandbox.windows_sandbox_level == "mxc":
                    raise InvalidRequest(_MXC_UNAVAILABLE)
                return await self._sandboxed.call(
                    policy,
                    op,
                    {"positional": list(args), "keywords": kwargs | (helper_only or {})},
                    result_type,
                    drive=functools.partial(self._pool.drive, self._client),
                    wait_timeout_s=self._pool.wait_timeout_s,
                )
            function = getattr(fs_ops, op)
            kwargs |= local_only or {}
            if op in fs_ops.WAITING_OPS:
                return await self._pool.drive(self._client, function(*args, **kwargs))
            return await self._blocking(function, *args, **kwargs)

    async def read_file(
        self,
        path: PathArg | PathUri,
        *,
        follow_symlinks: bool = True,
        sandbox: SandboxContext | None = None,
    ) -> bytes:
        target = native(path)
        if self._file_reads is None:
            unbounded: bytes = await self._run(
                sandbox, "read_file", target, writes=False, follow_symlinks=follow_symlinks
            )
            return unbounded
        reservation = Reservation(self._file_reads)

        def grow(total: int) -> None:
            if not reservation.grow_to(total):
                raise FileReadTooLarge(target, reservation.left())

        try:
            data: bytes = await self._run(
                sandbox,
                "read_file",
                target,
                writes=False,
                follow_symlinks=follow_symlinks,
                local_only={"grow": grow},
                helper_only={"max_bytes": reservation.left()},
            )
            grow(len(data))  # the helper's answer is held here too
        except BaseException:
            reservation.release()
            raise
        self._after_send(reservation.release)
        return data

    async def write_file(
        self,
        path: PathArg | PathUri,
        data: bytes,
        *,
        follow_symlinks: bool = True,
        sandbox: SandboxContext | None = None,
    ) -> None:
        await self._run(
            sandbox, "write_file", native(path), data, writes=True, follow_symlinks=follow_symlinks
        )

    async def create_directory(
        self,
        path: PathArg | PathUri,
        *,
        recursive: bool = True,
        follow_symlinks: bool = True,
        sandbox: SandboxContext | None = None,
    ) -> None:
        await self._run(
            sandbox,
            "create_directory",
            native(path),
            writes=True,
            recursive=recursive,
            follow_symlinks=follow_symlinks,
        )

    async def get_metadata(
        self,
        path: PathArg | PathUri,
        *,
        follow_symlinks: bool = True,
        sandbox: SandboxContext | None = None,
    ) -> FileMetadata:
        if sandbox is None:  # the common case answers inline, without a thread hop
            return self.get_metadata_nowait(path, follow_symlinks=follow_symlinks)
        metadata: FileMetadata = await self._run(
            sandbox,
            "get_metadata",
            native(path),
            writes=False,
            result_type=FileMetadata,
            follow_symlinks=follow_symlinks,
        )
        return metadata

    def get_metadata_nowait(
        self, path: PathArg | PathUri, *, follow_symlinks: bool = True
    ) -> FileMetadata:
        """Answered on the calling thread (one stat)."""
        with os_errors():
            return fs_ops.get_metadata(native(path), follow_symlinks=follow_symlinks)

    async def get_attributes(
        self, path: PathArg | PathUri, *, sandbox: SandboxContext | None = None
    ) -> FileAttributes:
        attributes: FileAttributes = await self._run(
            sandbox, "get_attributes", native(path), writes=False, result_type=FileAttributes
        )
        return attributes

    async def set_attributes(
        self,
        path: PathArg | PathUri,
        *,
        mode: int | None = None,
        accessed_at_ns: int | None = None,
        modified_at_ns: int | None = None,
        sandbox: SandboxContext | None = None,
    ) -> None:
        await self._run(
            sandbox,
            "set_attributes",
            native(path),
            writes=True,
            mode=mode,
            accessed_at_ns=accessed_at_ns,
            modified_at_ns=modified_at_ns,
        )

    async def canonicalize(
        self, path: PathArg | PathUri, *, sandbox: SandboxContext | None = None
    ) -> str:
        real: bytes = await self._run(sandbox, "canonicalize", native(path), writes=False)
        return os.fsdecode(real)

    async def read_directory(
        self, path: PathArg | PathUri, *, sandbox: SandboxContext | None = None
    ) -> list[DirectoryEntry]:
        entries: list[DirectoryEntry] = await self._run(
            sandbox,
            "read_directory",
            native(path),
            writes=False,
            result_type=list[DirectoryEntry],
        )
        return entries

    async def walk(
        self,
        path: PathArg | PathUri,
        options: WalkOptions = DEFAULT_WALK_OPTIONS,
        *,
        sandbox: SandboxContext | None = None,
    ) -> FsWalkResponse:
        fs_walk.validate(options)
        root = path if isinstance(path, PathUri) else path_uri(path)
        root.native_path()
        policy = sandbox_policy(sandbox)
        if policy is not None and needs_helper(policy, writes=False):
            response: FsWalkResponse = await self._sandboxed.call(
                policy, "walk", {"root": root, "options": options}, FsWalkResponse
            )
            return response
        return await self._blocking(fs_walk.walk, root, options)

    async def remove(
        self,
        path: PathArg | PathUri,
        *,
        recursive: bool = True,
        force: bool = True,
        follow_symlinks: bool = True,
        sandbox: SandboxContext | None = None,
    ) -> None:
        await self._run(
            sandbox,
            "remove",
            native(path),
            writes=True,
            recursive=recursive,
            force=force,
            follow_symlinks=follow_symlinks,
        )

    async def copy(
        self,
        source: PathArg | PathUri,
        destination: PathArg | PathUri,
        *,
        recursive: bool = False,
        sandbox: SandboxContext | None = None,
    ) -> None:
        src, dst = native(source), native(destination)
        await self._run(sandbox, "copy", src, dst, writes=True, recursive=recursive)

    async def open(
        self,
        path: PathArg | PathUri,
        mode: OpenModeName = "read",
        *,
        sandbox: SandboxContext | None = None,
    ) -> LocalFileHandle:
        target = native(path)
        policy = sandbox_policy(sandbox)
        with os_errors():
            if policy is not None and needs_helper(policy, writes=mode == "replace"):
                fd = await self._sandboxed.open(
                    policy, target, mode, drive=functools.partial(self._pool.drive, self._client)
                )
            else:
                fd = open_handle_fd(target, mode)
        return LocalFileHandle(fd, mode)

    async def watch_missing(
        self, missing: Sequence[PathArg | PathUri], present: PathArg | PathUri | None = None
    ) -> LocalMissingWatch | None:
        """Cancellation: safe (a watch armed before the cancellation is released)."""
        uris = [path_uri(path) for path in missing]
        present_uri = None if present is None else path_uri(present)
        with os_errors():
            return _watch_missing(uris, present_uri)
