"""Reconnect and resume through a proxy that cuts the TCP connection (PROTOCOL.md §13.3).

The main test runs long-lived processes that print numbered ticks and echo numbered stdin
lines while the proxy cuts every connection at random moments (at least 50 cuts) and
sometimes turns reconnects away. Every tick and every echo must arrive exactly once and in
order, against our server and against the pinned codex. The smaller tests pin each rule of the
recovery: in-flight calls fail, calls made while recovering wait, -32010 is retried, a
process whose missed output is gone fails alone, the deadline ends in `RecoveryFailed`.
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from execserver.client.client import ClientState, ExecServerClient
from execserver.client.reconnect import ReconnectPolicy
from execserver.environment import Environment, OutputEvent, ProcessFailed
from execserver.environment.process import ExecProcess
from execserver.errors import Disconnected, RecoveryFailed
from execserver.remote import remote_environment
from tests.conftest import TIME, ServerProcess
from tests.harness.faults import CuttingProxy

MIN_CUTS = 50

# Prints `tick N` every few ms and `echo <line>` for each stdin line, until `quit`.
TICKER = r"""
import os, selectors, sys
sel = selectors.DefaultSelector()
sel.register(sys.stdin.buffer, selectors.EVENT_READ)
tick = 0
pending = b""
while True:
    if sel.select(timeout=0.004):
        data = os.read(0, 65536)
        if not data:
            break
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line == b"quit":
                os.write(1, b"bye %d\n" % tick)
                sys.exit(0)
            os.write(1, b"echo " + line + b"\n")
    else:
        os.write(1, b"tick %d\n" % tick)
        tick += 1
"""


@pytest.fixture(params=["ours", "reference"])
def server(request: pytest.FixtureRequest) -> ServerProcess:
    result: ServerProcess = request.getfixturevalue(request.param)
    return result


@dataclass
class Proxied:
    proxy: CuttingProxy
    client: ExecServerClient
    env: Environment


@pytest.fixture
async def proxied(server: ServerProcess) -> AsyncIterator[Proxied]:
    port = int(server.url.rsplit(":", 1)[1])
    async with CuttingProxy(port) as proxy:
        client = await ExecServerClient.connect(
            f"ws://127.0.0.1:{proxy.port}", policy=ReconnectPolicy(deadline_s=30 * TIME)
        )
        env = remote_environment(client)
        async with env:
            yield Proxied(proxy, client, env)


async def collect_stdout(process: ExecProcess) -> bytes:
    out = bytearray()
    async for event in process:
        if isinstance(event, OutputEvent):
            out += event.data
    return bytes(out)


def check_ticker_output(stdout: bytes, writes: int) -> None:
    """Ticks 0..N-1 and echoes w0..w(writes-1), each once and in order, then `bye N`."""
    lines = stdout.split(b"\n")
    assert lines[-1] == b"", "output ends mid-line"
    ticks = [int(line[5:]) for line in lines if line.startswith(b"tick ")]
    echoes = [line[5:] for line in lines if line.startswith(b"echo ")]
    byes = [int(line[4:]) for line in lines if line.startswith(b"bye ")]
    assert len(ticks) + len(echoes) + len(byes) == len(lines) - 1, "unexpected lines"
    assert ticks == list(range(len(ticks))), "ticks lost, repeated or reordered"
    assert echoes == [b"w%d" % k for k in range(writes)], "writes lost, repeated or reordered"
    assert byes == [len(ticks)], "the final count disagrees with the ticks received"


async def test_reconnect_delivers_everything_exactly_once_under_cuts(proxied: Proxied) -> None:
    """At least 50 random cuts: every output byte once and in order, every write applied once."""
    rng = random.Random(20261121)
    processes = [
        await proxied.env.process.start([sys.executable, "-c", TICKER], pipe_stdin=True)
        for _ in range(3)
    ]
    collectors = [asyncio.ensure_future(collect_stdout(p)) for p in processes]
    writes = [0] * len(processes)
    done = asyncio.Event()

    async def cutter() -> None:
        while not done.is_set():
            await asyncio.sleep(rng.uniform(0.02, 0.2))
            if proxied.proxy.cut() and rng.random() < 0.2:
                proxied.proxy.refuse_for(rng.uniform(0.05, 0.4))

    async def writer(index: int) -> None:
        process = processes[index]
        while proxied.proxy.cuts < MIN_CUTS:
            assert await process.write(b"w%d\n" % writes[index]) == "accepted"
            writes[index] += 1
            await asyncio.sleep(rng.uniform(0, 0.03))
        assert await process.write(b"quit\n") == "accepted"

    cutting = asyncio.ensure_future(cutter())
    try:
        async with asyncio.timeout(240 * TIME):
            await asyncio.gather(*(writer(i) for i in range(len(processes))))
            outputs = await asyncio.gather(*collectors)
    finally:
        done.set()
        await cutting
    assert proxied.proxy.cuts >= MIN_CUTS
    assert proxied.client.reconnects >= MIN_CUTS // 2
    for process, stdout, count in zip(processes, outputs, writes, strict=True):
        assert await process.wait() == 0
        check_ticker_output(stdout, count)


async def test_reconnect_fails_calls_in_flight(proxied: Proxied) -> None:
    """A call in flight when the connection breaks fails with Disconnected (not replayed)."""
    process = await proxied.env.process.start(["sleep", "30"])
    async with process:
        read = asyncio.ensure_future(process.read(0, wait=20))
        await asyncio.sleep(0.2 * TIME)  # the long poll is now waiting on the server
        proxied.proxy.cut()
        with pytest.raises(Disconnected):
            await read
        # The client recovers; the same process is still there.
        result = await process.read(0)
        assert not result.exited


async def test_reconnect_calls_wait_while_recovering(proxied: Proxied) -> None:
    """Calls made while the server is unreachable wait and then succeed on the same session."""
    session = proxied.client.session_id
    proxied.proxy.refuse_for(1.0 * TIME)
    proxied.proxy.cut()
    await asyncio.wait_for(proxied.client.wait_for_state(ClientState.RECOVERING), 5 * TIME)
    result = await proxied.env.process.run(["echo", "after"])
    assert result.stdout == b"after\n"
    assert proxied.client.session_id == session
    assert proxied.client.state is ClientState.CONNECTED


async def test_reconnect_lost_output_fails_only_that_process(
    proxied: Proxied, server: ServerProcess
) -> None:
    """A process whose missed output was evicted fails alone; others continue. Our server
    keeps output past its memory window in the output journal (docs/protocol.md), so there
    the missed output is read back instead and nothing fails."""
    noisy = await proxied.env.process.start(
        [
            sys.executable,
            "-c",
            "import sys,time; time.sleep(0.5); sys.stdout.write('x' * 4_000_000)",
        ]
    )
    quiet = await proxied.env.process.start(["sh", "-c", "sleep 1.5; echo quiet"])
    proxied.proxy.refuse_for(3.0 * TIME)
    proxied.proxy.cut()
    if server.name == "ours":
        assert await collect_stdout(noisy) == b"x" * 4_000_000
    else:
        with pytest.raises(ProcessFailed, match="no longer retained"):
            await collect_stdout(noisy)
    assert await collect_stdout(quiet) == b"quiet\n"
    await noisy.aclose()


async def test_reconnect_deadline_ends_in_recovery_failed(server: ServerProcess) -> None:
    """When the server stays unreachable past the deadline, the client fails for good."""
    port = int(server.url.rsplit(":", 1)[1])
    async with CuttingProxy(port) as proxy:
        client = await ExecServerClient.connect(
            f"ws://127.0.0.1:{proxy.port}", policy=ReconnectPolicy(deadline_s=0.5)
        )
        async with remote_environment(client) as env:
            process = await env.process.start(["sleep", "30"])
            proxy.refuse_for(60)
            proxy.cut()
            await asyncio.wait_for(client.wait_for_state(ClientState.RECOVERING), 5 * TIME)
            with pytest.raises(RecoveryFailed):
                await asyncio.wait_for(client.wait_connected(), 10 * TIME)
            assert client.state is ClientState.FAILED
            with pytest.raises(ProcessFailed):
                await process.wait()
            with pytest.raises(RecoveryFailed):
                await env.process.run(["true"])


async def test_reconnect_retries_a_session_still_attached(proxied: Proxied) -> None:
    """Resuming while the server still holds the old connection (-32010) is retried."""
    # Abort only our side: the server keeps the old connection until the proxy lets go, so
    # every resume attempt meanwhile is answered with -32010.
    assert proxied.proxy.cut(hold_upstream=True)
    connections = proxied.proxy.connections
    await asyncio.sleep(0.5 * TIME)  # several resume attempts, each refused with -32010
    assert proxied.proxy.connections >= connections + 3
    assert proxied.client.state is ClientState.RECOVERING
    proxied.proxy.release()  # now the server sees the loss, and the resume can succeed
    result = await proxied.env.process.run(["echo", "resumed"])
    assert result.stdout == b"resumed\n"
