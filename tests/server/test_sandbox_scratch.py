"""The sandbox's scratch directory (`$TMPDIR/execserver-sandbox-<pid>-*`, the empty files
mounted over denied paths) does not outlive the server: removed at exit, and a killed server's
one is removed by the next server that sandboxes something."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path
from typing import Any

from execserver.local.sandbox.scratch import PREFIX
from tests.conftest import require_bwrap
from tests.harness.polling import poll
from tests.harness.servers import generation, start_server
from tests.harness.wire import WireClient


def _scratch_of(pid: int) -> list[str]:
    return [n for n in os.listdir(tempfile.gettempdir()) if n.startswith(f"{PREFIX}{pid}-")]


async def _run_with_a_denied_file(url: str, tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir(exist_ok=True)
    (workspace / "secret").write_text("hidden\n")
    sandbox: dict[str, Any] = {
        "permissions": {
            "type": "managed",
            "file_system": {
                "type": "restricted",
                "entries": [
                    {"path": {"type": "special", "value": {"kind": "root"}}, "access": "read"},
                    {"path": {"type": "path", "path": f"file://{workspace}"}, "access": "write"},
                    {
                        "path": {"type": "path", "path": f"file://{workspace}/secret"},
                        "access": "none",
                    },
                ],
            },
            "network": "restricted",
        },
        "windowsSandboxLevel": "disabled",
    }
    async with await WireClient.connect(url) as client:
        await client.initialize()
        params = {
            "processId": "denied",
            "argv": ["sh", "-c", "cat secret; echo status=$?"],
            "cwd": f"file://{workspace}",
            "env": {"PATH": "/usr/bin:/bin"},
            "tty": False,
            "sandbox": sandbox,
        }
        assert "result" in await client.request("process/start", params)
        await client.process_events("denied")


async def test_scratch_directory_removed_at_exit_and_after_a_kill(tmp_path: Path) -> None:
    require_bwrap()
    server = await start_server("ours", tmp_path)
    await _run_with_a_denied_file(server.url, tmp_path)
    assert len(_scratch_of(server.pid)) == 1
    assert await server.stop() == 0
    assert _scratch_of(server.pid) == []

    killed = await start_server("ours", tmp_path)
    await _run_with_a_denied_file(killed.url, tmp_path)
    assert len(_scratch_of(killed.pid)) == 1
    await killed.stop(signal.SIGKILL)
    assert len(_scratch_of(killed.pid)) == 1  # nobody could clean up

    server = await start_server("ours", tmp_path)
    try:
        await _run_with_a_denied_file(server.url, tmp_path)
        assert _scratch_of(killed.pid) == []
    finally:
        await server.stop()


async def test_upgrade_in_place_keeps_the_one_scratch_directory(tmp_path: Path) -> None:
    """The new image of an upgrade in place (same pid) reuses the scratch directory, whose
    files running sandboxes may have mounted, instead of leaving it behind."""
    require_bwrap()
    server = await start_server("ours", tmp_path)
    try:
        await _run_with_a_denied_file(server.url, tmp_path)
        (before,) = _scratch_of(server.pid)
        os.kill(server.pid, signal.SIGHUP)
        await poll(lambda: generation(server) == 1, 60, "the upgrade")
        await _run_with_a_denied_file(server.url, tmp_path)
        assert _scratch_of(server.pid) == [before]
    finally:
        assert await server.stop() == 0
    assert _scratch_of(server.pid) == []
