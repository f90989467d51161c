"""Named limits: what a client sees when it reaches each one, and that the server stays usable."""

from __future__ import annotations

import asyncio
import subprocess

from tests.harness.servers import ours_command
from tests.harness.wire import WireClient, process_params
from tests.server.conftest import StartServer


async def test_limit_processes_per_session(start_server: StartServer) -> None:
    _, url = await start_server(max_processes_per_session=3, closed_process_retention_s=0.2)
    async with await WireClient.connect(url) as client:
        await client.initialize()
        for index in range(3):
            response = await client.request("process/start", process_params(f"p{index}", ["true"]))
            assert "result" in response, response
        refused = await client.request("process/start", process_params("p3", ["true"]))
        assert refused["error"]["code"] == -32600
        assert refused["error"]["message"].startswith("too many processes in this session (limit 3")
        # finished entries expire after the retention time, and their slots come back
        for index in range(3):
            await client.process_events(f"p{index}")
        for _ in range(100):
            again = await client.request("process/start", process_params("p3", ["true"]))
            if "result" in again:
                break
            await asyncio.sleep(0.05)
        assert "result" in again, again
    # another session has its own budget
    async with await WireClient.connect(url) as other:
        await other.initialize()
        response = await other.request("process/start", process_params("p0", ["true"]))
        assert "result" in response


async def test_limit_sessions(start_server: StartServer) -> None:
    _, url = await start_server(max_sessions=2, session_ttl_s=30)
    first = await WireClient.connect(url)
    session = (await first.initialize())["result"]["sessionId"]
    second = await WireClient.connect(url)
    await second.initialize()
    third = await WireClient.connect(url)
    refused = await third.initialize()
    assert refused["error"]["code"] == -32600
    assert refused["error"]["message"].startswith("too many sessions on this server (limit 2")
    await third.close()
    # a detached session still counts, and can still be resumed
    await first.close()
    fourth = await WireClient.connect(url)
    assert "error" in await fourth.initialize()
    await fourth.close()
    back = await WireClient.connect(url)
    for _ in range(100):
        resumed = await back.initialize(resume=session)
        if "result" in resumed:
            break
        await back.close()
        back = await WireClient.connect(url)
    assert resumed["result"]["sessionId"] == session
    await back.close()
    await second.close()


def test_limit_flags_are_validated() -> None:
    for flag in ("--max-sessions", "--max-processes-per-session"):
        result = subprocess.run(
            ours_command(extra=[flag, "0"]), capture_output=True, timeout=20, check=False
        )
        assert result.returncode == 2, (flag, result.stderr)
