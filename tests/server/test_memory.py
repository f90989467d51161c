"""Large transfers through block handles keep the server's memory bounded."""

from __future__ import annotations

import base64
import os
from pathlib import Path

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
