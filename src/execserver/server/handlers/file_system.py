"""`fs/*`: params -> local filesystem operations -> response. No error handling here.

Operations that can take long (whole-file reads and writes, listings, removals, copies, walks)
run on the server's blocking-I/O threads; the rest answer inline. Either way, requests of one
connection take effect in arrival order (see rpc/server.py).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import TypeVar

from execserver.errors import InvalidRequest
from execserver.local import file_system as fs
from execserver.local import walk as fs_walk
from execserver.local.file_handles import FileHandleTable
from execserver.protocol import b64
from execserver.protocol.file_system import (
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


def require_unrestricted(sandbox: SandboxContext | None) -> None:
    """Fail closed: a restricted filesystem policy is refused until sandbox enforcement exists;
    anything else (no sandbox, disabled, external, unrestricted) runs directly."""
    if sandbox is not None and sandbox.restricts_filesystem():
        raise InvalidRequest("filesystem sandbox cannot be enforced on this executor")


def native(path: PathUri, sandbox: SandboxContext | None) -> bytes:
    native_path = path.native_path()
    require_unrestricted(sandbox)
    return native_path


class FileSystemHandler:
    def __init__(self, handles: FileHandleTable, executor: Executor) -> None:
        self._handles = handles
        self._executor = executor

    def _blocking(
        self, function: Callable[..., T], /, *args: object, **kwargs: object
    ) -> Awaitable[T]:
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._executor, functools.partial(function, *args, **kwargs))

    async def read_file(self, params: FsReadFileParams) -> FsReadFileResponse:
        path = native(params.path, params.sandbox)
        follow = params.follow_symlinks is not False
        data = await self._blocking(fs.read_file, path, follow_symlinks=follow)
        return FsReadFileResponse(data_base64=data)

    async def write_file(self, params: FsWriteFileParams) -> FsEmptyResponse:
        path = native(params.path, params.sandbox)
        try:
            data = b64.decode(params.data_base64)
        except b64.Base64Error as exc:
            raise InvalidRequest(f"fs/writeFile requires valid base64 dataBase64: {exc}") from None
        follow = params.follow_symlinks is not False
        await self._blocking(fs.write_file, path, data, follow_symlinks=follow)
        return FsEmptyResponse()

    def create_directory(self, params: FsCreateDirectoryParams) -> FsEmptyResponse:
        path = native(params.path, params.sandbox)
        fs.create_directory(
            path,
            recursive=params.recursive is not False,
            follow_symlinks=params.follow_symlinks is not False,
        )
        return FsEmptyResponse()

    def get_metadata(self, params: FsGetMetadataParams) -> FileMetadata:
        path = native(params.path, params.sandbox)
        return fs.get_metadata(path, follow_symlinks=params.follow_symlinks is not False)

    def canonicalize(self, params: FsCanonicalizeParams) -> FsCanonicalizeResponse:
        path = native(params.path, params.sandbox)
        return FsCanonicalizeResponse(path=PathUri.from_native(fs.canonicalize(path)))

    async def read_directory(self, params: FsReadDirectoryParams) -> FsReadDirectoryResponse:
        path = native(params.path, params.sandbox)
        return FsReadDirectoryResponse(entries=await self._blocking(fs.read_directory, path))

    async def walk(self, params: FsWalkParams) -> FsWalkResponse:
        require_unrestricted(params.sandbox)
        return await self._blocking(fs_walk.walk, params.path, params.options)

    async def remove(self, params: FsRemoveParams) -> FsEmptyResponse:
        path = native(params.path, params.sandbox)
        await self._blocking(
            fs.remove,
            path,
            recursive=params.recursive is not False,
            force=params.force is not False,
            follow_symlinks=params.follow_symlinks is not False,
        )
        return FsEmptyResponse()

    async def copy(self, params: FsCopyParams) -> FsEmptyResponse:
        source = params.source_path.native_path()
        destination = native(params.destination_path, params.sandbox)
        await self._blocking(fs.copy, source, destination, recursive=params.recursive)
        return FsEmptyResponse()

    def open(self, params: FsOpenParams) -> FsOpenResponse:
        self._handles.check_new(params.handle_id)
        path = native(params.path, params.sandbox)
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
