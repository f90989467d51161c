"""`EnvironmentManager`: the environments of `$CODEX_HOME/environments.toml`, connected lazily.

URL environments start connecting in the background (`start()`), and every caller of `get()`
shares the one attempt in flight; stdio environments are spawned on first use; `local` is
this host. A failed connection is not cached: the next `get()` tries again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from execserver.client.client import DEFAULT_CLIENT_NAME
from execserver.client.environments import (
    LOCAL_ENVIRONMENT_ID,
    EnvironmentsConfig,
    EnvironmentsError,
    EnvironmentSpec,
    RelayEnvironment,
    UrlEnvironment,
    load_environments,
)
from execserver.client.reconnect import LazyConnection, ReconnectPolicy
from execserver.environment import Environment
from execserver.local.environment import local_environment
from execserver.remote import (
    connect_environment,
    connect_relay_environment,
    spawn_environment,
)


class EnvironmentManager:
    def __init__(self, config: EnvironmentsConfig, *, client_name: str = DEFAULT_CLIENT_NAME):
        self.config = config
        self._client_name = client_name
        self._environments: dict[str, LazyConnection[Environment]] = {}

    @classmethod
    def load(cls, codex_home: Path | None = None) -> EnvironmentManager:
        """From `$CODEX_HOME/environments.toml` (raises `EnvironmentsError` if it is invalid)."""
        return cls(load_environments(codex_home))

    def _lazy(self, environment_id: str) -> LazyConnection[Environment]:
        lazy = self._environments.get(environment_id)
        if lazy is None:
            spec = self.config.get(environment_id)

            async def connect() -> Environment:
                if spec is None:
                    return local_environment()
                return await self._connect(spec)

            lazy = self._environments[environment_id] = LazyConnection(connect)
        return lazy

    async def _connect(self, spec: EnvironmentSpec) -> Environment:
        if isinstance(spec, RelayEnvironment):
            policy = ReconnectPolicy(
                connect_timeout_s=spec.connect_timeout_s,
                initialize_timeout_s=spec.initialize_timeout_s,
            )
            return await connect_relay_environment(
                spec.target, client_name=self._client_name, policy=policy
            )
        if isinstance(spec, UrlEnvironment):
            policy = ReconnectPolicy(
                connect_timeout_s=spec.connect_timeout_s,
                initialize_timeout_s=spec.initialize_timeout_s,
            )
            return await connect_environment(
                spec.url, headers=spec.http_headers(), client_name=self._client_name, policy=policy
            )
        return await spawn_environment(
            spec.program,
            spec.args,
            env=spec.env,
            cwd=None if spec.cwd is None else str(spec.cwd),
            client_name=self._client_name,
            policy=ReconnectPolicy(initialize_timeout_s=spec.initialize_timeout_s),
        )

    def start(self) -> None:
        """Begin connecting every URL environment in the background."""
        for spec in self.config.environments:
            if isinstance(spec, UrlEnvironment | RelayEnvironment):
                self._lazy(spec.id).start()

    async def get(self, name: str | None = None) -> Environment:
        """The environment `name` (or the default), connected.

        Raises `EnvironmentsError` for an unknown name or when there is no default, and the
        connection's errors (`ConnectError`, `RpcError`) when it cannot be reached.
        Cancellation: a shared connection attempt continues for other callers.
        """
        selected = self.config.select(name)
        if selected is None:
            raise EnvironmentsError("no environment was named and no default is configured")
        environment_id = LOCAL_ENVIRONMENT_ID if selected == LOCAL_ENVIRONMENT_ID else selected.id
        return await self._lazy(environment_id).get()

    async def aclose(self) -> None:
        """Close every environment that was opened. Cancellation: cleanup completes first."""
        lazies, self._environments = list(self._environments.values()), {}

        async def close(environment: Environment) -> None:
            await environment.aclose()

        await asyncio.shield(asyncio.gather(*(lazy.aclose(close) for lazy in lazies)))

    async def __aenter__(self) -> EnvironmentManager:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
