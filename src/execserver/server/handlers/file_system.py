"""`fs/*`: params -> `LocalFileSystem` -> response. No error handling here.

Requests of one connection take effect in arrival order (see rpc/server.py); file handles
belong to the connection's table.
"""

from __future__ import annotations

from collections.abc import Coroutine

from execserver.errors import InvalidRequest
from execserver.local.file_handles import FileHandleTable
from execserver.local.file_system import LocalFileSystem
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


class FileSystemHandler:
    def __init__(self, handles: FileHandleTable, fs: LocalFileSystem) -> None:
        self._handles = handles
        self._fs = fs

    async def read_file(self, params: FsReadFileParams) -> FsReadFileResponse:
        data = await self._fs.read_file(
            params.path,
            follow_symlinks=params.follow_symlinks is not False,
            sandbox=params.sandbox,
        )
        return FsReadFileResponse(data_base64=data)

    async def write_file(self, params: FsWriteFileParams) -> FsEmptyResponse:
        params.path.native_path()  # the path is checked before the data, as the reference does
        try:
            data = b64.decode(params.data_base64)
        except b64.Base64Error as exc:
            raise InvalidRequest(f"fs/writeFile requires valid base64 dataBase64: {exc}") from None
        await self._fs.write_file(
            params.path,
            data,
            follow_symlinks=params.follow_symlinks is not False,
            sandbox=params.sandbox,
        )
        return FsEmptyResponse()

    async def create_directory(self, params: FsCreateDirectoryParams) -> FsEmptyResponse:
        await self._fs.create_directory(
            params.path,
            recursive=params.recursive is not False,
            follow_symlinks=params.follow_symlinks is not False,
            sandbox=params.sandbox,
        )
        return FsEmptyResponse()

    def get_metadata(
        self, params: FsGetMetadataParams
    ) -> FileMetadata | Coroutine[None, None, FileMetadata]:
        follow = params.follow_symlinks is not False
        if params.sandbox is None:  # answered inline: no task, no wait for the next loop turn
            return self._fs.get_metadata_now(params.path, follow_symlinks=follow)
        return self._fs.get_metadata(params.path, follow_symlinks=follow, sandbox=params.sandbox)

    async def canonicalize(self, params: FsCanonicalizeParams) -> FsCanonicalizeResponse:
        real = await self._fs.canonicalize_native(params.path, sandbox=params.sandbox)
        return FsCanonicalizeResponse(path=PathUri.from_native(real))

    async def read_directory(self, params: FsReadDirectoryParams) -> FsReadDirectoryResponse:
        entries = await self._fs.read_directory(params.path, sandbox=params.sandbox)
        return FsReadDirectoryResponse(entries=entries)

    async def walk(self, params: FsWalkParams) -> FsWalkResponse:
        return await self._fs.walk(params.path, params.options, sandbox=params.sandbox)

    async def remove(self, params: FsRemoveParams) -> FsEmptyResponse:
        await self._fs.remove(
            params.path,
            recursive=params.recursive is not False,
            force=params.force is not False,
            follow_symlinks=params.follow_symlinks is not False,
            sandbox=params.sandbox,
        )
        return FsEmptyResponse()

    async def copy(self, params: FsCopyParams) -> FsEmptyResponse:
        await self._fs.copy(
            params.source_path,
            params.destination_path,
            recursive=params.recursive,
            sandbox=params.sandbox,
        )
        return FsEmptyResponse()

    async def open(self, params: FsOpenParams) -> FsOpenResponse:
        await self._fs.open_into(
            self._handles, params.handle_id, params.path, str(params.mode), sandbox=params.sandbox
        )
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
