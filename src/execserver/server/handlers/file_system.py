"""`fs/*`: params -> the `FileSystem` capability -> response. No error handling here.

Requests of one connection take effect in arrival order (see rpc/server.py); file handles
belong to the connection's table.
"""

from __future__ import annotations

import os
from collections.abc import Coroutine

from execserver.environment.file_system import (
    FileSystem,
    OpenModeName,
    check_block_length,
    check_write_range,
)
from execserver.errors import InvalidRequest
from execserver.protocol import b64
from execserver.protocol.file_system import (
    FileAttributes,
    FileMetadata,
    FsCanonicalizeParams,
    FsCanonicalizeResponse,
    FsCloseParams,
    FsCopyParams,
    FsCreateDirectoryParams,
    FsEmptyResponse,
    FsGetAttributesParams,
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
    FsSetAttributesParams,
    FsWalkParams,
    FsWalkResponse,
    FsWatchMissingParams,
    FsWatchMissingResponse,
    FsWriteBlockParams,
    FsWriteFileParams,
)
from execserver.protocol.pathuri import PathUri
from execserver.server.file_handles import HandleTable
from execserver.server.missing_watches import MissingWatchSlot


class FileSystemHandler:
    def __init__(
        self, handles: HandleTable, fs: FileSystem, watches: MissingWatchSlot | None = None
    ) -> None:
        self._handles = handles
        self._fs = fs
        self._watches = watches

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
        if params.sandbox is None:  # answered inline where it can: no task, no loop turn
            metadata = self._fs.get_metadata_nowait(params.path, follow_symlinks=follow)
            if metadata is not None:
                return metadata
        return self._fs.get_metadata(params.path, follow_symlinks=follow, sandbox=params.sandbox)

    async def get_attributes(self, params: FsGetAttributesParams) -> FileAttributes:
        return await self._fs.get_attributes(params.path, sandbox=params.sandbox)

    async def set_attributes(self, params: FsSetAttributesParams) -> FsEmptyResponse:
        await self._fs.set_attributes(
            params.path,
            mode=params.mode,
            accessed_at_ns=params.accessed_at_ns,
            modified_at_ns=params.modified_at_ns,
            sandbox=params.sandbox,
        )
        return FsEmptyResponse()

    async def canonicalize(self, params: FsCanonicalizeParams) -> FsCanonicalizeResponse:
        real = await self._fs.canonicalize(params.path, sandbox=params.sandbox)
        return FsCanonicalizeResponse(path=PathUri.from_native(os.fsencode(real)))

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
        self._handles.check_new(params.handle_id)  # before the path, as the reference does
        mode: OpenModeName = "replace" if params.mode == "replace" else "read"
        handle = await self._fs.open(params.path, mode, sandbox=params.sandbox)
        self._handles.add(params.handle_id, handle)
        return FsOpenResponse(handle_id=params.handle_id)

    async def read_block(self, params: FsReadBlockParams) -> FsReadBlockResponse:
        check_block_length(params.len, "read")
        handle = self._handles.get(params.handle_id)
        try:
            chunk, eof = await handle.read_block(params.offset, params.len)
        except Exception:
            # Like the reference, a failed read ends the handle.
            self._handles.forget(params.handle_id)
            await handle.aclose()
            raise
        return FsReadBlockResponse(chunk=chunk, eof=eof)

    async def write_block(self, params: FsWriteBlockParams) -> FsEmptyResponse:
        check_block_length(len(params.chunk), "write")
        check_write_range(params.offset, len(params.chunk))
        handle = self._handles.get(params.handle_id)
        await handle.write_block(params.offset, bytes(params.chunk))
        return FsEmptyResponse()

    async def close(self, params: FsCloseParams) -> FsEmptyResponse:
        handle = self._handles.forget(params.handle_id)
        if handle is not None:
            await handle.aclose()
        return FsEmptyResponse()

    async def watch_missing(self, params: FsWatchMissingParams) -> FsWatchMissingResponse:
        """One watch per connection; ids must grow (server/missing_watches.py)."""
        slot = self._watches
        if slot is None or not slot.claim(params.watch_id):
            return FsWatchMissingResponse(watching=False)
        await slot.replace(params.watch_id, None)
        watch = await self._fs.watch_missing(params.missing, params.present)
        await slot.replace(params.watch_id, watch)
        return FsWatchMissingResponse(watching=watch is not None)
