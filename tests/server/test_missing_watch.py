"""`fs/watchMissing` belongs to its connection: its inotify instance is released when the
watch fires, is replaced, or the connection closes (our server only: the reference's
internals are not observable this way)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tests.conftest import TIME, ServerProcess
from tests.harness.wire import WireClient


def inotify_fds(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:inotify":
                count += 1
        except OSError:
            pass
    return count


async def wait_for_count(pid: int, expected: int) -> None:
    """Poll with a deadline: the release happens on the server's own schedule."""
    async with asyncio.timeout(10 * TIME):
        while inotify_fds(pid) != expected:  # noqa: ASYNC110 - another process's state
            await asyncio.sleep(0.02)


async def test_watch_released_when_the_connection_closes(
    ours: ServerProcess, tmp_path: Path
) -> None:
    """A live watch's inotify instance is closed with its connection; replacing or firing a
    watch leaves exactly one (or none) behind."""
    before = inotify_fds(ours.pid)
    client = await WireClient.connect(ours.url)
    await client.initialize()
    params = {"watchId": 1, "missing": [f"file://{tmp_path}/a"]}
    assert (await client.request("fs/watchMissing", params))["result"] == {"watching": True}
    await wait_for_count(ours.pid, before + 1)
    params = {"watchId": 2, "missing": [f"file://{tmp_path}/b"]}
    assert (await client.request("fs/watchMissing", params))["result"] == {"watching": True}
    await wait_for_count(ours.pid, before + 1)  # the first one was replaced, not kept
    (tmp_path / "b").mkdir()
    await client.wait_for(lambda m: m.get("method") == "fs/missingChanged")
    await wait_for_count(ours.pid, before)  # fired: gone
    params = {"watchId": 3, "missing": [f"file://{tmp_path}/c"]}
    assert (await client.request("fs/watchMissing", params))["result"] == {"watching": True}
    await wait_for_count(ours.pid, before + 1)
    await client.close()
    await wait_for_count(ours.pid, before)
