"""The process handoff of an upgrade in place, in one process: a host's processes (pipes, a PTY,
pending stdin, finished ones, a detached one, a journal) and a table's links are described,
encoded, dropped by the old host without closing anything, and rebuilt in a fresh host, where
they carry on as if nothing happened (seqs, write ids, output, exit)."""

from __future__ import annotations

import asyncio
import itertools
import os
import shlex
import sys
import uuid
from collections.abc import Awaitable
from pathlib import Path

import msgspec
import pytest

from execserver.local import cgroup as cgroup_module
from execserver.local.cgroup import Limits
from execserver.local.handoff import (
    HostHandoff,
    TableState,
    restore_host,
    restore_table,
    snapshot_host,
    snapshot_table,
)
from execserver.local.host import Host, HostConfig
from execserver.local.process import LocalExecBackend, LocalProcess
from execserver.protocol.pathuri import PathUri
from execserver.protocol.process import ProcessLimits, ProcessStartParams, TerminalSize
from tests.conftest import IN_CI, TIME
from tests.harness.polling import poll
from tests.harness.procfs import pids_with_marker, sleeper, wait_all_dead, wait_for_marked

ECHO = "import sys\nfor line in sys.stdin: print('got:' + line.strip(), flush=True)\n"


def params(process_id: str, argv: list[str], **extra: object) -> ProcessStartParams:
    fields: dict[str, object] = {"tty": False, **extra}
    return ProcessStartParams(
        process_id=process_id,
        argv=argv,
        cwd=PathUri.parse("file:///tmp"),
        env={"PATH": os.environ["PATH"]},
        **fields,  # type: ignore[arg-type]
    )


def abandon(host: Host) -> None:
    """What `execve` does to the old image: its loop stops watching anything; nothing is
    closed (the new image owns the same fds and children)."""
    loop = asyncio.get_running_loop()
    for process in host.directory.processes():
        for fd in process._readers:
            loop.remove_reader(fd)
        if process._writing and process._stdin_fd is not None:
            loop.remove_writer(process._stdin_fd)
        if process._timeouts is not None:
            process._timeouts.cancel()
        if process._kill_after is not None:
            process._kill_after.cancel()
    for pid, (pidfd, _) in list(host.reaper._watched.items()):
        loop.remove_reader(pidfd)
        os.close(pidfd)
        del host.reaper._watched[pid]
    host._blocking.shutdown(wait=False)


async def output_of(process: LocalProcess, text: bytes) -> bytes:
    """All output from the start, once it contains `text` (or the process closed)."""
    data = b""
    after = 0
    async with asyncio.timeout(15 * TIME):
        while True:
            result = await process.read(after, None, 5.0)
            data += b"".join(c.chunk for c in result.chunks)
            after = result.next_seq - 1
            if text in data or result.closed:
                return data


async def test_handoff_round_trip(tmp_path: Path) -> None:
    """Every kind of process survives the handoff and goes on working in the new host."""
    config = HostConfig(journal_dir=str(tmp_path), journal_max_bytes=8 << 20)
    old = Host(config)
    table = old.process_table("session-1", "alice")
    echo = table.start(params("echo", [sys.executable, "-c", ECHO], pipe_stdin=True))
    assert echo.write(b"before\n", "w1") == "accepted"
    await output_of(echo, b"got:before")
    size = TerminalSize(rows=9, cols=33)
    pty = table.start(params("pty", ["sh", "-c", "read x; stty size"], tty=True, size=size))
    # 200 KiB of stdin to a process that reads it only later: most of it is still queued here.
    slow = table.start(params("slow", ["sh", "-c", "sleep 1; wc -c"], pipe_stdin=True))
    slow.write(b"x" * 200_000, "w2")
    slow.close_stdin()
    done = table.start(params("done", ["sh", "-c", "echo finished; exit 3"]))
    await done.wait_closed()
    big = table.start(params("big", ["sh", "-c", "seq 1 400000; exec sleep 60"]))
    await poll(lambda: big.log.total_bytes >= 2_600_000, 20, "the big output")
    detached = table.start(params("bg", ["sleep", "60"], detach=True))

    state = snapshot_host(old)
    tables = snapshot_table(table)
    wire = msgspec.msgpack.encode(state), msgspec.msgpack.encode(tables)
    assert len(state.fds()) == 3 + 1 + 3 + 0 + 2 + 2  # echo, pty, slow, done, big, bg
    abandon(old)

    new = Host(config)
    processes = restore_host(new, msgspec.msgpack.decode(wire[0], type=HostHandoff))
    again = new.process_table("session-1", "alice")
    assert isinstance(again, LocalExecBackend)
    restore_table(again, msgspec.msgpack.decode(wire[1], type=TableState), processes)
    try:
        echo2 = again.require("echo")
        assert echo2.pid == echo.pid and echo2.handle == echo.handle
        assert echo2.write(b"before\n", "w1") == "accepted"  # a retried write: not again
        assert echo2.write(b"after\n", "w3") == "accepted"
        data = await output_of(echo2, b"got:after")
        assert data == b"got:before\ngot:after\n"
        pty2 = again.require("pty")
        assert pty2.pid == pty.pid
        pty2.resize(11, 44)
        assert pty2.write(b"go\r", "w4") == "accepted"
        assert b"11 44" in await output_of(pty2, b"11 44")
        slow2 = again.require("slow")
        assert (await output_of(slow2, b"200000")).strip() == b"200000"
        done2 = again.require("done")
        assert done2.read_nowait(0, None) == done.read_nowait(0, None)
        big2 = again.require("big")
        everything = b""
        after = 0
        while chunks := big2.read_nowait(after, None).chunks:  # type: ignore[union-attr]
            everything += b"".join(c.chunk for c in chunks)
            after = chunks[-1].seq
        assert everything == b"".join(b"%d\n" % i for i in range(1, 400001))
        (info,) = [i for i in again.list_processes() if i.handle == detached.handle]
        assert info.detached and info.state == "running"
        assert new.directory.find(detached.handle, "alice").pid == detached.pid
        await asyncio.wait_for(slow2.wait_closed(), 15 * TIME)
    finally:
        await again.aclose()
        await new.aclose()


async def test_handoff_carries_cgroups_timeouts_and_endings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process's cgroup (with its limits), its running timeout, what ended a finished one and
    its termination record survive the handoff: after it, terminate still reaches a setsid
    daemon through the adopted cgroup."""
    old = Host(HostConfig(process_cgroups=True))
    if not old.cgroups.enabled or "pids" not in old.cgroups.enforceable:
        await old.aclose()
        if IN_CI:
            pytest.fail("CI=true but this host has no writable cgroup hierarchy")
        pytest.skip("no writable cgroup hierarchy")
    table = old.process_table("session-1", "alice")
    marker = f"handoff-tree-{uuid.uuid4().hex}"
    daemon = shlex.join(sleeper(marker))
    tree = table.start(
        params(
            "tree",
            ["sh", "-c", f"setsid {daemon} >/dev/null 2>&1 & exec {daemon}"],
            limits=ProcessLimits(pids=32),
        )
    )
    await wait_for_marked(marker, 2, timeout=10 * TIME)
    timed = table.start(params("timed", ["sleep", "60"], timeout_ms=600_000))
    signaled = table.start(params("signaled", ["sh", "-c", "kill -USR1 $$"]))
    await signaled.wait_closed()
    assert tree.cgroup is not None and tree.limits == Limits(pids=32)

    state = msgspec.msgpack.encode(snapshot_host(old))
    links = msgspec.msgpack.encode(snapshot_table(table))
    abandon(old)
    # The re-executed server has the same pid, so it finds the same base directories.
    (base,) = {path.name for path in old.cgroups.bases}
    number = int(base.split("-")[2]) if base.count("-") == 2 else 0
    monkeypatch.setattr(cgroup_module, "_base_numbers", itertools.count(number))
    new = Host(HostConfig(process_cgroups=True))
    processes = restore_host(new, msgspec.msgpack.decode(state, type=HostHandoff))
    again = new.process_table("session-1", "alice")
    assert isinstance(again, LocalExecBackend)
    restore_table(again, msgspec.msgpack.decode(links, type=TableState), processes)
    try:
        assert {path.name for path in new.cgroups.bases} == {base}
        tree2 = again.require("tree")
        assert tree2.cgroup is not None and tree2.cgroup.name == tree.cgroup.name
        assert tree2.limits == Limits(pids=32)
        assert timed._timeouts is not None
        timed2 = again.require("timed")
        assert timed2._timeouts is not None
        left, idle = timed2._timeouts.remaining()
        assert idle is None and left is not None and 500 < left <= 600
        signaled2 = again.require("signaled")
        assert signaled2.termination == signaled.termination
        assert signaled2.termination is not None and signaled2.termination.signal == "SIGUSR1"
        fresh = again.start(params("fresh", ["sleep", "60"]))
        assert not isinstance(fresh, Awaitable)
        # A new process never lands in a carried-over process's cgroup.
        assert fresh.cgroup is not None and fresh.cgroup.name != tree2.cgroup.name
        assert fresh.terminate() is True
        pids = pids_with_marker(marker)
        assert len(pids) == 2
        assert tree2.terminate() is True
        assert await wait_all_dead(pids, timeout=10 * TIME), pids_with_marker(marker)
        await asyncio.wait_for(tree2.wait_closed(), 10 * TIME)
        assert tree2.termination is not None and tree2.termination.reason == "terminated"
    finally:
        await again.aclose()
        await new.aclose()
