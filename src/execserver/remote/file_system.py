"""The filesystem capability of a remote executor: one `fs/*` call per operation."""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
from collections.abc import Sequence
from typing import Any, Self, TypeVar

import msgspec

from execserver.client.client import ExecServerClient
from execserver.environment.file_system import (
    DEFAULT_WALK_OPTIONS,
    OpenModeName,
    PathArg,
    path_uri,
)
from execserver.environment.process import Unsupported
from execserver.errors import ExecServerError, MethodNotFound
from execserver.protocol import b64, methods
from execserver.protocol.base import Base64Bytes, WideU64, WireStruct
from execserver.protocol.file_system import (
    DirectoryEntry,
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
    FsMissingChangedNotification,
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
    OpenMode,
    WalkOptions,
)
from execserver.protocol.sandbox import SandboxContext

R = TypeVar("R", bound=WireStruct)


def _follow(follow_symlinks: bool) -> bool | None:
    return None if follow_symlinks else False


class RemoteFileSystem:
    def __init__(self, client: ExecServerClient) -> None:
        self._client = client
        self._watches: _WatchListener | None = None
        self._watch_ids = itertools.count(1)

    async def _call(self, method: str, params: Any, result: type[R]) -> R:
        return await self._client.call(method, params, result)

    async def read_file(
        self, path: PathArg, *, follow_symlinks: bool = True, sandbox: SandboxContext | None = None
    ) -> bytes:
        params = FsReadFileParams(
            path=path_uri(path), sandbox=sandbox, follow_symlinks=_follow(follow_symlinks)
        )
        return (await self._call(methods.FS_READ_FILE, params, FsReadFileResponse)).data_base64

    async def write_file(
        self,
        path: PathArg,
        data: bytes,
        *,
        follow_symlinks: bool = True,
        sandbox: SandboxContext | None = None,
    ) -> None:
        params = FsWriteFileParams(
            path=path_uri(path),
            data_base64=b64.encode(data),
            sandbox=sandbox,
            follow_symlinks=_follow(follow_symlinks),
        )
        await self._call(methods.FS_WRITE_FILE, params, FsEmptyResponse)

    async def create_directory(
        self,
        path: PathArg,
        *,
        recursive: bool = True,
        follow_symlinks: bool = True,
        sandbox: SandboxContext | None = None,
    ) -> None:
        params = FsCreateDirectoryParams(
            path=path_uri(path),
            recursive=recursive,
            sandbox=sandbox,
            follow_symlinks=_follow(follow_symlinks),
        )
        await self._call(methods.FS_CREATE_DIRECTORY, params, FsEmptyResponse)

    async def get_metadata(
        self, path: PathArg, *, follow_symlinks: bool = True, sandbox: SandboxContext | None = None
    ) -> FileMetadata:
        params = FsGetMetadataParams(
            path=path_uri(path), sandbox=sandbox, follow_symlinks=_follow(follow_symlinks)
        )
        return await self._call(methods.FS_GET_METADATA, params, FileMetadata)

    def get_metadata_nowait(
        self, path: PathArg, *, follow_symlinks: bool = True
    ) -> FileMetadata | None:
        return None  # every answer is a round trip

    async def _extension(self, method: str, params: Any, result: type[R]) -> R:
        try:
            return await self._call(method, params, result)
        except MethodNotFound:
            raise Unsupported(f"this executor has no {method} (an execserver extension)") from None

    async def get_attributes(
        self, path: PathArg, *, sandbox: SandboxContext | None = None
    ) -> FileAttributes:
        params = FsGetAttributesParams(path=path_uri(path), sandbox=sandbox)
        return await self._extension(methods.FS_GET_ATTRIBUTES, params, FileAttributes)

    async def set_attributes(
        self,
        path: PathArg,
        *,
        mode: int | None = None,
        accessed_at_ns: int | None = None,
        modified_at_ns: int | None = None,
        sandbox: SandboxContext | None = None,
    ) -> None:
        params = FsSetAttributesParams(
            path=path_uri(path),
            mode=mode,
            accessed_at_ns=accessed_at_ns,
            modified_at_ns=modified_at_ns,
            sandbox=sandbox,
        )
        await self._extension(methods.FS_SET_ATTRIBUTES, params, FsEmptyResponse)

    async def canonicalize(self, path: PathArg, *, sandbox: SandboxContext | None = None) -> str:
        params = FsCanonicalizeParams(path=path_uri(path), sandbox=sandbox)
        response = await self._call(methods.FS_CANONICALIZE, params, FsCanonicalizeResponse)
        return os.fsdecode(response.path.native_path())

    async def read_directory(
        self, path: PathArg, *, sandbox: SandboxContext | None = None
    ) -> list[DirectoryEntry]:
        params = FsReadDirectoryParams(path=path_uri(path), sandbox=sandbox)
        return (
            await self._call(methods.FS_READ_DIRECTORY, params, FsReadDirectoryResponse)
        ).entries

    async def walk(
        self,
        path: PathArg,
        options: WalkOptions = DEFAULT_WALK_OPTIONS,
        *,
        sandbox: SandboxContext | None = None,
    ) -> FsWalkResponse:
        params = FsWalkParams(path=path_uri(path), options=options, sandbox=sandbox)
        return await self._call(methods.FS_WALK, params, FsWalkResponse)

    async def remove(
        self,
        path: PathArg,
        *,
        recursive: bool = True,
        force: bool = True,
        follow_symlinks: bool = True,
        sandbox: SandboxContext | None = None,
    ) -> None:
        params = FsRemoveParams(
            path=path_uri(path),
            recursive=recursive,
            force=force,
            sandbox=sandbox,
            follow_symlinks=_follow(follow_symlinks),
        )
        await self._call(methods.FS_REMOVE, params, FsEmptyResponse)

    async def copy(
        self,
        source: PathArg,
        destination: PathArg,
        *,
        recursive: bool = False,
        sandbox: SandboxContext | None = None,
    ) -> None:
        params = FsCopyParams(
            source_path=path_uri(source),
            destination_path=path_uri(destination),
            recursive=recursive,
            sandbox=sandbox,
        )
        await self._call(methods.FS_COPY, params, FsEmptyResponse)

    async def watch_missing(
        self, missing: Sequence[PathArg], present: PathArg | None = None
    ) -> RemoteMissingWatch | None:
        if self._watches is None:
            self._watches = _WatchListener()
            self._client.add_listener(self._watches)
        watch = RemoteMissingWatch(next(self._watch_ids))
        self._watches.replace(watch)  # armed first: the notification may beat the answer
        params = FsWatchMissingParams(
            watch_id=watch.watch_id,
            missing=[path_uri(path) for path in missing],
            present=None if present is None else path_uri(present),
        )
        try:
            response = await self._call(methods.FS_WATCH_MISSING, params, FsWatchMissingResponse)
        except BaseException:
            watch.finish(False)
            raise
        if not response.watching:
            watch.finish(False)
            return None
        return watch

    async def open(
        self, path: PathArg, mode: OpenModeName = "read", *, sandbox: SandboxContext | None = None
    ) -> RemoteFileHandle:
        handle_id = f"py-{secrets.token_hex(8)}"
        params = FsOpenParams(
            handle_id=handle_id, path=path_uri(path), sandbox=sandbox, mode=OpenMode(mode)
        )
        await self._call(methods.FS_OPEN, params, FsOpenResponse)
        return RemoteFileHandle(self, handle_id)


class RemoteMissingWatch:
    """A watch of the executor's connection (`fs/watchMissing`); ends with a newer one."""

    def __init__(self, watch_id: int) -> None:
        self.watch_id = watch_id
        self._done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def finish(self, changed: bool) -> None:
        if not self._done.done():
            self._done.set_result(changed)

    async def wait(self) -> bool:
        """Cancellation: safe."""
        return await asyncio.shield(self._done)

    async def aclose(self) -> None:
        """The executor's watch stays armed until replaced; its notification is ignored."""
        self.finish(False)


class _WatchListener:
    """Routes `fs/missingChanged` to the current watch; a lost connection ends it."""

    def __init__(self) -> None:
        self.current: RemoteMissingWatch | None = None

    def replace(self, watch: RemoteMissingWatch | None) -> None:
        if self.current is not None:
            self.current.finish(False)
        self.current = watch

    def on_notification(self, method: str, params: msgspec.Raw) -> None:
        if method != methods.FS_MISSING_CHANGED or self.current is None:
            return
        try:
            notification = msgspec.json.decode(params, type=FsMissingChangedNotification)
        except msgspec.DecodeError:
            return
        if notification.watch_id == self.current.watch_id:
            self.current.finish(True)
            self.current = None

    def on_disconnected(self) -> None:
        self.replace(None)  # the executor forgets watches with their connection

    def on_resumed(self) -> None:
        pass

    def on_failed(self, error: ExecServerError) -> None:
        self.replace(None)


class RemoteFileHandle:
    def __init__(self, fs: RemoteFileSystem, handle_id: str) -> None:
        self._fs = fs
        self.handle_id = handle_id
        self._closed = False

    async def read_block(self, offset: int, length: int) -> tuple[bytes, bool]:
        params = FsReadBlockParams(handle_id=self.handle_id, offset=WideU64(offset), len=length)
        response = await self._fs._call(methods.FS_READ_BLOCK, params, FsReadBlockResponse)
        return response.chunk, response.eof

    async def write_block(self, offset: int, data: bytes) -> None:
        params = FsWriteBlockParams(
            handle_id=self.handle_id, offset=WideU64(offset), chunk=Base64Bytes(data)
        )
        await self._fs._call(methods.FS_WRITE_BLOCK, params, FsEmptyResponse)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        params = FsCloseParams(handle_id=self.handle_id)
        await self._fs._call(methods.FS_CLOSE, params, FsEmptyResponse)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
