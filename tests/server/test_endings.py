"""Honest endings (issue 20): a termination record for every reason, server-side timeouts,
limits enforced by cgroups with OOM kills attributed, whole-tree kill by default, process/wait.

Real processes, real cgroups (this host's v1 hierarchies; the v2 logic is unit-tested against a
fake cgroupfs in tests/unit/test_cgroup_v2.py). Tests that need enforceable limits skip where
the host has no writable cgroup hierarchy, unless CI=true.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import select
import sys
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

from execserver.local.cgroup import ProcessCgroups
from execserver.local.host import Host, HostConfig
from execserver.local.process import LocalProcess
from execserver.local.sandbox import bwrap
from execserver.protocol.base import dec_hook
from execserver.protocol.pathuri import PathUri
from execserver.protocol.process import ProcessLimits, ProcessStartParams
from execserver.protocol.sandbox import SandboxContext
from tests.conftest import TIME, require_bwrap
from tests.harness import servers
from tests.harness.polling import poll
from tests.harness.procfs import children, pids_with_marker, wait_all_dead, wait_for_marked
from tests.harness.wire import Json, WireClient, process_params
from tests.server.conftest import StartServer

PY = sys.executable
SLEEP = "import time; time.sleep(120)"
MIB = 1024 * 1024


def _host_cgroups() -> tuple[frozenset[str], str | None]:
    cgroups = ProcessCgroups.create()
    try:
        return cgroups.enforceable, cgroups.kind
    finally:
        cgroups.close()


HOST_LIMITS, HOST_CGROUPS = _host_cgroups()
NOT_ON_V2 = pytest.mark.skipif(
    HOST_CGROUPS == "v2",
    reason="cgroup v2 clones a child into its cgroup: no spawning thread moves between cgroups",
)


def needs_limits(*names: str) -> pytest.MarkDecorator:
    missing = set(names) - HOST_LIMITS
    return pytest.mark.skipif(
        bool(missing) and os.environ.get("CI") != "true",
        reason=f"this host cannot enforce {sorted(missing)} (no writable cgroup hierarchy)",
    )


async def connect(url: str, *, extensions: bool = True) -> WireClient:
    client = await WireClient.connect(url)
    params: Json = {"clientName": "endings"}
    if extensions:
        params["extensions"] = ["processEndings"]
    response = await client.request("initialize", params)
    assert "result" in response, response
    await client.notify("initialized", {})
    return client


async def run(client: WireClient, process_id: str, argv: list[str], **extra: Any) -> Json:
    """Start, wait for the close, return the `process/exited` params."""
    response = await client.request("process/start", process_params(process_id, argv, **extra))
    assert "result" in response, response
    events = await client.process_events(process_id, timeout=30 * TIME)
    (exited,) = [e["params"] for e in events if e["method"] == "process/exited"]
    return exited


async def test_exit_and_signal_records(start_server: StartServer) -> None:
    _, url = await start_server()
    client = await connect(url)
    try:
        exited = await run(client, "ok", ["/bin/sh", "-c", "exit 3"])
        assert exited["exitCode"] == 3
        record = exited["termination"]
        assert record["reason"] == "exited" and record["signal"] is None
        assert record["userMs"] >= 0 and record["sysMs"] >= 0

        exited = await run(client, "sig", ["/bin/sh", "-c", "kill -USR1 $$"])
        assert exited["exitCode"] == 128 + 10
        assert exited["termination"]["reason"] == "signaled"
        assert exited["termination"]["signal"] == "SIGUSR1"

        # process/read carries the same record once exited.
        read = await client.request("process/read", {"processId": "sig"})
        assert read["result"]["termination"] == exited["termination"]

        # A process that used real memory reports its peak. Without a memory cgroup the figure
        # is wait4's, reported only above the server's own peak RSS (a vfork child inherits
        # the server's high-water mark): this server runs in the test process, whose peak
        # grows over a whole test run, so the child outgrows that peak.
        size = max(400 * MIB, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 + 128 * MIB)
        grow = f"b = bytearray({size}); b[::4096] = b'x' * len(b[::4096])"
        exited = await run(client, "rss", [PY, "-c", grow])
        assert exited["termination"]["maxRssBytes"] >= size
    finally:
        await client.close()


async def test_no_extension_no_new_fields(start_server: StartServer) -> None:
    """A client that did not ask (the real Codex) sees exactly the reference's shapes."""
    _, url = await start_server()
    client = await connect(url, extensions=False)
    try:
        exited = await run(client, "p", ["/bin/true"])
        assert set(exited) == {"processId", "seq", "exitCode", "sandboxDenied"}
        read = await client.request("process/read", {"processId": "p"})
        assert "termination" not in read["result"]
        info = await client.request("environment/info")
        assert "extensions" not in info["result"]
    finally:
        await client.close()


async def test_extension_advertised(start_server: StartServer) -> None:
    _, url = await start_server()
    client = await WireClient.connect(url)
    try:
        response = await client.request(
            "initialize", {"clientName": "x", "extensions": ["processEndings"]}
        )
        endings = response["result"]["environmentInfo"]["extensions"]["processEndings"]
        assert endings["termination"] and endings["timeouts"] and endings["wait"]
        assert set(endings["limits"]) == set(HOST_LIMITS)
        if HOST_LIMITS:
            assert endings["wholeTreeKill"] == "cgroup" and endings["cgroup"] in ("v1", "v2")
        await client.notify("initialized", {})
        info = await client.request("environment/info")
        assert info["result"]["extensions"]["processEndings"] == endings
    finally:
        await client.close()


async def test_timeout_term_then_kill(start_server: StartServer) -> None:
    _, url = await start_server(kill_grace_s=0.3)
    client = await connect(url)
    try:
        # Dies of the SIGTERM.
        exited = await run(client, "t1", ["/bin/sleep", "60"], timeoutMs=200)
        assert exited["termination"]["reason"] == "timeout"
        assert exited["termination"]["signal"] == "SIGTERM"
        assert exited["exitCode"] == 128 + 15
        # Ignores SIGTERM: SIGKILL after the grace period.
        ignore = (
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
        )
        exited = await run(client, "t2", [PY, "-c", ignore], timeoutMs=200)
        assert exited["termination"]["reason"] == "timeout"
        assert exited["termination"]["signal"] == "SIGKILL"
        # Exits on its own first: a plain exit.
        exited = await run(client, "t3", ["/bin/true"], timeoutMs=60_000)
        assert exited["termination"]["reason"] == "exited"
    finally:
        await client.close()


async def test_timeout_kills_whole_tree(start_server: StartServer) -> None:
    """The TERM and the KILL reach a setsid daemon that ignores SIGTERM."""
    _, url = await start_server(kill_grace_s=0.3)
    marker = f"timeout-tree-{uuid.uuid4().hex}"
    ignore = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
    daemon = f"setsid {PY} -c '{ignore}' {marker} > /dev/null 2>&1 &"
    client = await connect(url)
    try:
        argv = ["/bin/sh", "-c", f"{daemon} exec {PY} -c '{SLEEP}' {marker}"]
        await client.request("process/start", process_params("tree", argv, timeoutMs=500))
        pids = await wait_for_marked(marker, 2)
        assert len(pids) == 2
        events = await client.process_events("tree", timeout=30 * TIME)
        (exited,) = [e["params"] for e in events if e["method"] == "process/exited"]
        assert exited["termination"]["reason"] == "timeout"
        assert await wait_all_dead(pids, timeout=10 * TIME), pids_with_marker(marker)
    finally:
        await client.close()


async def test_idle_timeout(start_server: StartServer) -> None:
    _, url = await start_server(kill_grace_s=0.3)
    client = await connect(url)
    try:
        exited = await run(
            client, "quiet", ["/bin/sh", "-c", "echo started; sleep 60"], idleTimeoutMs=300
        )
        assert exited["termination"]["reason"] == "idleTimeout"
        assert exited["termination"]["signal"] == "SIGTERM"
        # Output keeps it alive: 20 lines 50 ms apart under a 2 s idle limit.
        chatty = "for i in $(seq 20); do echo $i; sleep 0.05; done"
        exited = await run(client, "chatty", ["/bin/sh", "-c", chatty], idleTimeoutMs=2000)
        assert exited["termination"]["reason"] == "exited"
        assert exited["exitCode"] == 0
    finally:
        await client.close()


async def test_bad_timeouts_and_limits_refused(start_server: StartServer) -> None:
    _, url = await start_server()
    client = await connect(url)
    try:
        for extra, text in [
            ({"timeoutMs": 0}, "timeoutMs must be between"),
            ({"idleTimeoutMs": 0}, "idleTimeoutMs must be between"),
            ({"limits": {"memoryBytes": 1000}}, "memoryBytes must be at least"),
            ({"limits": {"pids": 0}}, "pids must be between"),
            ({"limits": {"cpus": 0}}, "cpus must be a number"),
        ]:
            response = await client.request("process/start", process_params("x", ["true"], **extra))
            assert response["error"]["code"] == -32602, response
            assert text in response["error"]["message"]
        response = await client.request("process/read", {"processId": "x"})
        assert "unknown process id" in response["error"]["message"]  # nothing was started
    finally:
        await client.close()


async def test_limits_refused_where_unenforceable(start_server: StartServer) -> None:
    """Never silently unlimited: without cgroups a limited start fails, naming the limit."""
    _, url = await start_server(process_cgroups=False)
    client = await connect(url)
    try:
        params = process_params("m", ["/bin/true"], limits={"memoryBytes": 64 * MIB})
        response = await client.request("process/start", params)
        assert response["error"]["code"] == -32602
        message = response["error"]["message"]
        assert "cannot be enforced" in message and "memoryBytes" in message
    finally:
        await client.close()


@needs_limits("memoryBytes")
async def test_oom_under_memory_limit(start_server: StartServer) -> None:
    _, url = await start_server()
    client = await connect(url)
    grow = "b = bytearray(400 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096])"
    try:
        limits = {"memoryBytes": 64 * MIB}
        exited = await run(client, "direct", [PY, "-c", grow], limits=limits)
        assert exited["termination"]["reason"] == "oom"
        assert exited["termination"]["signal"] == "SIGKILL"
        assert exited["termination"]["maxRssBytes"] <= 64 * MIB
        # The victim is a child of a shell, which exits 137 on its own: still attributed.
        exited = await run(client, "shell", ["/bin/sh", "-c", f'{PY} -c "{grow}"'], limits=limits)
        assert exited["termination"]["reason"] == "oom"
        assert exited["exitCode"] == 137 and exited["termination"]["signal"] is None
        # Under the limit: a plain exit.
        small = "b = bytearray(8 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096])"
        exited = await run(client, "small", [PY, "-c", small], limits=limits)
        assert exited["termination"]["reason"] == "exited"
    finally:
        await client.close()


@needs_limits("pids")
async def test_pids_limit(start_server: StartServer) -> None:
    _, url = await start_server()
    client = await connect(url)
    # The shell plus 5 background sleeps need 6 processes; 3 are allowed, so a fork fails.
    forks = "for i in 1 2 3 4 5; do sleep 30 > /dev/null 2>&1 & done; wait"
    try:
        await client.request(
            "process/start",
            process_params("p", ["/bin/sh", "-c", forks], limits={"pids": 3}),
        )
        wait = await client.request(
            "process/wait",
            {"processId": "p", "pattern": "(?i)fork", "afterSeq": 0, "timeoutMs": 10_000},
        )
        assert wait["result"]["reason"] == "match", wait
        await client.request("process/terminate", {"processId": "p"})
    finally:
        await client.close()


@needs_limits("cpus")
async def test_cpu_limit_applied(start_server: StartServer) -> None:
    """The quota is in the process's cpu cgroup (its effect is a figure, not a test)."""
    _, url = await start_server()
    client = await connect(url)
    marker = f"cpu-{uuid.uuid4().hex}"
    try:
        await client.request(
            "process/start",
            process_params("c", [PY, "-c", SLEEP, marker], limits={"cpus": 0.5}),
        )
        (pid,) = await wait_for_marked(marker, 1)
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        path = next(line.split(":", 2)[2] for line in lines if ":cpu," in line or ":cpu:" in line)
        quota = (Path("/sys/fs/cgroup/cpu") / path.lstrip("/") / "cpu.cfs_quota_us").read_text()
        assert int(quota) == 50_000
        await client.request("process/terminate", {"processId": "c"})
    finally:
        await client.close()


async def test_terminate_kills_setsid_daemon_and_double_fork(start_server: StartServer) -> None:
    """Default flags: terminate reaches a daemon in its own session whose parent is gone, and
    a double-forked orphan; the record says `terminated`."""
    _, url = await start_server()
    marker = f"term-tree-{uuid.uuid4().hex}"
    sleeper = f"{PY} -c '{SLEEP}' {marker}"
    script = (
        f"setsid {sleeper} > /dev/null 2>&1 & ( {sleeper} > /dev/null 2>&1 & ) ; exec {sleeper}"
    )
    client = await connect(url)
    try:
        await client.request("process/start", process_params("tree", ["/bin/sh", "-c", script]))
        pids = await wait_for_marked(marker, 3)
        assert len(pids) == 3
        response = await client.request("process/terminate", {"processId": "tree"})
        assert response["result"] == {"running": True}
        assert await wait_all_dead(pids, timeout=10 * TIME), pids_with_marker(marker)
        events = await client.process_events("tree", timeout=10 * TIME)
        (exited,) = [e["params"] for e in events if e["method"] == "process/exited"]
        assert exited["termination"]["reason"] == "terminated"
        assert exited["termination"]["signal"] == "SIGKILL"
    finally:
        await client.close()


async def test_shutdown_record_and_no_survivors() -> None:
    """Closing a process table (server shutdown, session expiry) kills every tree, daemons
    included, and records `shutdown`."""
    host = Host(HostConfig(process_cgroups=True))
    table = host.process_table()
    marker = f"shutdown-{uuid.uuid4().hex}"
    sleeper = f"{PY} -c '{SLEEP}' {marker}"
    try:
        argv = ["/bin/sh", "-c", f"setsid {sleeper} > /dev/null 2>&1 & exec {sleeper}"]
        process = table.start(_start_params("s", argv))
        pids = await wait_for_marked(marker, 2)
        assert len(pids) == 2
        await table.aclose()
        assert process.termination is not None
        assert process.termination.reason == "shutdown"
        if host.cgroups.enabled:  # without cgroups the daemon waits for the host's close
            assert await wait_all_dead(pids, timeout=10 * TIME), pids_with_marker(marker)
    finally:
        await host.aclose()
    assert await wait_all_dead(pids, timeout=10 * TIME), pids_with_marker(marker)


async def test_process_wait(start_server: StartServer) -> None:
    _, url = await start_server()
    client = await connect(url)
    try:
        script = "echo one; sleep 0.3; echo two; printf 'pass'; sleep 0.1; echo 'word:'; sleep 60"
        await client.request("process/start", process_params("w", ["/bin/sh", "-c", script]))
        # A match across chunks, reporting the chunk where it ended.
        found = await client.request(
            "process/wait",
            {"processId": "w", "pattern": "password?:", "timeoutMs": 10_000, "afterSeq": 0},
        )
        result = found["result"]
        assert result["reason"] == "match" and result["match"] == "password:"
        read = await client.request("process/read", {"processId": "w", "afterSeq": 0})
        last = max(c["seq"] for c in read["result"]["chunks"])
        assert result["seq"] == last
        # Output from now on only: nothing more comes, so idle (or the timeout) ends it.
        idle = await client.request(
            "process/wait", {"processId": "w", "pattern": "one", "idleMs": 200, "timeoutMs": 10_000}
        )
        assert idle["result"]["reason"] == "idle"
        timeout = await client.request("process/wait", {"processId": "w", "timeoutMs": 50})
        assert timeout["result"]["reason"] == "timeout"
        # The exit ends a wait.
        pending = client.new_id()
        await client.send(
            {
                "id": pending,
                "method": "process/wait",
                "params": {"processId": "w", "pattern": "never", "timeoutMs": 30_000},
            }
        )
        await client.request("process/terminate", {"processId": "w"})
        ended = await client.response(pending, timeout=10 * TIME)
        assert ended["result"]["reason"] == "exited" and ended["result"]["exitCode"] == 137
        # Bad input: clear errors.
        bad = await client.request(
            "process/wait", {"processId": "w", "pattern": "(", "timeoutMs": 10}
        )
        assert bad["error"]["code"] == -32602 and "RE2" in bad["error"]["message"]
        unknown = await client.request("process/wait", {"processId": "nope", "timeoutMs": 10})
        assert "unknown process id" in unknown["error"]["message"]
    finally:
        await client.close()


async def test_process_wait_catastrophic_pattern_is_linear(start_server: StartServer) -> None:
    """A backtracking engine would spin for ages on this; RE2 answers at once, and the server
    keeps serving (the answer comes within the test's ordinary deadline)."""
    _, url = await start_server()
    client = await connect(url)
    try:
        script = "head -c 60000 /dev/zero | tr '\\0' a; echo; sleep 60"
        await client.request("process/start", process_params("r", ["/bin/sh", "-c", script]))
        response = await client.request(
            "process/wait",
            {"processId": "r", "pattern": "^(a+)+$", "afterSeq": 0, "timeoutMs": 1000},
            timeout=10 * TIME,
        )
        assert response["result"]["reason"] in ("timeout", "idle", "match")
        await client.request("process/terminate", {"processId": "r"})
    finally:
        await client.close()


async def test_pty_waiting_for_input_notification(start_server: StartServer) -> None:
    """The heuristic: a notification once the terminal's foreground process blocks reading
    it; none while it sleeps; again after new input leads to a new prompt."""
    _, url = await start_server()
    client = await connect(url)
    script = 'printf "name? "; read x; echo "hello $x"; sleep 2; printf "again? "; read y; sleep 60'
    try:
        await client.request(
            "process/start", process_params("tty", ["/bin/sh", "-c", script], tty=True)
        )
        first = await client.wait_for(
            lambda m: m.get("method") == "process/waitingForInput", timeout=10 * TIME
        )
        params = first["params"]
        assert params["processId"] == "tty" and params["command"] == "sh"
        assert params["seq"] >= 1  # after the prompt
        await client.request(
            "process/write",
            {"processId": "tty", "chunk": "Ym9iCg==", "writeId": "w1"},  # "bob\n"
        )
        found = await client.request(
            "process/wait",
            {"processId": "tty", "pattern": "again\\?", "afterSeq": 0, "timeoutMs": 10_000},
        )
        assert found["result"]["reason"] == "match"
        # During `sleep 2` nobody reads the terminal: the next notice is the second prompt's.
        second = await client.wait_for(
            lambda m: m.get("method") == "process/waitingForInput" and m is not first,
            timeout=10 * TIME,
        )
        assert second["params"]["seq"] >= found["result"]["seq"]
        await client.request("process/terminate", {"processId": "tty"})
    finally:
        await client.close()


async def test_no_waiting_notification_without_the_extension(start_server: StartServer) -> None:
    _, url = await start_server()
    client = await connect(url, extensions=False)
    try:
        await client.request(
            "process/start",
            process_params("tty", ["/bin/sh", "-c", "read x; echo got $x"], tty=True),
        )
        # Quiet for well past the heuristic's first look, then end it with input.
        idle = await client.request(
            "process/wait", {"processId": "tty", "idleMs": 1500, "timeoutMs": 10_000}
        )
        assert idle["result"]["reason"] == "idle"
        await client.request("process/write", {"processId": "tty", "chunk": "eAo=", "writeId": "w"})
        await client.process_events("tty", timeout=10 * TIME)
        assert client.notifications("process/waitingForInput") == []
    finally:
        await client.close()


def _start_params(
    process_id: str, argv: list[str], cwd: str = "/tmp", **extra: Any
) -> ProcessStartParams:
    return ProcessStartParams(
        process_id=process_id,
        argv=argv,
        cwd=PathUri.from_native(cwd),
        env={"PATH": "/usr/bin:/bin"},
        tty=False,
        **extra,
    )


def _serve_host(
    monkeypatch: pytest.MonkeyPatch | None = None, **config: Any
) -> tuple[Host, ProcessCgroups]:
    """A host whose spawning thread waits in a fresh cgroup, as `execserver serve` has it; with
    `monkeypatch` the mover is never woken, so that thread stays in the cgroup of the process
    it started last (the window between a spawn and the move, held open)."""
    host = Host(HostConfig(**config))
    host.cgroups = cgroups = ProcessCgroups.create(dedicated=True)
    if monkeypatch is not None:
        monkeypatch.setattr(cgroups.mover, "_wake", lambda: None)
    return host, cgroups


def _sandbox_context(workspace: Path) -> SandboxContext:
    (workspace / "tool").mkdir()
    return msgspec.convert(_workspace_sandbox(workspace), SandboxContext, dec_hook=dec_hook)


def _comm(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/comm").read_text().strip()
    return ""


def _pids_cgroup(pid: int | str) -> str:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "pids" in controllers.split(","):
            return path
    raise AssertionError("no pids hierarchy")


@needs_limits("pids")
async def test_reused_cgroup_is_not_killed_through_an_old_process(
    start_server: StartServer,
) -> None:
    """A finished process's empty cgroup serves a later process; terminating the finished
    one must not reach the later one."""
    _, url = await start_server()
    client = await connect(url)
    marker = f"reuse-{uuid.uuid4().hex}"
    try:
        for i in range(4):  # enough closed processes for their cgroups to be reused
            await run(client, f"short-{i}", ["/bin/true"])
        await client.request("process/start", process_params("long", [PY, "-c", SLEEP, marker]))
        (pid,) = await wait_for_marked(marker, 1)
        for i in range(4):
            response = await client.request("process/terminate", {"processId": f"short-{i}"})
            assert response["result"] == {"running": False}
        assert pids_with_marker(marker) == [pid]
        await client.request("process/terminate", {"processId": "long"})
        assert await wait_all_dead([pid], timeout=10 * TIME)
    finally:
        await client.close()


@needs_limits("pids")
async def test_spawning_thread_never_shares_a_cgroup() -> None:
    """Anything the spawning thread starts between spawns (here a thread, as a pool creates
    them on demand) lands in its cgroup; the next process must get a cgroup of its own, and
    the server's thread goes back home: right away from a fresh cgroup, or (when it was born
    before the spawning thread had left the first process's cgroup) once that cgroup goes, at
    the first process's expiry."""
    import threading

    host, _ = _serve_host(closed_process_retention_s=0.2)
    table = host.process_table()
    release = threading.Event()
    helper = threading.Thread(target=release.wait, daemon=True)
    try:
        first = table.start(_start_params("first", ["/bin/true"]))
        await first.wait_closed()
        helper.start()  # born wherever this (the spawning) thread sits now
        second = table.start(_start_params("second", ["/bin/sleep", "30"]))
        assert _pids_cgroup(second.pid) != _pids_cgroup(f"self/task/{helper.native_id}")
        # The server's thread does not stay in a process's cgroup (moved off the spawn path).
        await poll(
            lambda: "/execserver-" not in _pids_cgroup(f"self/task/{helper.native_id}"),
            what="the helper thread sent home",
        )
        second.terminate()
        await second.wait_closed()
    finally:
        release.set()
        helper.join()
        await table.aclose()
        await host.aclose()


@needs_limits("pids")
@NOT_ON_V2
async def test_a_thread_left_in_a_process_cgroup_goes_home_when_it_is_removed() -> None:
    """A thread the spawning thread started between a spawn and its move (planted here) stays
    in that process's cgroup until the cgroup is removed: removing it sends the thread home
    (in the mover's thread) and the cgroup goes; at shutdown too."""
    import threading

    host, cgroups = _serve_host()
    table = host.process_table()
    release = threading.Event()
    helpers = [threading.Thread(target=release.wait, daemon=True) for _ in range(2)]
    for helper in helpers:
        helper.start()

    def start(process_id: str) -> LocalProcess:
        return table.start(_start_params(process_id, ["/bin/sleep", "30"]))

    def plant(process: LocalProcess, helper: threading.Thread) -> Path:
        directory = Path("/sys/fs/cgroup/pids") / _pids_cgroup(process.pid).lstrip("/")
        (directory / "tasks").write_text(str(helper.native_id))
        return directory

    def at_home(helper: threading.Thread) -> bool:
        return "/execserver-" not in _pids_cgroup(f"self/task/{helper.native_id}")

    try:
        first = start("first")
        directory = plant(first, helpers[0])
        first.terminate()
        await first.wait_closed()
        cgroup = first.cgroup
        assert cgroup is not None, "a cgroup holding a thread of ours was not kept"
        assert directory.is_dir()
        assert not cgroup.remove()  # busy: our thread is there
        await poll(lambda: at_home(helpers[0]), what="the thread sent home")
        await poll(lambda: not directory.exists(), what="the cgroup removed")
        assert cgroup.remove()

        second = start("second")
        directory = plant(second, helpers[1])
        second.terminate()
        await second.wait_closed()
        await table.aclose()
        cgroups.close()  # shutdown: the thread goes home, every cgroup goes
        assert at_home(helpers[1])
        assert not directory.exists()
    finally:
        release.set()
        for helper in helpers:
            helper.join()
        await table.aclose()
        await host.aclose()


@needs_limits("pids")
@NOT_ON_V2
async def test_a_helper_is_not_born_in_a_process_cgroup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The filesystem sandbox's helper, started while the spawning thread still sits in the
    cgroup of the process it just started (held there: the mover is not woken), is born
    elsewhere: terminating that process does not end it, and its write completes. (The helper
    writes more than a FIFO holds, so it is alive until the test reads.)"""
    require_bwrap()
    sandbox = _sandbox_context(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    size = 1 << 20

    def drain() -> int:
        """Read the FIFO until its writer is gone; the number of bytes read."""
        total = 0
        poller = select.poll()
        poller.register(reader, select.POLLIN)
        while True:
            assert poller.poll(10_000 * TIME), "the helper stopped writing"
            try:
                data = os.read(reader, 1 << 16)
            except BlockingIOError:
                continue
            if not data:
                return total
            total += len(data)

    bwrap.locate()  # probed before the window (the probe is spawned aside too)
    host, _ = _serve_host(monkeypatch)
    table = host.process_table()

    def helpers() -> list[int]:
        return [pid for pid in children(os.getpid()) if _comm(pid) == "bwrap"]

    try:
        process = table.start(_start_params("p", ["/bin/sleep", "30"]))
        write = asyncio.create_task(host.fs.write_file(fifo, b"x" * size, sandbox=sandbox))
        await poll(lambda: bool(helpers()), what="the sandbox helper started")
        (helper,) = helpers()
        assert _pids_cgroup(helper) != _pids_cgroup(process.pid)
        process.terminate()
        await process.wait_closed()
        assert not write.done()
        assert await asyncio.to_thread(drain) == size
        await write
    finally:
        os.close(reader)
        await table.aclose()
        await host.aclose()


@needs_limits("pids")
@NOT_ON_V2
async def test_bubblewrap_probe_is_not_born_in_a_process_cgroup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bubblewrap's first probe (its version, a namespace smoke test), run by the first
    sandboxed start, is not born in the cgroup of the process started just before (the
    spawning thread held there: the mover is not woken), whose pids limit is full: there it
    would fail, and the failure would be kept for every later sandboxed start."""
    require_bwrap()
    monkeypatch.setattr(bwrap, "_probed", {})  # this test's start probes again
    sandbox = _sandbox_context(tmp_path)
    host, _ = _serve_host(monkeypatch)
    table = host.process_table()

    try:
        limited = table.start(
            _start_params("limited", ["/bin/sleep", "30"], limits=ProcessLimits(pids=1))
        )
        sandboxed = table.start(
            _start_params("sandboxed", ["/bin/true"], str(tmp_path), sandbox=sandbox)
        )
        await sandboxed.wait_closed()
        assert sandboxed.log.exit_code == 0
        limited.terminate()
        await limited.wait_closed()
    finally:
        await table.aclose()
        await host.aclose()


def _workspace_sandbox(workspace: Path) -> Json:
    """Everything readable, only `workspace` writable, `workspace/tool` inaccessible."""
    path = f"file://{workspace}"
    return {
        "permissions": {
            "type": "managed",
            "file_system": {
                "type": "restricted",
                "entries": [
                    {"path": {"type": "special", "value": {"kind": "root"}}, "access": "read"},
                    {"path": {"type": "path", "path": path}, "access": "write"},
                    {"path": {"type": "path", "path": f"{path}/tool"}, "access": "none"},
                ],
            },
            "network": "restricted",
        },
        "windowsSandboxLevel": "disabled",
    }


async def test_sandbox_denied_record(start_server: StartServer, tmp_path: Path) -> None:
    """Real bubblewrap denials end with `sandboxDenied`; a sandboxed process that failed for
    its own reasons does not, even when its output mentions a sandbox (the wire's
    `sandboxDenied` flag keeps the reference's keyword answer there)."""
    require_bwrap()
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "tool").write_text("#!/bin/sh\necho ran\n")
    (workspace / "tool").chmod(0o755)
    outside = tmp_path / "outside"
    outside.mkdir()
    _, url = await start_server()
    client = await connect(url)
    sandbox = _workspace_sandbox(workspace)
    cwd = f"file://{workspace}"

    async def sandboxed(process_id: str, script: str) -> Json:
        return await run(client, process_id, ["/bin/sh", "-c", script], sandbox=sandbox, cwd=cwd)

    try:
        # A write outside the writable roots (read-only mount: EROFS).
        exited = await sandboxed("write", f"touch {outside}/f")
        assert exited["exitCode"] != 0 and exited["sandboxDenied"] is True
        assert exited["termination"]["reason"] == "sandboxDenied"
        assert not (outside / "f").exists()
        # An exec of a path the policy makes inaccessible (EACCES).
        exited = await sandboxed("exec", "./tool")
        assert exited["exitCode"] == 126 and exited["termination"]["reason"] == "sandboxDenied"
        # Writes inside the writable root work; the failure after them is the process's own.
        exited = await sandboxed("own", "echo data > inside && cat missing")
        assert (workspace / "inside").read_text() == "data\n"
        assert exited["exitCode"] == 1 and exited["sandboxDenied"] is False
        assert exited["termination"]["reason"] == "exited"
        # A failure that merely talks about sandboxes: the reference's flag says denied, the
        # record says what happened.
        exited = await sandboxed("talk", "echo 'sandbox self-check failed' >&2; exit 1")
        assert exited["sandboxDenied"] is True
        assert exited["termination"]["reason"] == "exited"
        # Without a sandbox no failure is a denial.
        script = "echo 'Permission denied' >&2; exit 1"
        exited = await run(client, "plain", ["/bin/sh", "-c", script])
        assert exited["termination"]["reason"] == "exited"
    finally:
        await client.close()


async def test_session_expiry_kills_whole_tree(tmp_path: Path) -> None:
    """A real server with default flags and a 1 s session TTL: once the client is gone and the
    TTL fires, the session's process, its `setsid` daemon and its double-forked orphan all
    die, and the record (in the `process finished` log line) says `shutdown`."""
    env = {**os.environ, "EXECSERVER_LOG": "info", "EXECSERVER_LOG_FORMAT": "json"}
    server = await servers.start_server("ours", tmp_path, extra=["--session-ttl", "1"], env=env)
    marker = f"expiry-tree-{uuid.uuid4().hex}"
    sleeper = f"{PY} -c '{SLEEP}' {marker}"
    script = (
        f"setsid {sleeper} > /dev/null 2>&1 & ( {sleeper} > /dev/null 2>&1 & ) ; exec {sleeper}"
    )

    def records(*messages: str) -> list[Json]:
        lines = server.stderr().splitlines()
        found = [json.loads(line) for line in lines if line.startswith("{")]
        return [r for r in found if r["msg"] in messages]

    try:
        client = await connect(server.url)
        await client.request("process/start", process_params("tree", ["/bin/sh", "-c", script]))
        # The shell and its forks carry the marker too, until they exec: wait for the three
        # Python sleepers alone, the daemon leading a session of its own.

        def settled() -> list[int] | None:
            pids = pids_with_marker(marker)
            try:
                argv0 = [Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] for pid in pids]
                stats = [Path(f"/proc/{pid}/stat").read_text() for pid in pids]
            except OSError:
                return None
            sessions = {stat.rsplit(")", 1)[1].split()[3] for stat in stats}
            ok = len(pids) == 3 and set(argv0) == {PY.encode()} and len(sessions) == 2
            return pids if ok else None

        await poll(lambda: settled() is not None, what="the tree's three sleepers")
        pids = settled()
        assert pids is not None
        await client.close()
        assert await wait_all_dead(pids, timeout=15 * TIME), pids_with_marker(marker)
        await poll(lambda: bool(records("process finished")), what="the finish log line")
        (detached,) = records("session detached")
        (expired,) = records("session expired")
        (finished,) = records("process finished")
        # Kept through the disconnect, killed when the TTL fired (the log is in order).
        order = [
            r["msg"] for r in records("session detached", "session expired", "process finished")
        ]
        assert order == ["session detached", "session expired", "process finished"]
        assert finished["session_id"] == expired["session_id"] == detached["session_id"]
        assert finished["process_id"] == "tree" and finished["reason"] == "shutdown"
        assert finished["signal"] == "SIGKILL"
    finally:
        await server.stop()
