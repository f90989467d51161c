"""A crash of the server leaves no managed process running (issue 22 item 9).

A real server is SIGKILLed (it runs no cleanup at all) while it has running trees: a plain
child, a `setsid` daemon whose parent exited, a double-forked orphan. The crash watchdog
(local/crash_guard.py) must kill them all and remove the server's cgroups. Needs per-process
cgroups (skips without a writable hierarchy, unless CI=true).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from execserver.local.cgroup import ProcessCgroups
from tests.conftest import TIME
from tests.harness.procfs import children, pids_with_marker, wait_all_dead, wait_for_marked
from tests.harness.servers import start_server
from tests.harness.wire import WireClient, process_params

PY = sys.executable
SLEEP = "import time; time.sleep(120)"


def _cgroups_available() -> bool:
    cgroups = ProcessCgroups.create()
    try:
        return cgroups.enabled
    finally:
        cgroups.close()


pytestmark = pytest.mark.skipif(
    not _cgroups_available() and os.environ.get("CI") != "true",
    reason="no writable cgroup hierarchy on this host",
)


def _bases(server_pid: int) -> list[Path]:
    return [
        path for path in Path("/sys/fs/cgroup").glob(f"**/execserver-{server_pid}") if path.is_dir()
    ]


async def test_sigkill_of_the_server_leaves_nothing(tmp_path: Path) -> None:
    server = await start_server("ours", tmp_path)
    marker = f"crash-{uuid.uuid4().hex}"
    sleeper = f"{PY} -c '{SLEEP}' {marker}"
    try:
        async with await WireClient.connect(server.url) as client:
            await client.initialize()
            for process_id, script in [
                ("plain", f"exec {sleeper}"),
                ("daemon", f"setsid {sleeper} > /dev/null 2>&1 & exit 0"),
                ("double-fork", f"( {sleeper} > /dev/null 2>&1 & ) ; exit 0"),
            ]:
                response = await client.request(
                    "process/start", process_params(process_id, ["/bin/sh", "-c", script])
                )
                assert "result" in response, response
            pids = await wait_for_marked(marker, 3)
            assert len(pids) == 3
            assert _bases(server.pid), "the server tracks its processes in cgroups"
            watchdogs = [
                pid
                for pid in children(server.pid)
                if b"watchdog.py" in Path(f"/proc/{pid}/cmdline").read_bytes()
            ]
            assert len(watchdogs) == 1
            os.kill(server.pid, signal.SIGKILL)  # no cleanup runs in the server
            await server.stop()  # reaps it (its status may be seen by another reaper first)
        assert await wait_all_dead(pids, timeout=10 * TIME), pids_with_marker(marker)
        assert await wait_all_dead(watchdogs, timeout=10 * TIME)
        assert _bases(server.pid) == []
    finally:
        await server.stop()


async def _until(predicate: Callable[[], bool]) -> None:
    """Poll /proc facts (no event to wait on) until `predicate` holds, with a deadline."""
    async with asyncio.timeout(10 * TIME):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)


def _in_select(pid: int) -> bool:
    """The watchdog blocks in select(2) on the server's pidfd (x86-64: select 23, pselect6 270)."""
    try:
        return Path(f"/proc/{pid}/syscall").read_text().split()[0] in ("23", "270")
    except (OSError, IndexError):
        return False


async def test_watchdog_survives_exec_of_the_server() -> None:
    """A pidfd wakes on the process's end, not on execve: a watched process that re-executes
    itself in place (as an upgrade does) keeps its guarded cgroup until it really exits."""
    base = Path("/sys/fs/cgroup/pids") / f"execserver-exec-test-{uuid.uuid4().hex[:8]}"
    base.mkdir()
    (base / "p1").mkdir()
    script = Path(__file__).resolve().parents[2] / "src/execserver/local/watchdog.py"
    try:
        # The "server": reads a line, execs itself into another shell, reads another line.
        server = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            "read a; exec /bin/sh -c 'read b' after-exec",
            stdin=asyncio.subprocess.PIPE,
        )
        assert server.stdin is not None
        marker = f"exec-{uuid.uuid4().hex}"
        victim = await asyncio.create_subprocess_exec(PY, "-c", SLEEP, marker)
        (base / "p1" / "cgroup.procs").write_text(str(victim.pid))
        watchdog = await asyncio.create_subprocess_exec(
            PY, "-I", "-S", str(script), str(server.pid), str(base)
        )
        await _until(lambda: _in_select(watchdog.pid))
        server.stdin.write(b"one\n")
        await server.stdin.drain()
        cmdline = Path(f"/proc/{server.pid}/cmdline")
        await _until(lambda: b"after-exec" in cmdline.read_bytes())
        # Same pid, new program: the watchdog still waits and the victim lives.
        assert _in_select(watchdog.pid) and watchdog.returncode is None
        assert victim.returncode is None and pids_with_marker(marker) == [victim.pid]
        server.stdin.write(b"two\n")
        await server.stdin.drain()
        await server.wait()
        async with asyncio.timeout(10 * TIME):
            assert await watchdog.wait() == 0
            assert await victim.wait() == -signal.SIGKILL
        assert not base.exists()
    finally:
        for path in (base / "p1", base):
            if path.exists():
                for pid in (path / "cgroup.procs").read_text().split():
                    os.kill(int(pid), signal.SIGKILL)
                path.rmdir()
