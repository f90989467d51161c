"""The method table of one connection: one line per method, with its gate family."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from execserver.environment.discovery import ExecutorDiscovery
from execserver.environment.file_system import FileSystem
from execserver.environment.http_client import HttpClient
from execserver.protocol import methods
from execserver.protocol.discovery import (
    CapabilitiesDiscoverV2Params,
    CapabilityRootsDiscoverParams,
    EnvironmentConfigReadParams,
)
from execserver.protocol.file_system import (
    FsCanonicalizeParams,
    FsCloseParams,
    FsCopyParams,
    FsCreateDirectoryParams,
    FsGetAttributesParams,
    FsGetMetadataParams,
    FsOpenParams,
    FsReadBlockParams,
    FsReadDirectoryParams,
    FsReadFileParams,
    FsRemoveParams,
    FsSetAttributesParams,
    FsWalkParams,
    FsWatchMissingParams,
    FsWriteBlockParams,
    FsWriteFileParams,
)
from execserver.protocol.http import HttpRequestParams
from execserver.protocol.process import (
    ProcessCloseStdinParams,
    ProcessReadParams,
    ProcessSignalParams,
    ProcessStartParams,
    ProcessTerminateParams,
    ProcessWaitParams,
    ProcessWriteParams,
)
from execserver.protocol.process_handles import (
    ProcessAttachParams,
    ProcessDetachParams,
    ProcessKillParams,
    ProcessResizeParams,
)
from execserver.protocol.session import EnvironmentInfo, InitializeParams, ProcessEndingsInfo
from execserver.rpc.router import Router
from execserver.server.connection import Connection
from execserver.server.handlers.discovery import DiscoveryHandler
from execserver.server.handlers.file_system import FileSystemHandler
from execserver.server.handlers.http import MAX_HTTP_STREAMS, HttpHandler
from execserver.server.handlers.process import ProcessHandler
from execserver.server.handlers.session import SessionHandler
from execserver.server.session import SessionRegistry

EXEC = "exec"
FILESYSTEM = "filesystem"
HTTP = "http"
ENVIRONMENT_INFO = "environment info"
ENVIRONMENT_STATUS = "environment status"
ENVIRONMENT_CONFIG = "environment config"
CAPABILITY_DISCOVERY = "capability discovery"
SESSION = "session"


@dataclass(frozen=True, slots=True)
class Services:
    """What handlers share across the whole server."""

    registry: SessionRegistry
    info: EnvironmentInfo
    fs: FileSystem
    http_client: HttpClient
    discovery: ExecutorDiscovery
    max_http_streams: int = MAX_HTTP_STREAMS
    process_endings: ProcessEndingsInfo | None = None
    """What the `processEndings` extension offers here (None: not offered)."""
    client_fs: Callable[[Connection], FileSystem] | None = None
    """The filesystem as one connection uses it (its turns of the blocking threads, releases
    after its responses are sent); None: `fs` as is."""


def build_router(connection: Connection, services: Services) -> Router:
    router = Router()
    session = SessionHandler(connection, services.registry, services.info, services.process_endings)
    process = ProcessHandler(connection)
    fs = FileSystemHandler(
        connection.handles,
        services.fs if services.client_fs is None else services.client_fs(connection),
        connection.missing_watch,
    )
    discovery = DiscoveryHandler(services.discovery)
    http = HttpHandler(connection, services.http_client, services.max_http_streams)

    router.add(methods.INITIALIZE, InitializeParams, session.initialize, gate=None)
    router.add(methods.ENVIRONMENT_INFO, None, session.info, gate=ENVIRONMENT_INFO)
    router.add(methods.ENVIRONMENT_STATUS, None, session.status, gate=ENVIRONMENT_STATUS)
    router.add(methods.SESSION_CLOSE, None, session.close, gate=SESSION)

    router.add(methods.PROCESS_START, ProcessStartParams, process.start, gate=EXEC)
    router.add(methods.PROCESS_READ, ProcessReadParams, process.read, gate=EXEC, detached=True)
    router.add(methods.PROCESS_WRITE, ProcessWriteParams, process.write, gate=EXEC)
    router.add(methods.PROCESS_SIGNAL, ProcessSignalParams, process.signal, gate=EXEC)
    router.add(methods.PROCESS_TERMINATE, ProcessTerminateParams, process.terminate, gate=EXEC)
    router.add(methods.PROCESS_CLOSE_STDIN, ProcessCloseStdinParams, process.close_stdin, gate=EXEC)
    router.add(methods.PROCESS_WAIT, ProcessWaitParams, process.wait, gate=EXEC, detached=True)
    # Extensions: terminal size, and processes that outlive their sessions (docs/protocol.md).
    router.add(methods.PROCESS_RESIZE, ProcessResizeParams, process.resize, gate=EXEC)
    router.add(methods.PROCESS_LIST, None, process.list, gate=EXEC)
    router.add(methods.PROCESS_ATTACH, ProcessAttachParams, process.attach, gate=EXEC)
    router.add(methods.PROCESS_DETACH, ProcessDetachParams, process.detach, gate=EXEC)
    router.add(methods.PROCESS_KILL, ProcessKillParams, process.kill, gate=EXEC)

    router.add(methods.FS_READ_FILE, FsReadFileParams, fs.read_file, gate=FILESYSTEM)
    router.add(methods.FS_WRITE_FILE, FsWriteFileParams, fs.write_file, gate=FILESYSTEM)
    router.add(
        methods.FS_CREATE_DIRECTORY, FsCreateDirectoryParams, fs.create_directory, gate=FILESYSTEM
    )
    router.add(methods.FS_GET_METADATA, FsGetMetadataParams, fs.get_metadata, gate=FILESYSTEM)
    router.add(methods.FS_GET_ATTRIBUTES, FsGetAttributesParams, fs.get_attributes, gate=FILESYSTEM)
    router.add(methods.FS_SET_ATTRIBUTES, FsSetAttributesParams, fs.set_attributes, gate=FILESYSTEM)
    router.add(methods.FS_CANONICALIZE, FsCanonicalizeParams, fs.canonicalize, gate=FILESYSTEM)
    router.add(methods.FS_READ_DIRECTORY, FsReadDirectoryParams, fs.read_directory, gate=FILESYSTEM)
    router.add(methods.FS_WALK, FsWalkParams, fs.walk, gate=FILESYSTEM)
    router.add(methods.FS_REMOVE, FsRemoveParams, fs.remove, gate=FILESYSTEM)
    router.add(methods.FS_COPY, FsCopyParams, fs.copy, gate=FILESYSTEM)
    router.add(methods.FS_OPEN, FsOpenParams, fs.open, gate=FILESYSTEM)
    router.add(methods.FS_READ_BLOCK, FsReadBlockParams, fs.read_block, gate=FILESYSTEM)
    router.add(methods.FS_WRITE_BLOCK, FsWriteBlockParams, fs.write_block, gate=FILESYSTEM)
    router.add(methods.FS_CLOSE, FsCloseParams, fs.close, gate=FILESYSTEM)
    router.add(methods.FS_WATCH_MISSING, FsWatchMissingParams, fs.watch_missing, gate=FILESYSTEM)

    # Executor discovery reads only: a slow scan never holds back the connection's other work.
    router.add(
        methods.ENVIRONMENT_CONFIG_READ,
        EnvironmentConfigReadParams,
        discovery.read_config,
        gate=ENVIRONMENT_CONFIG,
        detached=True,
    )
    router.add(
        methods.CAPABILITIES_DISCOVER_V2,
        CapabilitiesDiscoverV2Params,
        discovery.discover_capabilities,
        gate=CAPABILITY_DISCOVERY,
        detached=True,
    )
    router.add(
        methods.CAPABILITY_ROOTS_DISCOVER_V1,
        CapabilityRootsDiscoverParams,
        discovery.discover_roots,
        gate=CAPABILITY_DISCOVERY,
        detached=True,
    )

    # HTTP requests are independent of fs and process state: they never hold others back.
    router.add(methods.HTTP_REQUEST, HttpRequestParams, http.request, gate=HTTP, detached=True)
    return router
