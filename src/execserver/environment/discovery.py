"""The executor-discovery capability: what an orchestrator learns about an executor's own
configuration, plugins and skills before it starts work there.

Three questions, one per wire method: the executor's configuration layers for some key paths
(`environmentConfig/read`), its installed plugins and global skills
(`capabilities/discoverV2`), and the raw capability files under given roots
(`capabilityRoots/discoverV1`). Values are the wire structs (protocol/discovery.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from execserver.protocol.discovery import (
    CapabilitiesDiscoverV2Response,
    CapabilityRootDiscovery,
    CapabilityRootRequest,
    EnvironmentConfigReadResponse,
)
from execserver.protocol.pathuri import PathUri
from execserver.protocol.sandbox import DiscoverySandboxContext

MAX_CAPABILITY_ROOTS = 128
"""Roots one `discover_roots()` call may name (the executors' limit)."""


class ExecutorDiscovery(Protocol):
    async def read_config(
        self,
        cwd: PathUri,
        config_paths: Sequence[Sequence[str]],
        requirements_paths: Sequence[Sequence[str]],
    ) -> EnvironmentConfigReadResponse:
        """The executor's config and requirements layers for a thread working in `cwd`, each
        reduced to the key paths asked for (layers holding none of them are left out).

        Raises `InvalidParams` when no path is given, a path is empty or `cwd` is not a path of
        the executor's host; `InternalError` when a config file cannot be loaded.
        Cancellation: safe (nothing changes).
        """
        ...

    async def discover_capabilities(
        self, cwd: PathUri, *, sandbox: DiscoverySandboxContext | None = None
    ) -> CapabilitiesDiscoverV2Response:
        """Installed plugins and global skills, seen through `sandbox` when given (a
        discovery the sandbox prevents comes back empty). Problems with single plugins or skills
        become `warnings`, never errors. Cancellation: safe."""
        ...

    async def discover_roots(
        self, roots: Sequence[CapabilityRootRequest]
    ) -> list[CapabilityRootDiscovery]:
        """The raw plugin and skill files under each root, each seen through its own sandbox.
        A root that cannot be inspected has `error` set. Raises `InvalidRequest` for more than
        `MAX_CAPABILITY_ROOTS` roots. Cancellation: safe."""
        ...
