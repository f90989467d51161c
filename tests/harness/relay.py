"""Relay-mode pieces for tests: our relay as a subprocess, an executor in `--remote` mode (ours
or the pinned codex), and the environment variables that make a codex app-server (or our
client) a harness of that relay.

    async with relay_process(tmp_path) as relay:
        async with remote_executor("ours", relay.url, home) as executor:
            await wait_for_metric(relay.url, EXECUTOR_TOKEN, CONNECTED)
            ... AppServer.start(home, cwd, noise_env(relay.url)) ...
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TIME, require_reference
from tests.harness.app_server import AppServer
from tests.harness.servers import REFERENCE_VERSION
from tests.relay.support import (
    EXECUTOR_TOKEN,
    HARNESS_TOKEN,
    RelayProcess,
    start_relay_process,
    wait_for_metric,
)

ENVIRONMENT_ID = "test1"
CONNECTED = "exec_server_relay_executors_connected 1"

__all__ = [
    "CONNECTED",
    "ENVIRONMENT_ID",
    "EXECUTOR_TOKEN",
    "HARNESS_TOKEN",
    "RemoteExecutor",
    "is_ready",
    "noise_env",
    "real_harness",
    "relay_flags",
    "relay_process",
    "remote_executor",
    "wait_for_metric",
    "wait_status",
]


def relay_flags(workdir: Path) -> list[str]:
    """Token files for the test tokens, and /metrics on."""
    (workdir / "executor.tokens").write_text(EXECUTOR_TOKEN + "\n")
    (workdir / "harness.tokens").write_text(HARNESS_TOKEN + "\n")
    return [
        "--executor-token-file",
        str(workdir / "executor.tokens"),
        "--harness-token-file",
        str(workdir / "harness.tokens"),
        "--metrics",
    ]


@contextlib.asynccontextmanager
async def relay_process(
    workdir: Path, extra: Sequence[str] = (), *, listen: str = "127.0.0.1:0"
) -> AsyncIterator[RelayProcess]:
    """Our relay (`python -m execserver relay`), stopped (and required to exit 0) at the end."""
    relay = await start_relay_process(["--listen", listen, *relay_flags(workdir), *extra], workdir)
    try:
        yield relay
    finally:
        assert await relay.stop() == 0, relay.stderr()


def noise_env(
    url: str, token: str = HARNESS_TOKEN, environment_id: str = ENVIRONMENT_ID
) -> dict[str, str]:
    """What makes a codex front end reach `environment_id` through the relay at `url`."""
    return {
        "CODEX_EXEC_SERVER_NOISE_REGISTRY_URL": url,
        "CODEX_EXEC_SERVER_NOISE_ENVIRONMENT_ID": environment_id,
        "CODEX_EXEC_SERVER_NOISE_AUTH_TOKEN": token,
        "CODEX_API_KEY": "sk-dummy",
    }


@dataclass
class RemoteExecutor:
    kind: str
    process: asyncio.subprocess.Process
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    async def wait_exit(self, timeout: float) -> int:
        return await asyncio.wait_for(self.process.wait(), timeout * TIME)

    async def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10 * TIME)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


def remote_command(
    kind: str, url: str, environment_id: str, version: str = REFERENCE_VERSION
) -> list[str]:
    if kind == "ours":
        return [
            sys.executable, "-m", "execserver", "--log-level", "info",
            "serve", "--remote", url, "--environment-id", environment_id,
        ]  # fmt: skip
    binary = require_reference(version)
    return [str(binary), "exec-server", "--remote", url, "--environment-id", environment_id]


@contextlib.asynccontextmanager
async def remote_executor(
    kind: str,
    url: str,
    home: Path,
    *,
    token: str = EXECUTOR_TOKEN,
    environment_id: str = ENVIRONMENT_ID,
    env: dict[str, str] | None = None,
    wrap: Sequence[str] = (),
    version: str = REFERENCE_VERSION,
) -> AsyncIterator[RemoteExecutor]:
    """An executor (`ours` or `reference` of `version`) registered with the relay at `url`,
    dialling out; `wrap` prefixes its command (e.g. a bubblewrap mount namespace)."""
    home.mkdir(parents=True, exist_ok=True)
    environment = {
        **(env if env is not None else os.environ),
        "CODEX_HOME": str(home),
        "CODEX_API_KEY": token,
        "RUST_LOG": "info",
        "NO_COLOR": "1",
    }
    stderr_path = home / f"{kind}-executor.stderr"
    with open(stderr_path, "wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            *wrap,
            *remote_command(kind, url, environment_id, version),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
            env=environment,
            start_new_session=True,
        )
    executor = RemoteExecutor(kind, process, stderr_path)
    try:
        yield executor
    finally:
        await executor.stop()


@contextlib.asynccontextmanager
async def real_harness(
    url: str, token: str, home: Path, cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[AppServer]:
    """`codex app-server` whose only environment, `remote`, is reached through the relay at
    `url` (a registry: one relay, or a fleet's balancer)."""
    require_reference()
    home.mkdir(parents=True, exist_ok=True)
    with monkeypatch.context() as patch:
        # AppServer passes our environment on: these make `remote` a Noise environment.
        for name, value in noise_env(url, token).items():
            patch.setenv(name, value)
        async with AppServer.start(home, cwd) as app:
            yield app


async def wait_status(
    app: AppServer, done: Callable[[dict[str, Any]], bool], timeout: float = 30.0
) -> dict[str, Any]:
    """Poll `environment/status` of `remote` until `done(status)`; returns that status."""
    status: dict[str, Any] = {}
    try:
        async with asyncio.timeout(timeout * TIME):
            while True:
                status = await app.call("environment/status", {"environmentId": "remote"})
                if done(status):
                    return status
                await asyncio.sleep(0.1)  # a poll with a deadline
    except TimeoutError:
        raise AssertionError(f"environment/status stayed {status}\n{app.stderr()}") from None


def is_ready(status: dict[str, Any]) -> bool:
    return status.get("status") == "ready"
