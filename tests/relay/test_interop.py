"""Interop with the real codex binaries: `codex exec-server --remote` registers with OUR relay
and dials out to it; `codex app-server` (the harness) connects through it (RELAY.md §9).

Every test runs our relay as a subprocess (`python -m execserver relay`), the pinned codex
binary as executor and/or app-server, each with its own CODEX_HOME (outside /tmp: codex
refuses its helper aliases under a temp dir), and waits on observable state (relay metrics,
`environment/status`) with deadlines.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness.relay import (
    CONNECTED,
    EXECUTOR_TOKEN,
    HARNESS_TOKEN,
    is_ready,
    real_harness,
    relay_flags,
    relay_process,
    remote_executor,
    wait_status,
)
from tests.relay.support import relay_metrics, start_relay_process, wait_for_metric

pytestmark = pytest.mark.reference


async def test_interop_real_executor_and_app_server_reach_ready(
    tmp_path: Path, codex_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real executor + real app-server through our relay: `remote` becomes ready, after a
    Noise handshake whose authorization our registry issued and validated."""
    async with (
        relay_process(tmp_path) as relay,
        remote_executor("reference", relay.url, codex_home / "executor") as executor,
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
        relay_process(tmp_path) as relay,
        remote_executor("reference", relay.url, codex_home / "executor"),
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
    async with relay_process(tmp_path) as relay:
        async with remote_executor(
            "reference", relay.url, codex_home / "ex", token="not-the-executor-token"
        ) as ex:
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
        async with remote_executor("reference", relay.url, codex_home / "executor") as executor:
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
