"""Terminal size: `size` at process/start for PTY processes, `process/resize` (SIGWINCH reaches
the foreground group), and clear errors for processes without a terminal or after exit."""

from __future__ import annotations

import asyncio
import sys

import pytest

from execserver.environment.process import ExecProcess
from execserver.errors import InvalidParams, InvalidRequest
from execserver.protocol.process import ProcessOutputChunk
from execserver.remote import connect_environment
from tests.conftest import TIME
from tests.harness.wire import WireClient, process_params
from tests.server.conftest import StartServer

# Prints its terminal size at start and on every SIGWINCH, until stdin ends.
SIZE_REPORTER = (
    "import os, signal, sys\n"
    "def show(*_):\n"
    "    rows, cols = os.get_terminal_size(0).lines, os.get_terminal_size(0).columns\n"
    "    print(f'size={rows}x{cols}', flush=True)\n"
    "signal.signal(signal.SIGWINCH, show)\n"
    "show()\n"
    "sys.stdin.read()\n"
)


async def expect(process: ExecProcess, events: asyncio.Queue[bytes], text: bytes) -> bytes:
    """Collected output once `text` has appeared in it."""
    seen = b""
    async with asyncio.timeout(15 * TIME):
        while text not in seen:
            seen += await events.get()
    return seen


def pump(process: ExecProcess, events: asyncio.Queue[bytes]) -> asyncio.Task[None]:
    async def run() -> None:
        async for event in process:
            if isinstance(event, ProcessOutputChunk):
                events.put_nowait(event.chunk)

    return asyncio.ensure_future(run())


async def test_terminal_size_at_start_and_resize(start_server: StartServer) -> None:
    """A PTY process starts with the size asked for; a resize reaches it as SIGWINCH."""
    _, url = await start_server()
    async with await connect_environment(url) as env:
        process = await env.process.start(
            [sys.executable, "-c", SIZE_REPORTER], tty=True, size=(33, 101)
        )
        events: asyncio.Queue[bytes] = asyncio.Queue()
        task = pump(process, events)
        try:
            await expect(process, events, b"size=33x101")
            await process.resize(47, 133)
            await expect(process, events, b"size=47x133")
            await process.resize(5, 20)
            await expect(process, events, b"size=5x20")
        finally:
            await process.terminate()
            await asyncio.wait_for(task, 15 * TIME)


async def test_terminal_size_default_is_24x80(start_server: StartServer) -> None:
    """Without `size`, the terminal is 24x80 (the reference's)."""
    _, url = await start_server()
    async with await connect_environment(url) as env:
        result = await env.process.run(["stty", "size"], tty=True)
        assert result.stdout.strip() == b"24 80"


async def test_resize_errors(start_server: StartServer) -> None:
    """Resize of a pipe process, of an exited one, of an unknown id, or to zero: clear errors."""
    _, url = await start_server()
    async with await connect_environment(url) as env:
        pipe = await env.process.start(["sleep", "30"])
        with pytest.raises(InvalidRequest, match="needs a process started with tty"):
            await pipe.resize(30, 100)
        await pipe.terminate()
        done = await env.process.start(["true"], tty=True)
        await done.wait()
        with pytest.raises(InvalidRequest, match="the process has exited"):
            await done.resize(30, 100)
        live = await env.process.start(["sleep", "30"], tty=True)
        with pytest.raises(InvalidParams, match="at least 1 row and 1 column"):
            await live.resize(0, 100)
        await live.terminate()
    async with await WireClient.connect(url) as client:
        await client.initialize()
        unknown = await client.request(
            "process/resize", {"processId": "nope", "rows": 10, "cols": 10}
        )
        assert unknown["error"] == {"code": -32600, "message": "unknown process id nope"}
        too_big = await client.request(
            "process/start",
            {**process_params("p", ["true"], tty=True), "size": {"rows": 70000, "cols": 5}},
        )
        assert too_big["error"]["code"] == -32602
