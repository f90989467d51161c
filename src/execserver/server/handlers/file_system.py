"""`fs/*`: params -> local filesystem operations -> response. No error handling here.

Operations run on the server's blocking-I/O threads (metadata of unsandboxed requests answers
inline), or inside a sandboxed helper when the request's sandbox restricts them. Either way,
requests of one connection take effect in arrival order (see rpc/server.py).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from execserver.errors import InvalidRequest
from execserver.local import file_system as fs
from execserver.local import walk as fs_walk
from execserver.local.file_handles import FileHandleTable
from execserver.local.sandbox.fs_runner import SandboxedFileSystem, fs_policy, needs_helper
from execserver.local.sandbox.policy import (
    Mechanism,
    ResolvedPolicy,
    SandboxError,
    SandboxPathError,
)
from execserver.protocol import b64
from execserver.protocol.file_system import (
    DirectoryEntry,
    FileMetadata,
    FsCanonicalizeParams,
    FsCanonicalizeResponse,
    FsCloseParams,
    FsCopyParams,
    FsCreateDirectoryParams,
    FsEmptyResponse,
    FsGetMetadataParams,
    FsOpenParams,
    FsOpenResponse,
    FsReadBlockParams,
    FsReadBlockResponse,
    FsReadDirectoryParams,
    FsReadDirectoryResponse,
    FsReadFileParams,
    FsReadFileResponse,
    FsRemoveParams,
    FsWalkParams,
    FsWalkResponse,
    FsWriteBlockParams,
    FsWriteFileParams,
)
from execserver.protocol.pathuri import PathUri
from execserver.protocol.sandbox import SandboxContext

T = TypeVar("T")


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


class FileSystemHandler:
    def __init__(
        self, handles: FileHandleTable, executor: Executor, sandboxed: SandboxedFileSystem
    ) -> None:
        self._handles = handles
        self._executor = executor
        self._sandboxed = sandboxed

    def _blocking(
        self, function: Callable[..., T], /, *args: object, **kwargs: object
    ) -> Awaitable[T]:
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._executor, functools.partial(function, *args, **kwargs))

    async def _run(
        self,
        sandbox: SandboxContext | None,
        op: str,
        *args: Any,
        writes: bool,
        result_type: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Run `op` directly, or inside the sandbox when the policy restricts it."""
        policy = sandbox_policy(sandbox)
        if policy is not None and needs_helper(policy, writes=writes):
            if sandbox is not None and sandbox.windows_sandbox_level == "mxc":
                raise InvalidRequest(
                    "failed to prepare fs sandbox: failed to prepare MXC sandbox: native MXC is "
                    "unavailable on this executor"
                )
            return await self._sandboxed.call(
                policy, op, {"positional": list(args), "keywords": kwargs}, result_type
            )
        return await self._blocking(getattr(fs, op), *args, **kwargs)

    async def read_file(self, params: FsReadFileParams) -> FsReadFileResponse:
        data = await self._run(
            params.sandbox,
            "read_file",
            params.path.native_path(),
            writes=False,
            follow_symlinks=params.follow_symlinks is not False,
        )
        return FsReadFileResponse(data_base64=data)

    async def write_file(self, params: FsWriteFileParams) -> FsEmptyResponse:
        path = params.path.native_path()
        try:
            data = b64.decode(params.data_base64)
        except b64.Base64Error as exc:
            raise InvalidRequest(f"fs/writeFile requires valid base64 dataBase64: {exc}") from None
        await self._run(
            params.sandbox,
            "write_file",
            path,
            data,
            writes=True,
            follow_symlinks=params.follow_symlinks is not False,
        )
        return FsEmptyResponse()

    async def create_directory(self, params: FsCreateDirectoryParams) -> FsEmptyResponse:
        await self._run(
            params.sandbox,
            "create_directory",
            params.path.native_path(),
            writes=True,
            recursive=params.recursive is not False,
            follow_symlinks=params.follow_symlinks is not False,
        )
        return FsEmptyResponse()

    async def get_metadata(self, params: FsGetMetadataParams) -> FileMetadata:
        path = params.path.native_path()
        follow = params.follow_symlinks is not False
        if params.sandbox is None:  # the common case answers inline, without a thread hop
            return fs.get_metadata(path, follow_symlinks=follow)
        metadata: FileMetadata = await self._run(
            params.sandbox,
            "get_metadata",
            path,
            writes=False,
            result_type=FileMetadata,
            follow_symlinks=follow,
        )
        return metadata

    async def canonicalize(self, params: FsCanonicalizeParams) -> FsCanonicalizeResponse:
        real = await self._run(
            params.sandbox, "canonicalize", params.path.native_path(), writes=False
        )
        return FsCanonicalizeResponse(path=PathUri.from_native(real))

    async def read_directory(self, params: FsReadDirectoryParams) -> FsReadDirectoryResponse:
        entries = await self._run(
            params.sandbox,
            "read_directory",
            params.path.native_path(),
            writes=False,
            result_type=list[DirectoryEntry],
        )
        return FsReadDirectoryResponse(entries=entries)

    async def walk(self, params: FsWalkParams) -> FsWalkResponse:
        fs_walk.validate(params.options)
        params.path.native_path()
        policy = sandbox_policy(params.sandbox)
        if policy is not None and needs_helper(policy, writes=False):
            response: FsWalkResponse = await self._sandboxed.call(
                policy, "walk", {"root": params.path, "options": params.options}, FsWalkResponse
            )
            return response
        return await self._blocking(fs_walk.walk, params.path, params.options)

    async def remove(self, params: FsRemoveParams) -> FsEmptyResponse:
        await self._run(
            params.sandbox,
            "remove",
            params.path.native_path(),
            writes=True,
            recursive=params.recursive is not False,
            force=params.force is not False,
            follow_symlinks=params.follow_symlinks is not False,
        )
        return FsEmptyResponse()

    async def copy(self, params: FsCopyParams) -> FsEmptyResponse:
        source = params.source_path.native_path()
        destination = params.destination_path.native_path()
        await self._run(
            params.sandbox, "copy", source, destination, writes=True, recursive=params.recursive
        )
        return FsEmptyResponse()

    async def open(self, params: FsOpenParams) -> FsOpenResponse:
        self._handles.check_new(params.handle_id)
        path = params.path.native_path()
        mode = str(params.mode)
        policy = sandbox_policy(params.sandbox)
        if policy is not None and needs_helper(policy, writes=mode == "replace"):
            fd = await self._sandboxed.open(policy, path, mode)
            self._handles.adopt(params.handle_id, fd, params.mode)
        else:
            self._handles.open(params.handle_id, path, params.mode)
        return FsOpenResponse(handle_id=params.handle_id)

    def read_block(self, params: FsReadBlockParams) -> FsReadBlockResponse:
        chunk, eof = self._handles.read_block(params.handle_id, params.offset, params.len)
        return FsReadBlockResponse(chunk=chunk, eof=eof)

    def write_block(self, params: FsWriteBlockParams) -> FsEmptyResponse:
        self._handles.write_block(params.handle_id, params.offset, bytes(params.chunk))
        return FsEmptyResponse()

    def close(self, params: FsCloseParams) -> FsEmptyResponse:
        self._handles.close(params.handle_id)
        return FsEmptyResponse()
