"""Interop with the real codex binaries: `codex exec-server --remote` registers with OUR relay
and dials out to it; `codex app-server` (the harness) connects through it (RELAY.md §9).

Every test runs our relay as a subprocess (`python -m execserver relay`), the pinned codex
binary as executor and/or app-server, each with its own CODEX_HOME (outside /tmp: codex
refuses its helper aliases under a temp dir), and waits on observable state (relay metrics,
`environment/status`) with deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TIME, require_reference
from tests.harness.app_server import AppServer
from tests.harness.servers import CACHE_DIR
from tests.relay.support import (
    EXECUTOR_TOKEN,
    HARNESS_TOKEN,
    RelayProcess,
    relay_metrics,
    start_relay_process,
    wait_for_metric,
)

pytestmark = pytest.mark.reference

ENVIRONMENT_ID = "test1"
CONNECTED = "exec_server_relay_executors_connected 1"


@pytest.fixture
def codex_home() -> Iterator[Path]:
    """A fresh directory for CODEX_HOMEs, outside /tmp."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="relay-interop-", dir=CACHE_DIR))
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def relay_flags(tmp_path: Path) -> list[str]:
    (tmp_path / "executor.tokens").write_text(EXECUTOR_TOKEN + "\n")
    (tmp_path / "harness.tokens").write_text(HARNESS_TOKEN + "\n")
    return [
        "--executor-token-file",
        str(tmp_path / "executor.tokens"),
        "--harness-token-file",
        str(tmp_path / "harness.tokens"),
        "--metrics",
    ]


@contextlib.asynccontextmanager
async def relay_process(args: list[str], tmp_path: Path) -> AsyncIterator[RelayProcess]:
    relay = await start_relay_process(args, tmp_path)
    try:
        yield relay
    finally:
        assert await relay.stop() == 0, relay.stderr()


class Executor:
    """A real `codex exec-server --remote …` process."""

    def __init__(self, process: asyncio.subprocess.Process, stderr_path: Path) -> None:
        self.process = process
        self.stderr_path = stderr_path

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    async def wait_exit(self, timeout: float) -> int:
        return await asyncio.wait_for(self.process.wait(), timeout * TIME)

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10 * TIME)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


@contextlib.asynccontextmanager
async def real_executor(url: str, token: str, home: Path) -> AsyncIterator[Executor]:
    binary = require_reference()
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "CODEX_HOME": str(home),
        "CODEX_API_KEY": token,
        "RUST_LOG": "info",
        "NO_COLOR": "1",
    }
    stderr_path = home / "executor.stderr"
    with open(stderr_path, "wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            str(binary),
            "exec-server",
            "--remote",
            url,
            "--environment-id",
            ENVIRONMENT_ID,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
            env=env,
            start_new_session=True,
        )
    executor = Executor(process, stderr_path)
    try:
        yield executor
    finally:
        await executor.stop()


@contextlib.asynccontextmanager
async def real_harness(
    url: str, token: str, home: Path, cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[AppServer]:
    """`codex app-server` whose only environment, `remote`, is reached through the relay."""
    require_reference()
    home.mkdir(parents=True, exist_ok=True)
    with monkeypatch.context() as patch:
        # AppServer passes our environment on: these make `remote` a Noise environment.
        patch.setenv("CODEX_EXEC_SERVER_NOISE_REGISTRY_URL", url)
        patch.setenv("CODEX_EXEC_SERVER_NOISE_ENVIRONMENT_ID", ENVIRONMENT_ID)
        patch.setenv("CODEX_EXEC_SERVER_NOISE_AUTH_TOKEN", token)
        patch.setenv("CODEX_API_KEY", "sk-dummy")
        async with AppServer.start(home, cwd) as app:
            yield app


async def wait_status(app: AppServer, done: Any, timeout: float = 30.0) -> dict[str, Any]:
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


async def test_interop_real_executor_and_app_server_reach_ready(
    tmp_path: Path, codex_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real executor + real app-server through our relay: `remote` becomes ready, after a
    Noise handshake whose authorization our registry issued and validated."""
    async with (
        relay_process(["--listen", "127.0.0.1:0", *relay_flags(tmp_path)], tmp_path) as relay,
        real_executor(relay.url, EXECUTOR_TOKEN, codex_home / "executor") as executor,
    ):
        await wait_for_metric(relay.url, EXECUTOR_TOKEN, CONNECTED)
        async with real_harness(
            relay.url, HARNESS_TOKEN, codex_home / "app", tmp_path, monkeypatch
        ) as app:
            await wait_status(app, is_ready)
            page = await relay_metrics(relay.url, EXECUTOR_TOKEN)
            assert 'exec_server_relay_validations_total{outcome="valid"} 1' in page
            assert "exec_server_relay_streams_active 1" in page
            for direction in ("to_executor", "to_harness"):
                assert (
                    f'exec_server_relay_handshake_frames_total{{direction="{direction}"}} 1' in page
                )
        assert executor.process.returncode is None, executor.stderr()
        # The app-server went away: its stream was reset and freed.
        await wait_for_metric(relay.url, EXECUTOR_TOKEN, "exec_server_relay_streams_active 0")
    for secret in (EXECUTOR_TOKEN, HARNESS_TOKEN):
        assert secret not in relay.stderr()


async def test_interop_wrong_harness_token_is_an_auth_error(
    tmp_path: Path, codex_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a wrong harness token the app-server reports a registry authentication error."""
    async with (
        relay_process(["--listen", "127.0.0.1:0", *relay_flags(tmp_path)], tmp_path) as relay,
        real_executor(relay.url, EXECUTOR_TOKEN, codex_home / "executor"),
    ):
        await wait_for_metric(relay.url, EXECUTOR_TOKEN, CONNECTED)
        async with real_harness(
            relay.url, "not-the-harness-token", codex_home / "app", tmp_path, monkeypatch
        ) as app:
            status = await wait_status(app, lambda s: "error" in s)
    assert status["status"] == "disconnected"
    assert "environment registry authentication error" in status["error"], status
    assert "401 Unauthorized" in status["error"], status


async def test_interop_wrong_executor_token_makes_the_executor_exit(
    tmp_path: Path, codex_home: Path
) -> None:
    """With a wrong executor token registration fails and the real executor exits non-zero."""
    async with relay_process(
        ["--listen", "127.0.0.1:0", *relay_flags(tmp_path)], tmp_path
    ) as relay:
        async with real_executor(relay.url, "not-the-executor-token", codex_home / "ex") as ex:
            code = await ex.wait_exit(30)
            assert code != 0, ex.stderr()
        page = await relay_metrics(relay.url, EXECUTOR_TOKEN)
        assert 'registry_requests_total{operation="register",status="401"} 1' in page


async def test_interop_executor_survives_a_relay_restart(
    tmp_path: Path, codex_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The relay restarts on the same port with the same --state-dir: the real executor
    reconnects with its old ticket URL (no new registration), and the app-server that was
    connected before gets through again on its next operation."""
    flags = [*relay_flags(tmp_path), "--state-dir", str(tmp_path / "state")]
    relay = await start_relay_process(["--listen", "127.0.0.1:0", *flags], tmp_path)
    port = relay.port
    try:
        async with real_executor(relay.url, EXECUTOR_TOKEN, codex_home / "executor") as executor:
            await wait_for_metric(relay.url, EXECUTOR_TOKEN, CONNECTED)
            async with real_harness(
                relay.url, HARNESS_TOKEN, codex_home / "app", tmp_path, monkeypatch
            ) as app:
                await wait_status(app, is_ready)
                assert await relay.stop() == 0
                relay = await start_relay_process(
                    ["--listen", f"127.0.0.1:{port}", *flags], tmp_path, name="relay-restarted"
                )
                page = await wait_for_metric(relay.url, EXECUTOR_TOKEN, CONNECTED, timeout=60)
                assert 'operation="register"' not in page  # reconnected, not re-registered
                # Status polling does not reconnect a codex harness; using the environment does.
                await app.start_thread("remote", str(tmp_path))
                await wait_status(app, is_ready)
            assert executor.process.returncode is None, executor.stderr()
    finally:
        assert await relay.stop() == 0
