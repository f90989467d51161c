"""The `environment` fixture: every conformance test runs against each kind of environment.

- `local`: `local_environment()`, in-process, no server;
- `ours-ws` / `ours-stdio`: our server over WebSocket (one per session) or a stdio child;
- `reference-ws` / `reference-stdio`: the pinned codex 0.169.0 `exec-server`, the same ways.

Tests see only `Environment` plus `Target.capabilities`; where targets legitimately differ the
difference is a capability flag here, never a branch on the kind in a test.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from execserver.environment import Environment
from execserver.local.environment import local_environment
from execserver.remote import connect_environment, spawn_environment
from tests.conftest import ServerProcess, require_reference
from tests.harness.servers import REFERENCE_CODEX_HOME, reference_binary

ENVIRONMENT_KINDS = ["local", "ours-ws", "ours-stdio", "reference-ws", "reference-stdio"]


@dataclass(frozen=True)
class Capabilities:
    close_stdin: bool
    """The environment can close a process's stdin (codex 0.169 has no method for it; ours
    offers the `process/closeStdin` extension)."""


CAPABILITIES = {
    "local": Capabilities(close_stdin=True),
    "ours-ws": Capabilities(close_stdin=True),
    "ours-stdio": Capabilities(close_stdin=True),
    "reference-ws": Capabilities(close_stdin=False),
    "reference-stdio": Capabilities(close_stdin=False),
}


@dataclass(frozen=True)
class Target:
    env: Environment
    capabilities: Capabilities
    workdir: Path


async def open_environment(kind: str, request: pytest.FixtureRequest) -> Environment:
    if kind == "local":
        return local_environment()
    if kind == "ours-ws":
        server: ServerProcess = request.getfixturevalue("ours")
        return await connect_environment(server.url)
    if kind == "ours-stdio":
        return await spawn_environment(
            sys.executable, ["-m", "execserver", "serve", "--listen", "stdio"]
        )
    require_reference()
    if kind == "reference-ws":
        reference: ServerProcess = request.getfixturevalue("reference")
        return await connect_environment(reference.url)
    binary = reference_binary()
    assert binary is not None
    REFERENCE_CODEX_HOME.mkdir(parents=True, exist_ok=True)
    return await spawn_environment(
        str(binary),
        ["exec-server", "--listen", "stdio"],
        env={"CODEX_HOME": str(REFERENCE_CODEX_HOME)},
    )


@pytest.fixture(params=ENVIRONMENT_KINDS)
async def target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Target]:
    kind: str = request.param
    env = await open_environment(kind, request)
    async with env:
        yield Target(env, CAPABILITIES[kind], tmp_path)


@pytest.fixture
def environment(target: Target) -> Environment:
    return target.env
