"""Executor discovery of a remote executor: one call per question."""

from __future__ import annotations

from collections.abc import Sequence

from execserver.client.client import ExecServerClient
from execserver.protocol import methods
from execserver.protocol.discovery import (
    CapabilitiesDiscoverV2Params,
    CapabilitiesDiscoverV2Response,
    CapabilityRootDiscovery,
    CapabilityRootRequest,
    CapabilityRootsDiscoverParams,
    CapabilityRootsDiscoverResponse,
    EnvironmentConfigReadParams,
    EnvironmentConfigReadResponse,
)
from execserver.protocol.pathuri import PathUri
from execserver.protocol.sandbox import DiscoverySandboxContext


class RemoteExecutorDiscovery:
    def __init__(self, client: ExecServerClient) -> None:
        self._client = client

    async def read_config(
        self,
        cwd: PathUri,
        config_paths: Sequence[Sequence[str]],
        requirements_paths: Sequence[Sequence[str]],
    ) -> EnvironmentConfigReadResponse:
        params = EnvironmentConfigReadParams(
            cwd=cwd,
            config_paths=[list(path) for path in config_paths],
            requirements_paths=[list(path) for path in requirements_paths],
        )
        return await self._client.call(
            methods.ENVIRONMENT_CONFIG_READ, params, EnvironmentConfigReadResponse
        )

    async def discover_capabilities(
        self, cwd: PathUri, *, sandbox: DiscoverySandboxContext | None = None
    ) -> CapabilitiesDiscoverV2Response:
        params = CapabilitiesDiscoverV2Params(cwd=cwd, sandbox=sandbox)
        return await self._client.call(
            methods.CAPABILITIES_DISCOVER_V2, params, CapabilitiesDiscoverV2Response
        )

    async def discover_roots(
        self, roots: Sequence[CapabilityRootRequest]
    ) -> list[CapabilityRootDiscovery]:
        params = CapabilityRootsDiscoverParams(roots=list(roots))
        response = await self._client.call(
            methods.CAPABILITY_ROOTS_DISCOVER_V1, params, CapabilityRootsDiscoverResponse
        )
        return response.roots
