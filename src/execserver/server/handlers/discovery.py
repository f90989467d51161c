"""`environmentConfig/read`, `capabilities/discoverV2`, `capabilityRoots/discoverV1`: params ->
the `ExecutorDiscovery` capability -> response. No error handling here."""

from __future__ import annotations

from execserver.environment.discovery import ExecutorDiscovery
from execserver.protocol.discovery import (
    CapabilitiesDiscoverV2Params,
    CapabilitiesDiscoverV2Response,
    CapabilityRootsDiscoverParams,
    CapabilityRootsDiscoverResponse,
    EnvironmentConfigReadParams,
    EnvironmentConfigReadResponse,
)


class DiscoveryHandler:
    def __init__(self, discovery: ExecutorDiscovery) -> None:
        self._discovery = discovery

    async def read_config(
        self, params: EnvironmentConfigReadParams
    ) -> EnvironmentConfigReadResponse:
        return await self._discovery.read_config(
            params.cwd, params.config_paths, params.requirements_paths
        )

    async def discover_capabilities(
        self, params: CapabilitiesDiscoverV2Params
    ) -> CapabilitiesDiscoverV2Response:
        return await self._discovery.discover_capabilities(params.cwd, sandbox=params.sandbox)

    async def discover_roots(
        self, params: CapabilityRootsDiscoverParams
    ) -> CapabilityRootsDiscoverResponse:
        return CapabilityRootsDiscoverResponse(
            roots=await self._discovery.discover_roots(params.roots)
        )
