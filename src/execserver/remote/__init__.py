"""Remote environments: the capabilities of an exec-server, through one `ExecServerClient`.

`remote_environment(client)` wraps a connected client; `connect_environment(url)` and
`spawn_environment(program, args)` connect first. Closing the environment closes the client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from execserver.client.client import DEFAULT_CLIENT_NAME, ExecServerClient
from execserver.client.reconnect import ReconnectPolicy
from execserver.environment import Environment
from execserver.protocol import methods
from execserver.protocol.session import EnvironmentInfo
from execserver.remote.file_system import RemoteFileSystem
from execserver.remote.http_client import RemoteHttpClient
from execserver.remote.process import RemoteExecBackend

ENVIRONMENT_INFO_TIMEOUT_S = 30.0


def remote_environment(client: ExecServerClient) -> Environment:
    """The `Environment` of the executor behind `client` (which it then owns)."""
    processes = RemoteExecBackend(client)
    http = RemoteHttpClient(client)

    async def info() -> EnvironmentInfo:
        async with asyncio.timeout(ENVIRONMENT_INFO_TIMEOUT_S):
            return await client.call(methods.ENVIRONMENT_INFO, None, EnvironmentInfo)

    async def close() -> None:
        try:
            await processes.aclose()
            await http.aclose()
        finally:
            await client.aclose()

    return Environment(
        process=processes, fs=RemoteFileSystem(client), http=http, _info=info, _close=close
    )


async def connect_environment(
    url: str,
    *,
    bearer_token: str | None = None,
    headers: Mapping[str, str] | None = None,
    client_name: str = DEFAULT_CLIENT_NAME,
    policy: ReconnectPolicy | None = None,
) -> Environment:
    """Connect to a WebSocket exec-server (ours or `codex exec-server`). Raises `ConnectError`."""
    client = await ExecServerClient.connect(
        url, bearer_token=bearer_token, headers=headers, client_name=client_name, policy=policy
    )
    return remote_environment(client)


async def spawn_environment(
    program: str,
    args: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    client_name: str = DEFAULT_CLIENT_NAME,
    policy: ReconnectPolicy | None = None,
) -> Environment:
    """Start an exec-server speaking stdio (e.g. `ssh host codex exec-server --listen stdio`)."""
    client = await ExecServerClient.spawn(
        program, args, env=env, cwd=cwd, client_name=client_name, policy=policy
    )
    return remote_environment(client)


__all__ = ["connect_environment", "remote_environment", "spawn_environment"]
