"""Process behaviour beyond the differential cases: ordering, retention, trees, pipelining."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import uuid

from execserver.server.app import ExecServer
from execserver.transport.websocket import WebSocketServerConnection
from tests.harness.procfs import sleeper, wait_all_dead, wait_for_marked
from tests.harness.wire import WireClient, process_params
from tests.server.conftest import StartServer


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_process_retained_output_is_the_newest_mebibyte(start_server: StartServer) -> None:
    """Past 1 MiB, whole oldest chunks are evicted; the tail is intact and seqs keep counting."""
    _, url = await start_server()
    async with await WireClient.connect(url) as client:
        await client.initialize()
        code = "import sys\nfor i in range(300000): sys.stdout.write('%09d\\n' % i)"
        await client.request("process/start", process_params("big", ["python3", "-c", code]))
        await client.process_events("big", timeout=30)
        read = (await client.request("process/read", {"processId": "big"}))["result"]
        data = b"".join(base64.b64decode(c["chunk"]) for c in read["chunks"])
        assert 0 < len(data) <= 1024 * 1024
        assert data.endswith(b"000299999\n")
        assert read["chunks"][0]["seq"] > 1
        assert b"000000000\n" not in data
        expected_tail = b"".join(b"%09d\n" % i for i in range(300000))[-len(data) :]
        assert data == expected_tail


async def test_process_long_poll_does_not_delay_other_requests(start_server: StartServer) -> None:
    """A pending long poll does not hold back later requests on the same connection."""
    _, url = await start_server()
    async with await WireClient.connect(url) as client:
        await client.initialize()
        await client.request("process/start", process_params("quiet", ["sleep", "30"]))
        await client.send(
            {
                "id": "poll",
                "method": "process/read",
                "params": {"processId": "quiet", "waitMs": 5000},
            }
        )
        status = await client.request("environment/status", timeout=1.0)
        assert status["result"] == {"status": "ready"}
        assert not any(m.get("id") == "poll" for m in client.messages)
        await client.request("process/terminate", {"processId": "quiet"})
        poll = await client.response("poll")
        assert poll["result"]["exited"] is True


async def test_process_requests_apply_in_arrival_order(start_server: StartServer) -> None:
    """Pipelined writes and a terminate on one process take effect in the order sent."""
    _, url = await start_server()
    async with await WireClient.connect(url) as client:
        await client.initialize()
        await client.request("process/start", process_params("cat", ["cat"], pipeStdin=True))
        for index, piece in enumerate([b"a", b"b", b"c", b"d\n"]):
            await client.send(
                {
                    "id": index,
                    "method": "process/write",
                    "params": {"processId": "cat", "chunk": b64(piece), "writeId": str(index)},
                }
            )
        # cat echoes as it reads, possibly in several chunks; "d\n" comes last.
        await client.wait_for(
            lambda m: (
                m.get("method") == "process/output"
                and base64.b64decode(m["params"]["chunk"]).endswith(b"\n")
            )
        )
        await client.send(
            {"id": "t", "method": "process/terminate", "params": {"processId": "cat"}}
        )
        for index in range(4):
            assert (await client.response(index))["result"] == {"status": "accepted"}
        events = await client.process_events("cat")
        output = b"".join(
            base64.b64decode(e["params"]["chunk"])
            for e in events
            if e["method"] == "process/output"
        )
        assert output == b"abcd\n"


async def test_process_terminate_kills_the_whole_tree(start_server: StartServer) -> None:
    """terminate also kills descendants that left the process group (setsid)."""
    _, url = await start_server()
    marker = f"tree-{uuid.uuid4().hex}"
    inner = " ".join(f"'{arg}'" for arg in sleeper(marker))
    script = f"setsid {inner} & {inner} & wait"
    async with await WireClient.connect(url) as client:
        await client.initialize()
        await client.request("process/start", process_params("tree", ["sh", "-c", script]))
        # The outer shell's command line carries the marker too.
        pids = await wait_for_marked(marker, 3)
        assert len(pids) == 3
        assert (await client.request("process/terminate", {"processId": "tree"}))["result"] == {
            "running": True
        }
        await client.process_events("tree")
        assert await wait_all_dead(pids)


async def test_process_pty_signal_death_reports_128_plus_n(start_server: StartServer) -> None:
    """A PTY child killed by SIGINT exits with 130, like a pipe child (deliberate difference)."""
    _, url = await start_server()
    async with await WireClient.connect(url) as client:
        await client.initialize()
        await client.request(
            "process/start", process_params("t", ["sh", "-c", "kill -INT $$"], tty=True)
        )
        events = await client.process_events("t")
        exited = [e for e in events if e["method"] == "process/exited"]
        assert exited[0]["params"]["exitCode"] == 130


async def test_process_interrupt_reaches_pty_foreground_group(start_server: StartServer) -> None:
    """process/signal interrupt on a PTY process stops its foreground job like ^C does."""
    _, url = await start_server()
    async with await WireClient.connect(url) as client:
        await client.initialize()
        await client.request(
            "process/start", process_params("t", ["sh", "-c", "sleep 30; echo after"], tty=True)
        )
        await asyncio.sleep(0.2)
        await client.request("process/signal", {"processId": "t", "signal": "interrupt"})
        events = await client.process_events("t", timeout=5)
        exited = [e for e in events if e["method"] == "process/exited"]
        assert exited[0]["params"]["exitCode"] == 130


async def test_process_accepted_sockets_have_nodelay(start_server: StartServer) -> None:
    """Every accepted WebSocket has TCP_NODELAY (the reference keeps Nagle on)."""
    server, url = await start_server()
    async with await WireClient.connect(url) as client:
        await client.initialize()
        channels = [c.channel for c in _connections(server)]
        assert channels
        for channel in channels:
            assert isinstance(channel, WebSocketServerConnection)
            sock = channel.transport_socket()
            assert sock is not None
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def _connections(server: ExecServer) -> list:  # type: ignore[type-arg]
    return list(server._connections)


async def test_process_exit_with_chatty_grandchild_is_reported(start_server: StartServer) -> None:
    """A grandchild that writes without pause does not stall the child's exit report."""
    _, url = await start_server()
    async with await WireClient.connect(url) as client:
        await client.initialize()
        await client.request(
            "process/start", process_params("chatty", ["sh", "-c", "yes & exit 7"])
        )
        exited = await client.wait_for(lambda m: m.get("method") == "process/exited", timeout=10)
        assert exited["params"]["exitCode"] == 7
        assert (await client.request("environment/status"))["result"] == {"status": "ready"}
        await client.request("process/terminate", {"processId": "chatty"})
        await client.process_events("chatty")


async def test_process_close_stdin_statuses(start_server: StartServer) -> None:
    """process/closeStdin (extension): EOF for pipeStdin, stdinClosed without it, unknown ids."""
    _, url = await start_server()
    async with await WireClient.connect(url) as client:
        await client.initialize()
        await client.request("process/start", process_params("wc", ["wc", "-c"], pipeStdin=True))
        await client.request("process/start", process_params("nostdin", ["sleep", "30"]))
        await client.request(
            "process/write", {"processId": "wc", "chunk": b64(b"12345"), "writeId": "1"}
        )
        close = {"processId": "wc"}
        assert (await client.request("process/closeStdin", close))["result"] == {
            "status": "accepted"
        }
        assert (await client.request("process/closeStdin", close))["result"] == {
            "status": "stdinClosed"
        }
        events = await client.process_events("wc")
        out = b"".join(
            base64.b64decode(e["params"]["chunk"])
            for e in events
            if e["method"] == "process/output"
        )
        assert out.strip() == b"5"
        for process_id, status in [("nostdin", "stdinClosed"), ("ghost", "unknownProcess")]:
            response = await client.request("process/closeStdin", {"processId": process_id})
            assert response["result"] == {"status": status}
        await client.request("process/terminate", {"processId": "nostdin"})


async def test_process_close_stdin_after_every_queued_write(start_server: StartServer) -> None:
    """closeStdin while writes are still queued (the child has not read yet): EOF comes after
    every accepted byte, none is dropped (a piped `execserver run` lost its tail once)."""
    _, url = await start_server()
    data = os.urandom(2 * 1024 * 1024)
    async with await WireClient.connect(url) as client:
        await client.initialize()
        argv = ["sh", "-c", "sleep 0.5; sha256sum"]
        await client.request("process/start", process_params("p", argv, pipeStdin=True))
        for index in range(0, len(data), 256 * 1024):
            chunk = b64(data[index : index + 256 * 1024])
            params = {"processId": "p", "chunk": chunk, "writeId": f"w{index}"}
            assert (await client.request("process/write", params))["result"] == {
                "status": "accepted"
            }
        close = await client.request("process/closeStdin", {"processId": "p"})
        assert close["result"] == {"status": "accepted"}
        events = await client.process_events("p")
    stdout = b"".join(
        base64.b64decode(e["params"]["chunk"]) for e in events if e["method"] == "process/output"
    )
    assert stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()
