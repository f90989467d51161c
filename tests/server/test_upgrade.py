"""Upgrade in place (SIGHUP): same pid, processes kept as children with their pipes, sessions
resumed by their clients with nothing lost or repeated; a broken install leaves the old server
running. Real servers, real signals."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

from execserver.environment.process import ExecProcess, ExitedEvent
from execserver.protocol.process import ProcessOutputChunk
from execserver.remote import connect_environment
from execserver.server.app import ExecServer, ServerConfig
from execserver.server.upgrade import Upgrader
from tests.harness.polling import poll
from tests.harness.servers import REPO_ROOT, RunningServer, generation, start_server

# Prints its pid, then a counter every 50 ms; echoes every stdin line ("echo:<line>").
COUNTER = """
import os, sys, threading, time
lock = threading.Lock()
def out(text):
    with lock:
        sys.stdout.write(text + "\\n")
        sys.stdout.flush()
def echo():
    for line in sys.stdin:
        out("echo:" + line.strip())
threading.Thread(target=echo, daemon=True).start()
out(f"pid:{os.getpid()}")
i = 0
while True:
    out(f"count:{i}")
    i += 1
    time.sleep(0.05)
"""


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


class Lines:
    """The output of a process, split into lines as it arrives."""

    def __init__(self, process: ExecProcess) -> None:
        self.lines: list[str] = []
        self._pending = b""
        self.task = asyncio.ensure_future(self._collect(process))

    async def _collect(self, process: ExecProcess) -> None:
        async for event in process:
            if isinstance(event, ProcessOutputChunk):
                *complete, self._pending = (self._pending + event.chunk).split(b"\n")
                self.lines += [line.decode() for line in complete]

    def count(self) -> int:
        return sum(1 for line in self.lines if line.startswith("count:"))


async def upgrade(server: RunningServer, lines: Lines, to: int) -> None:
    """SIGHUP, then wait for the new image and for output to flow again (the client has
    resumed its session on it)."""
    os.kill(server.pid, signal.SIGHUP)
    await poll(lambda: generation(server) == to, 60, f"upgrade {to}")
    before = lines.count()
    await poll(lambda: lines.count() > before + 10, 60, "output after the upgrade")


async def test_upgrade_in_place_keeps_everything(tmp_path: Path) -> None:
    """A counter printing every 50 ms keeps its pid (and its parent) across two upgrades; every
    line arrives exactly once, and every stdin line written meanwhile is applied once."""
    server = await start_server("ours", tmp_path)
    try:
        async with await connect_environment(server.url) as env:
            process = await env.process.start([sys.executable, "-c", COUNTER], pipe_stdin=True)
            lines = Lines(process)
            written = 0
            stop = asyncio.Event()

            async def writer() -> None:
                nonlocal written
                while not stop.is_set():
                    assert await process.write(b"w%d\n" % written) == "accepted"
                    written += 1
                    await asyncio.sleep(0.02)

            writing = asyncio.ensure_future(writer())
            await poll(lambda: lines.count() > 5, 30, "the counter")
            (child,) = [int(ln[4:]) for ln in lines.lines if ln.startswith("pid:")]
            assert parent_of(child) == server.pid
            await upgrade(server, lines, 1)
            await upgrade(server, lines, 2)
            stop.set()
            await writing
            await poll(lambda: sum(ln.startswith("echo:") for ln in lines.lines) == written, 30)
            assert parent_of(child) == server.pid
            assert await process.terminate() is True
            await asyncio.wait_for(lines.task, 30)
            assert env.process.client.reconnects == 2  # type: ignore[attr-defined]
    finally:
        await server.stop()
    counts = [int(ln[6:]) for ln in lines.lines if ln.startswith("count:")]
    assert counts == list(range(len(counts)))
    echoes = [ln[5:] for ln in lines.lines if ln.startswith("echo:")]
    assert echoes == [f"w{i}" for i in range(written)]


async def test_sighup_while_the_new_image_starts_is_not_lost(tmp_path: Path) -> None:
    """A second SIGHUP that arrives while the new image starts waits for it (it neither kills
    it nor vanishes): two upgrades."""
    server = await start_server("ours", tmp_path)
    try:
        os.kill(server.pid, signal.SIGHUP)
        await poll(lambda: generation(server) == 1, 60, "upgrade 1")
        os.kill(server.pid, signal.SIGHUP)  # very likely before it handles SIGHUP again
        await poll(lambda: generation(server) == 2, 60, "upgrade 2")
        async with await connect_environment(server.url) as env:
            result = await env.process.run(["echo", "alive"])
            assert result.stdout == b"alive\n"
    finally:
        assert await server.stop() == 0


async def test_failed_upgrade_leaves_the_old_server_running(tmp_path: Path) -> None:
    """With a broken install the upgrade is refused: nothing is dropped, the client never sees
    a disconnect, and once the install is fixed the next SIGHUP upgrades."""
    site = tmp_path / "site"
    shutil.copytree(
        REPO_ROOT / "src" / "execserver",
        site / "execserver",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    server = await start_server("ours", tmp_path, env=env)
    try:
        async with await connect_environment(server.url) as environment:
            process = await environment.process.start([sys.executable, "-c", COUNTER])
            lines = Lines(process)
            await poll(lambda: lines.count() > 3, 30, "the counter")
            module = site / "execserver" / "cli" / "serve.py"
            original = module.read_text()
            module.write_text(original + "\nthis is not python (\n")
            os.kill(server.pid, signal.SIGHUP)
            await poll(lambda: "upgrade in place failed" in server.stderr(), 60, "the refusal")
            assert "SyntaxError" in server.stderr()
            assert generation(server) == 0
            before = lines.count()
            await poll(lambda: lines.count() > before + 3, 30, "output after the refusal")
            assert environment.process.client.reconnects == 0  # type: ignore[attr-defined]
            module.write_text(original)
            await upgrade(server, lines, 1)
            assert await process.terminate() is True
            await asyncio.wait_for(lines.task, 30)
    finally:
        await server.stop()
    counts = [int(ln[6:]) for ln in lines.lines if ln.startswith("count:")]
    assert counts == list(range(len(counts)))


async def test_upgrade_needs_a_websocket_listener(caplog: pytest.LogCaptureFixture) -> None:
    """Without a WebSocket listener (stdio, relay) an upgrade is refused with a log line."""
    server = ExecServer(ServerConfig())
    upgrader = Upgrader(server, state_dir=None, own_state_dir=False)
    try:
        with caplog.at_level(logging.ERROR):
            upgrader.request()
            await poll(lambda: "needs a WebSocket listener" in caplog.text, 10, "the refusal")
    finally:
        await upgrader.aclose()
        await server.aclose()


# On a terminal: its size at start and after each SIGWINCH, a counter every 50 ms, exit 7 on
# the first stdin line.
PTY_COUNTER = """
import os, signal, sys, threading, time
resized = [1]
signal.signal(signal.SIGWINCH, lambda *_: resized.append(1))
def quit_on_input():
    sys.stdin.readline()
    os._exit(7)
threading.Thread(target=quit_on_input, daemon=True).start()
i = 0
while True:
    if resized:
        resized.clear()
        size = os.get_terminal_size(0)
        print(f"size:{size.lines}x{size.columns}", flush=True)
    print(f"count:{i}", flush=True)
    i += 1
    time.sleep(0.05)
"""


class PtyLines(Lines):
    """`Lines` of a terminal (CR LF), keeping each chunk's seq and the exit."""

    def __init__(self, process: ExecProcess) -> None:
        self.seqs: list[int] = []
        self.exited: ExitedEvent | None = None
        super().__init__(process)

    async def _collect(self, process: ExecProcess) -> None:
        async for event in process:
            if isinstance(event, ProcessOutputChunk):
                self.seqs.append(event.seq)
                *complete, self._pending = (self._pending + event.chunk).split(b"\n")
                self.lines += [line.decode().rstrip("\r") for line in complete]
            elif isinstance(event, ExitedEvent):
                self.exited = event


async def test_pty_process_across_an_upgrade(tmp_path: Path) -> None:
    """A PTY process keeps its terminal across a real SIGHUP upgrade: its output continues
    seq by seq with nothing lost or repeated, a resize after the upgrade reaches it, and its
    exit code arrives."""
    server = await start_server("ours", tmp_path)
    try:
        async with await connect_environment(server.url) as env:
            process = await env.process.start(
                [sys.executable, "-c", PTY_COUNTER], tty=True, size=(24, 80)
            )
            lines = PtyLines(process)
            await poll(lambda: lines.count() > 5, 30, "the counter")
            assert lines.lines[0] == "size:24x80"
            await upgrade(server, lines, 1)
            await process.resize(30, 100)
            await poll(lambda: "size:30x100" in lines.lines, 30, "the resize")
            before = lines.count()
            await poll(lambda: lines.count() > before + 3, 30, "output after the resize")
            assert await process.write(b"quit\n") == "accepted"
            assert await asyncio.wait_for(process.wait(), 30) == 7
            await asyncio.wait_for(lines.task, 30)
            assert env.process.client.reconnects == 1  # type: ignore[attr-defined]
    finally:
        await server.stop()
    assert lines.exited is not None and lines.exited.exit_code == 7
    assert lines.seqs == list(range(lines.seqs[0], lines.seqs[0] + len(lines.seqs)))
    assert lines.exited.seq > lines.seqs[-1]
    counts = [int(ln[6:]) for ln in lines.lines if ln.startswith("count:")]
    assert counts == list(range(len(counts)))
