"""Named limits: what a client sees when it reaches each one, and that the server stays usable."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys

from tests.harness.httpserver import StalledBody, http_test_server
from tests.harness.servers import ours_command
from tests.harness.wire import WireClient, process_params
from tests.server.conftest import StartServer

# Prints `<tag>NNNNNN\n` lines (8 bytes each), 4000 bytes per write.
LINES = (
    "import os, sys\n"
    "tag = sys.argv[1].encode()\n"
    "data = b''.join(tag + b'%06d\\n' % i for i in range(int(sys.argv[2])))\n"
    "for k in range(0, len(data), 4000): os.write(1, data[k:k + 4000])\n"
)


def lines(tag: str, count: int) -> bytes:
    return b"".join(tag.encode() + b"%06d\n" % i for i in range(count))


async def retained_output(client: WireClient, process_id: str) -> tuple[int, bytes]:
    """(seq of the first retained chunk, the retained stdout) of a finished process."""
    response = await client.request("process/read", {"processId": process_id, "afterSeq": 0})
    chunks = response["result"]["chunks"]
    return chunks[0]["seq"], b"".join(base64.b64decode(c["chunk"]) for c in chunks)


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
    # a detached session can still be resumed while there is room ...
    await first.close()
    back = await WireClient.connect(url)
    for _ in range(100):
        resumed = await back.initialize(resume=session)
        if "result" in resumed:
            break
        await back.close()
        back = await WireClient.connect(url)
    assert resumed["result"]["sessionId"] == session
    await back.close()
    # ... and an idle detached session makes room for a new client (no lockout)
    fourth = await WireClient.connect(url)
    for _ in range(100):
        created = await fourth.initialize()
        if "result" in created:
            break
        await fourth.close()
        fourth = await WireClient.connect(url)
    assert "result" in created, created
    gone = await WireClient.connect(url)
    assert (await gone.initialize(resume=session))["error"]["message"] == (
        f"unknown session id {session}"
    )
    await gone.close()
    await fourth.close()
    await second.close()


async def test_limit_retained_output_per_server(start_server: StartServer) -> None:
    """Past the server-wide budget the oldest output anywhere is dropped, whole chunks first,
    and what stays is an exact suffix; the newest process keeps all of its output."""
    limit = 300_000
    _, url = await start_server(max_retained_output=limit)
    async with await WireClient.connect(url) as first, await WireClient.connect(url) as second:
        await first.initialize()
        await second.initialize()
        await first.request(
            "process/start", process_params("a", [sys.executable, "-c", LINES, "a", "25000"])
        )
        await first.process_events("a")
        await second.request(
            "process/start", process_params("b", [sys.executable, "-c", LINES, "b", "25000"])
        )
        await second.process_events("b")
        first_seq, a_kept = await retained_output(first, "a")
        b_seq, b_kept = await retained_output(second, "b")
    assert b_seq == 1 and b_kept == lines("b", 25000)
    assert first_seq > 1, "the oldest output should have been evicted"
    assert lines("a", 25000).endswith(a_kept) and a_kept
    # at most one (pipe-read sized) chunk of headroom is left unused
    assert limit - 65536 < len(a_kept) + len(b_kept) <= limit


async def test_limit_http_streams_per_connection(start_server: StartServer) -> None:
    _, url = await start_server(max_http_streams=2)
    async with http_test_server() as http, await WireClient.connect(url) as client:
        stalls = [StalledBody(b"head", b"tail", then="finish") for _ in range(2)]
        for index, stall in enumerate(stalls):
            http.route(f"/s{index}", stall)
        http.route("/s2", StalledBody(b"x", then="finish"))
        await client.initialize()

        def stream(request_id: str, path: str) -> dict[str, object]:
            return {
                "method": "GET",
                "url": http.url(path),
                "requestId": request_id,
                "streamResponse": True,
            }

        for index in range(2):
            response = await client.request("http/request", stream(f"r{index}", f"/s{index}"))
            assert response["result"]["status"] == 200, response
        refused = await client.request("http/request", stream("r2", "/s2"))
        assert refused["error"]["code"] == -32600
        assert refused["error"]["message"].startswith(
            "too many streamed http/request bodies open on this connection (limit 2)"
        )
        # a buffered request is not a stream
        buffered = await client.request(
            "http/request", {"method": "GET", "url": http.url("/nothing"), "requestId": "b"}
        )
        assert buffered.get("result", {}).get("status") == 404, buffered
        stalls[0].release.set()
        await client.wait_for(
            lambda m: (
                m.get("method") == "http/request/bodyDelta"
                and m["params"]["requestId"] == "r0"
                and m["params"]["done"]
            )
        )
        again = await client.request("http/request", stream("r2", "/s2"))
        assert again["result"]["status"] == 200, again


def test_limit_flags_are_validated() -> None:
    for flag in (
        "--max-sessions",
        "--max-processes-per-session",
        "--max-retained-output",
        "--max-http-streams",
    ):
        result = subprocess.run(
            ours_command(extra=[flag, "0"]), capture_output=True, timeout=20, check=False
        )
        assert result.returncode == 2, (flag, result.stderr)
