"""Sessions across connections: detach, resume, TTL expiry, retention of finished processes."""

from __future__ import annotations

import asyncio
import base64
import uuid

from tests.harness.procfs import is_alive, sleeper, wait_all_dead, wait_for_marked
from tests.harness.wire import WireClient, process_params
from tests.server.conftest import StartServer


async def resume(url: str, session_id: str) -> tuple[WireClient, dict[str, object]]:
    """Resume `session_id`, retrying while the server has not yet noticed the old connection
    is gone (-32010)."""
    for _ in range(100):
        client = await WireClient.connect(url)
        response = await client.initialize(resume=session_id)
        if response.get("error", {}).get("code") != -32010:
            return client, response
        await client.close()
        await asyncio.sleep(0.02)
    raise AssertionError("session stayed attached")


async def test_session_output_accumulates_while_detached(start_server: StartServer) -> None:
    """Output produced while no client is attached is retained and readable after resume."""
    _, url = await start_server()
    client = await WireClient.connect(url)
    session_id = (await client.initialize())["result"]["sessionId"]
    script = "read go; echo one; echo two; sleep 0.2; echo three"
    await client.request("process/start", process_params("p", ["sh", "-c", script], pipeStdin=True))
    await client.request(
        "process/write",
        {"processId": "p", "chunk": base64.b64encode(b"x\n").decode(), "writeId": "1"},
    )
    await client.close()
    await asyncio.sleep(0.6)  # the process finishes while detached
    again, response = await resume(url, session_id)
    assert response["result"]["sessionId"] == session_id
    read = (await again.request("process/read", {"processId": "p"}))["result"]
    data = b"".join(base64.b64decode(c["chunk"]) for c in read["chunks"])
    assert data == b"one\ntwo\nthree\n"
    assert read["exited"] and read["closed"] and read["exitCode"] == 0
    # Notifications produced while detached are not replayed.
    assert again.notifications("process/output") == []
    await again.close()


async def test_session_ttl_kills_process_trees(start_server: StartServer) -> None:
    """A session left detached past its TTL is expired: processes die, the id is forgotten."""
    _, url = await start_server(session_ttl_s=0.3)
    marker = f"ttl-{uuid.uuid4().hex}"
    client = await WireClient.connect(url)
    session_id = (await client.initialize())["result"]["sessionId"]
    await client.request("process/start", process_params("p", sleeper(marker)))
    pids = await wait_for_marked(marker, 1)
    assert len(pids) == 1
    await client.close()
    assert await wait_all_dead(pids)
    late = await WireClient.connect(url)
    response = await late.initialize(resume=session_id)
    assert response == {
        "error": {"code": -32600, "message": f"unknown session id {session_id}"},
        "id": response["id"],
    }
    await late.close()


async def test_session_resume_before_ttl_keeps_processes(start_server: StartServer) -> None:
    """Resuming within the TTL cancels the expiry."""
    _, url = await start_server(session_ttl_s=0.5)
    client = await WireClient.connect(url)
    session_id = (await client.initialize())["result"]["sessionId"]
    await client.request("process/start", process_params("p", ["sleep", "30"]))
    await client.close()
    again, _ = await resume(url, session_id)
    await asyncio.sleep(0.8)
    read = await again.request("process/read", {"processId": "p"})
    assert read["result"]["exited"] is False
    assert (await again.request("process/terminate", {"processId": "p"}))["result"] == {
        "running": True
    }
    await again.close()


async def test_closed_process_retention_expires(start_server: StartServer) -> None:
    """A closed process stays readable for the retention period, then its id is free again."""
    _, url = await start_server(closed_process_retention_s=0.2)
    async with await WireClient.connect(url) as client:
        await client.initialize()
        await client.request("process/start", process_params("p", ["true"]))
        await client.process_events("p")
        assert "result" in await client.request("process/read", {"processId": "p"})
        duplicate = await client.request("process/start", process_params("p", ["true"]))
        assert duplicate["error"] == {"code": -32600, "message": "process p already exists"}
        await asyncio.sleep(0.4)
        gone = await client.request("process/read", {"processId": "p"})
        assert gone["error"] == {"code": -32600, "message": "unknown process id p"}
        again = await client.request("process/start", process_params("p", ["true"]))
        assert again["result"] == {"processId": "p", "sandboxType": "none"}


async def test_running_process_is_never_expired_by_retention(start_server: StartServer) -> None:
    """Retention starts at close: a long-running process stays in the table."""
    _, url = await start_server(closed_process_retention_s=0.1)
    async with await WireClient.connect(url) as client:
        await client.initialize()
        await client.request("process/start", process_params("p", ["sleep", "30"]))
        await asyncio.sleep(0.3)
        read = await client.request("process/read", {"processId": "p"})
        assert read["result"]["exited"] is False
        await client.request("process/terminate", {"processId": "p"})


async def test_session_shutdown_kills_every_session(start_server: StartServer) -> None:
    """Closing the server kills the trees of attached and detached sessions alike."""
    server, url = await start_server()
    marker = f"shutdown-{uuid.uuid4().hex}"
    attached = await WireClient.connect(url)
    await attached.initialize()
    await attached.request("process/start", process_params("a", sleeper(marker)))
    detached = await WireClient.connect(url)
    await detached.initialize()
    await detached.request("process/start", process_params("b", sleeper(marker)))
    await detached.close()
    pids = await wait_for_marked(marker, 2)
    assert len(pids) == 2
    await server.aclose()
    assert not any(is_alive(pid) for pid in pids)
    await attached.close()
