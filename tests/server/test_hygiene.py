"""No zombies and no orphans: hostile process trees die with their process, session or server.

Each tree tags every process it creates with a marker in its command line, so the test can
find them wherever they went (another session, another process group, reparented to the
server as subreaper or to init). The trees:

* `double-fork`: a grandchild orphaned at once (its parent exits), so it is reparented;
* `setsid-daemon`: a daemon in its own session whose parent exits at once;
* `ignores-term`: a child that ignores SIGTERM (only SIGKILL ends it);
* `holds-pipes`: a background child that keeps the process's stdout and stderr open.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path

from tests.harness.procfs import pids_with_marker, wait_all_dead, wait_for_marked, zombies_of
from tests.harness.servers import RunningServer, start_server
from tests.harness.wire import WireClient, process_params

PY = sys.executable
SLEEP = "import time; time.sleep(120)"
IGNORE_TERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"


def trees(marker: str) -> dict[str, tuple[list[str], int]]:
    """name -> (argv, how many marked processes it leaves running)."""
    sleeper = f"{PY} -c '{SLEEP}' {marker}"
    return {
        "double-fork": (["/bin/sh", "-c", f"( {sleeper} & ) ; exec {sleeper}"], 2),
        "setsid-daemon": (["/bin/sh", "-c", f"setsid {sleeper} > /dev/null 2>&1 & exit 0"], 1),
        "ignores-term": (
            ["/bin/sh", "-c", f"{PY} -c '{IGNORE_TERM}' {marker} & exec {sleeper}"],
            2,
        ),
        "holds-pipes": (["/bin/sh", "-c", f"{sleeper} & exit 0"], 1),
    }


async def start_trees(client: WireClient, marker: str, prefix: str) -> list[int]:
    expected = 0
    for name, (argv, count) in trees(marker).items():
        await client.request("process/start", process_params(f"{prefix}-{name}", argv))
        expected += count
    pids = await wait_for_marked(marker, expected)
    assert len(pids) == expected, (pids, expected)
    return pids


def uses_cgroups(server: RunningServer) -> bool:
    """Whether the server tracks its processes in cgroups (local/cgroup.py) on this host."""
    return any(Path("/sys/fs/cgroup/pids").rglob(f"execserver-{server.pid}"))


def assert_no_zombies(server: RunningServer) -> None:
    assert zombies_of(server.pid) == []


async def test_hygiene_terminate_disconnect_expiry_and_shutdown(tmp_path: Path) -> None:
    server = await start_server("ours", tmp_path, extra=["--session-ttl", "1", "--process-cgroups"])
    run = uuid.uuid4().hex
    try:
        # 1. process/terminate kills each whole tree, even where the direct child is gone
        #    (that needs the cgroups; without them daemons wait for the session's end).
        marker = f"hyg-term-{run}"
        async with await WireClient.connect(server.url) as client:
            await client.initialize()
            pids = await start_trees(client, marker, "t")
            for name in trees(marker):
                await client.request("process/terminate", {"processId": f"t-{name}"})
            if uses_cgroups(server):
                assert await wait_all_dead(pids), pids_with_marker(marker)
        assert_no_zombies(server)

        # 2. A disconnected session keeps its trees until its TTL, then they all die.
        marker = f"hyg-ttl-{run}"
        async with await WireClient.connect(server.url) as client:
            await client.initialize()
            pids = await start_trees(client, marker, "d")
        await asyncio.sleep(0.3)
        assert pids_with_marker(marker), "detached processes must survive until the TTL"
        if uses_cgroups(server):
            assert await wait_all_dead(pids, timeout=15), pids_with_marker(marker)
        assert_no_zombies(server)

        # 3. Shutdown kills every tree of every session, attached or not.
        marker = f"hyg-stop-{run}"
        attached = await WireClient.connect(server.url)
        await attached.initialize()
        pids = await start_trees(attached, marker, "a")
        async with await WireClient.connect(server.url) as other:
            await other.initialize()
            pids += await start_trees(other, marker + "-b", "b")
        assert await server.stop() == 0
        await attached.close()
        # Whatever the host allows, nothing the server started outlives it.
        assert await wait_all_dead(pids), pids_with_marker(marker)
        assert pids_with_marker(run) == []
    finally:
        await server.stop()
