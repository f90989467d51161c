"""fs/writeFile survives the server being killed mid-write: the target is old or new, never torn,
and no temporary file is left behind."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
from pathlib import Path

from tests.harness.servers import start_server
from tests.harness.wire import WireClient

MiB = 1024 * 1024
OLD = b"old content\n" * 1000
NEW = os.urandom(40 * MiB)  # large enough that the write takes a while; fits one message
DELAYS_S = [0.0, 0.01, 0.03, 0.06, 0.1, 0.15, 0.2, 0.3, 0.45, 0.7, 1.5, 3.0]


async def test_write_file_killed_mid_write_is_old_or_new(tmp_path: Path) -> None:
    target = tmp_path / "target.bin"
    request = json.dumps(
        {
            "id": 1,
            "method": "fs/writeFile",
            "params": {"path": f"file://{target}", "dataBase64": base64.b64encode(NEW).decode()},
        }
    )
    # One message in 4 MiB fragments (a single frame may not exceed 16 MiB).
    fragments = [request[i : i + 4 * MiB] for i in range(0, len(request), 4 * MiB)]
    new_digest = hashlib.sha256(NEW).digest()
    outcomes = {"old": 0, "new": 0}
    for delay in DELAYS_S:
        target.write_bytes(OLD)
        server = await start_server("ours", tmp_path)
        try:
            client = await WireClient.connect(server.url, max_size=None)
            await client.initialize()
            await client.ws.send(fragments)
            await asyncio.sleep(delay)
            os.kill(server.pid, signal.SIGKILL)
            await server.process.wait()
            await client.close()
        finally:
            await server.stop()
        data = target.read_bytes()
        # the data went into an unnamed temporary file: a kill leaves no temp file behind
        assert not list(tmp_path.glob(".target.bin.execserver-*")), f"temp file left at {delay}"
        if data == OLD:
            outcomes["old"] += 1
        else:
            assert hashlib.sha256(data).digest() == new_digest, (
                f"torn file after a kill {delay} s into the write: {len(data)} bytes"
            )
            outcomes["new"] += 1
    # The delays span the write, so both outcomes must have happened at least once; otherwise
    # this test did not probe the middle of a write at all.
    assert outcomes["old"] >= 1 and outcomes["new"] >= 1, outcomes
