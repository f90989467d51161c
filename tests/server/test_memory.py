"""Large transfers through block handles keep the server's memory bounded."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from pathlib import Path

from tests.harness.procfs import managed_children
from tests.harness.rawws import RawWebSocket
from tests.harness.servers import start_server
from tests.harness.wire import WireClient

MiB = 1024 * 1024
# Peak resident memory allowed for a server that streamed 256 MiB out and 64 MiB in: far below
# the data sizes, so no whole-file buffering can hide in the block path.
PEAK_RSS_LIMIT = 160 * MiB


def peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


async def test_memory_block_streams_are_bounded(tmp_path: Path) -> None:
    """A 256 MiB readBlock stream and a 64 MiB writeBlock stream keep peak RSS bounded."""
    source = tmp_path / "source.bin"
    block = os.urandom(MiB)
    with open(source, "wb") as f:
        for _ in range(256):
            f.write(block)
    server = await start_server("ours", tmp_path)
    try:
        async with await WireClient.connect(server.url) as client:
            await client.initialize()
            await client.request("fs/open", {"handleId": "r", "path": f"file://{source}"})
            offset = 0
            while True:
                response = await client.request(
                    "fs/readBlock", {"handleId": "r", "offset": offset, "len": MiB}
                )
                offset += len(base64.b64decode(response["result"]["chunk"]))
                client.messages.clear()
                if response["result"]["eof"]:
                    break
            assert offset == 256 * MiB
            target = tmp_path / "target.bin"
            await client.request(
                "fs/open", {"handleId": "w", "path": f"file://{target}", "mode": "replace"}
            )
            encoded = base64.b64encode(block).decode()
            for index in range(64):
                response = await client.request(
                    "fs/writeBlock", {"handleId": "w", "offset": index * MiB, "chunk": encoded}
                )
                assert response["result"] == {}
                client.messages.clear()
            await client.request("fs/close", {"handleId": "w"})
            assert target.stat().st_size == 64 * MiB
            assert peak_rss(server.pid) < PEAK_RSS_LIMIT
    finally:
        await server.stop()


NOISY = "import os\nblock = b'y' * 65536\nfor _ in range(512): os.write(1, block)\n"
NOISY_BYTES = 512 * 65536


async def test_memory_client_that_stops_reading_is_bounded(tmp_path: Path) -> None:
    """A client that sends requests with large answers while a process floods output, but reads
    nothing: the server's memory stays bounded (output reading pauses, later requests wait),
    and once the client reads again every answer and every output byte arrives, in order."""
    source = tmp_path / "four.bin"
    source.write_bytes(os.urandom(4 * MiB))
    server = await start_server("ours", tmp_path)
    try:
        async with await RawWebSocket.connect(server.url, receive_buffer=65536) as ws:
            await ws.send_text(
                json.dumps({"id": 0, "method": "initialize", "params": {"clientName": "slow"}})
            )
            await ws.send_text(json.dumps({"method": "initialized"}))
            start = {
                "processId": "noisy",
                "argv": [sys.executable, "-c", NOISY],
                "cwd": f"file://{tmp_path}",
                "env": {},
                "tty": False,
                "arg0": None,
            }
            await ws.send_text(json.dumps({"id": 1, "method": "process/start", "params": start}))
            ids = [0, 1]
            # ~220 MiB of readFile answers and ~260 MiB of process/read answers if buffered
            for index in range(40):
                ids.append(100 + index)
                request = {
                    "id": ids[-1],
                    "method": "fs/readFile",
                    "params": {"path": f"file://{source}"},
                }
                await ws.send_text(json.dumps(request))
            for index in range(200):
                ids.append(1000 + index)
                request = {
                    "id": ids[-1],
                    "method": "process/read",
                    "params": {"processId": "noisy", "afterSeq": 0},
                }
                await ws.send_text(json.dumps(request))
            await asyncio.sleep(3)
            # the flood is paused: the process is still blocked writing its output
            assert managed_children(server.pid), (
                "the noisy process finished: its output was not paused"
            )
            assert peak_rss(server.pid) < PEAK_RSS_LIMIT
            answered: dict[int, dict[str, object]] = {}
            output = bytearray()
            seqs: list[int] = []
            closed = False
            async with asyncio.timeout(120):
                while len(answered) < len(ids) or not closed:
                    text = await ws.recv_text(timeout=60)
                    assert text is not None, "connection lost"
                    message = json.loads(text)
                    if "id" in message:
                        assert "result" in message, message
                        answered[message["id"]] = message
                    elif message["method"] == "process/output":
                        seqs.append(message["params"]["seq"])
                        output += base64.b64decode(message["params"]["chunk"])
                    elif message["method"] == "process/closed":
                        closed = True
            assert sorted(answered) == sorted(ids)
            assert seqs == list(range(1, len(seqs) + 1))
            assert output == b"y" * NOISY_BYTES
            assert peak_rss(server.pid) < PEAK_RSS_LIMIT
    finally:
        await server.stop()
