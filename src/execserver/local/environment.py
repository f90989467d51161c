"""`local_environment()`: the `Environment` of this host, in-process, no server involved.

Built from the same `Host` the server runs on: processes through a session-like process table
(`HostedExecBackend` over `LocalExecBackend`), files through `LocalFileSystem`, HTTP through
`LocalHttpClient`: exactly what the server's handlers drive.
"""

from __future__ import annotations

import msgspec

from execserver.environment import Environment
from execserver.environment.hosted import HostedExecBackend
from execserver.local.host import Host, HostConfig
from execserver.protocol.session import (
    EnvironmentInfo,
    EnvironmentInfoWithExtensions,
    ExecutorExtensions,
)

BLOCKING_THREADS = 4


def local_environment() -> Environment:
    """This host as an `Environment`. Must be called inside the running event loop.

    `aclose()` kills every process tree it started and releases threads and connections.
    """
    host = Host(HostConfig(blocking_threads=BLOCKING_THREADS))
    processes = HostedExecBackend(host.process_table())

    extended = EnvironmentInfoWithExtensions(
        **msgspec.structs.asdict(host.info),
        extensions=ExecutorExtensions(process_endings=host.process_endings),
    )

    async def info() -> EnvironmentInfo:
        return extended

    async def close() -> None:
        try:
            await processes.aclose()
        finally:
            await host.aclose()

    return Environment(
        process=processes,
        fs=host.fs,
        http=host.http,
        discovery=host.discovery,
        _info=info,
        _close=close,
    )
