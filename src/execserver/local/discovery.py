"""`LocalExecutorDiscovery`: executor discovery on this host.

Blocking work runs on the host's I/O threads, in the blocking pool's turns (`blocking.py`: it
cannot take every thread); a sandboxed discovery whose policy restricts
reads runs in the filesystem sandbox helper instead (`sandbox/fs_runner.py`, the same one-shot
helper `fs/*` requests use), so the kernel decides what the discovery can see. `CODEX_HOME`
(default `~/.codex`) and `HOME` are read from this process's environment at each call.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from execserver.environment.discovery import MAX_CAPABILITY_ROOTS
from execserver.errors import (
    CodexHomeInvalid,
    ExecServerError,
    InternalError,
    TooManyCapabilityRoots,
)
from execserver.local.blocking import LOCAL, BlockingPool
from execserver.local.environment_config import check_paths, read_environment_config
from execserver.local.file_system import sandbox_policy
from execserver.local.sandbox.fs_runner import SandboxedFileSystem, fs_policy, needs_helper
from execserver.local.sandbox.policy import ResolvedPolicy, SandboxError, SandboxPathError
from execserver.protocol.discovery import (
    CapabilitiesDiscoverV2Response,
    CapabilityRootDiscovery,
    CapabilityRootRequest,
    EnvironmentConfigReadResponse,
)
from execserver.protocol.pathuri import PathUri
from execserver.protocol.sandbox import DiscoverySandboxContext, SandboxContext

T = TypeVar("T")

ROOT_DISCOVERY_CONCURRENCY = 4
"""Roots of one `discover_roots()` call inspected at once. A sandboxed root costs a fresh
filesystem-sandbox helper (a Python start under bubblewrap, about a second): one after another,
a request naming several such roots took their sum; all at once, up to MAX_CAPABILITY_ROOTS
helpers would start together."""

_MXC_UNAVAILABLE = (
    "failed to prepare fs sandbox: failed to prepare MXC sandbox: native MXC is unavailable on "
    "this executor"
)


def codex_home(env: Mapping[str, str]) -> bytes:
    """`$CODEX_HOME` (which must be an existing directory; symlinks resolved), else `~/.codex`."""
    configured = env.get("CODEX_HOME")
    if not configured:
        return os.fsencode(os.path.join(user_home(env), ".codex"))
    if not os.path.isdir(configured):
        raise CodexHomeInvalid(configured, exists=os.path.exists(configured))
    return os.fsencode(os.path.realpath(configured))  # canonical, as the reference reports it


def user_home(env: Mapping[str, str]) -> str:
    return env.get("HOME") or os.path.expanduser("~")


class LocalExecutorDiscovery:
    def __init__(self, pool: BlockingPool, sandboxed: SandboxedFileSystem) -> None:
        self._pool = pool
        self._sandboxed = sandboxed

    async def _thread(self, function: Callable[..., T], /, *args: object, **kwargs: object) -> T:
        return await self._pool.run(LOCAL, functools.partial(function, *args, **kwargs))

    async def _helper(
        self, policy: ResolvedPolicy, op: str, args: dict[str, Any], result: Any
    ) -> Any:
        """Run `op` in the filesystem sandbox helper (its exchange in the pool's turns)."""
        return await self._sandboxed.call(
            policy,
            op,
            args,
            result,
            drive=functools.partial(self._pool.drive, LOCAL),
            wait_timeout_s=self._pool.wait_timeout_s,
        )

    async def read_config(
        self,
        cwd: PathUri,
        config_paths: Sequence[Sequence[str]],
        requirements_paths: Sequence[Sequence[str]],
    ) -> EnvironmentConfigReadResponse:
        env = os.environ
        check_paths(config_paths, requirements_paths)
        try:
            chome = codex_home(env)
        except CodexHomeInvalid as exc:
            raise CodexHomeInvalid(exc.path, exists=exc.exists, for_config=True) from None
        return await self._thread(
            read_environment_config,
            cwd,
            config_paths,
            requirements_paths,
            codex_home=chome,
            home=os.fsencode(user_home(env)),
        )

    async def discover_capabilities(
        self, cwd: PathUri, *, sandbox: DiscoverySandboxContext | None = None
    ) -> CapabilitiesDiscoverV2Response:
        # Imported on use (here and below): the skill metadata reader brings PyYAML (~20 ms of
        # every server start).
        from execserver.local import capability_discovery as found

        home = os.fsencode(user_home(os.environ))
        chome = codex_home(os.environ)
        if not found.has_discovery_locations(chome, home):
            # Nothing to look at: answered without preparing the sandbox, as the reference.
            return CapabilitiesDiscoverV2Response(plugins=[], skills=[], warnings=[])
        policy = None if sandbox is None else _discovery_policy(sandbox)
        if policy is None:
            return await self._thread(found.discover_capabilities, chome, home)
        result: CapabilitiesDiscoverV2Response = await self._helper(
            policy,
            "discover_capabilities",
            {"codex_home": chome, "home": home},
            CapabilitiesDiscoverV2Response,
        )
        return result

    async def discover_roots(
        self, roots: Sequence[CapabilityRootRequest]
    ) -> list[CapabilityRootDiscovery]:
        if len(roots) > MAX_CAPABILITY_ROOTS:
            raise TooManyCapabilityRoots(MAX_CAPABILITY_ROOTS)
        slots = asyncio.Semaphore(ROOT_DISCOVERY_CONCURRENCY)

        async def discover(root: CapabilityRootRequest) -> CapabilityRootDiscovery:
            async with slots:
                return await self._discover_root(root)

        # Answers keep the order of the request; a root's failure is its own answer (a bug in
        # one ends the others and reaches the caller as itself, not as a group).
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(discover(root)) for root in roots]
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None
        return [task.result() for task in tasks]

    async def _discover_root(self, root: CapabilityRootRequest) -> CapabilityRootDiscovery:
        try:
            policy = self._helper_policy(root.sandbox)
            if policy is None:
                from execserver.local import capability_discovery as found

                return await self._thread(found.inspect_root, root.id, root.path)
            result: CapabilityRootDiscovery = await self._helper(
                policy,
                "inspect_root",
                {"root_id": root.id, "root": root.path},
                CapabilityRootDiscovery,
            )
            return result
        except (ExecServerError, OSError) as exc:
            message = getattr(exc, "message", None) or str(exc)
            return CapabilityRootDiscovery(
                id=root.id,
                path=root.path,
                plugin=None,
                skills=[],
                namespace_manifests=[],
                warnings=[],
                error=f"failed to inspect capability root {root.path}: {message}",
            )

    @staticmethod
    def _helper_policy(sandbox: SandboxContext | None) -> ResolvedPolicy | None:
        """The policy to run under, None when the discovery may run directly."""
        if sandbox is None:
            return None
        policy = sandbox_policy(sandbox)
        if policy is None or not needs_helper(policy, writes=False):
            return None
        return policy


def _discovery_policy(sandbox: DiscoverySandboxContext) -> ResolvedPolicy | None:
    """The policy a sandboxed discovery runs under (None: directly). A sandbox that cannot be
    prepared fails the request with -32603 and the reference's wording."""
    try:
        policy = fs_policy(sandbox)
    except SandboxPathError as exc:
        raise InternalError(str(exc)) from None
    except SandboxError as exc:
        raise InternalError(f"failed to prepare fs sandbox: {exc}") from None
    if not needs_helper(policy, writes=False):
        return None
    if sandbox.windows_sandbox_level == "mxc":
        raise InternalError(_MXC_UNAVAILABLE)
    return policy
