"""Remote environments: the capabilities of an exec-server, through one `ExecServerClient`.

`remote_environment(client)` wraps a connected client; `connect_environment(url)` and
`spawn_environment(program, args)` connect first. Closing the environment closes the client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from ssl import SSLContext

from execserver.client.client import DEFAULT_CLIENT_NAME, ExecServerClient
from execserver.client.reconnect import ReconnectPolicy
from execserver.environment import Environment
from execserver.protocol import methods
from execserver.protocol.session import EnvironmentInfo, EnvironmentInfoWithExtensions
from execserver.relay.harness import RelayTarget, is_relay_url, parse_relay_url
from execserver.remote.discovery import RemoteExecutorDiscovery
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
            return await client.call(methods.ENVIRONMENT_INFO, None, EnvironmentInfoWithExtensions)

    async def close() -> None:
        try:
            await processes.aclose()
            await http.aclose()
        finally:
            await client.aclose()

    return Environment(
        process=processes,
        fs=RemoteFileSystem(client),
        http=http,
        discovery=RemoteExecutorDiscovery(client),
        _info=info,
        _close=close,
        _end_session=client.close_session,
    )


async def connect_environment(
    url: str,
    *,
    bearer_token: str | None = None,
    headers: Mapping[str, str] | None = None,
    client_name: str = DEFAULT_CLIENT_NAME,
    policy: ReconnectPolicy | None = None,
    ssl: SSLContext | None = None,
) -> Environment:
    """Connect to a WebSocket exec-server (ours or `codex exec-server`): `ws://` or `wss://`
    (verified with `ssl`, default the system trust store), or through a relay:
    `relay+http(s)://REGISTRY/ENVIRONMENT_ID` with the harness token as `bearer_token`.
    Raises `ConnectError` (`AuthenticationFailed` for refused credentials), `ValueError` for
    a relay URL it cannot use."""
    if is_relay_url(url):
        return await connect_relay_environment(
            parse_relay_url(url, bearer_token), client_name=client_name, policy=policy
        )
    client = await ExecServerClient.connect(
        url,
        bearer_token=bearer_token,
        headers=headers,
        client_name=client_name,
        policy=policy,
        ssl=ssl,
    )
    return remote_environment(client)


async def connect_relay_environment(
    target: RelayTarget,
    *,
    client_name: str = DEFAULT_CLIENT_NAME,
    policy: ReconnectPolicy | None = None,
) -> Environment:
    """Reach an executor through a relay (registry + rendezvous, end-to-end encrypted)."""
    client = await ExecServerClient.connect_relay(target, client_name=client_name, policy=policy)
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


__all__ = [
    "RelayTarget",
    "connect_environment",
    "connect_relay_environment",
    "remote_environment",
    "spawn_environment",
]
