"""Chaos: a proxy that delays, splits, stalls and cuts the connection under sustained load.

Output-heavy processes print numbered lines at a steady rate, write-heavy processes take
numbered stdin lines of random size and acknowledge each with its length and CRC, all through
one client whose connection the proxy keeps breaking (at least `MIN_CUTS` cuts, some followed
by refused reconnects). Every output line must arrive exactly once and in order, every write
must be applied exactly once and in order, the session must be the same one throughout, and
every outage must end (resume) well inside the retention window. EXECSERVER_SOAK=1 raises the
cut count tenfold (README, Testing).
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import msgspec
import pytest

from execserver.client.client import ExecServerClient
from execserver.client.reconnect import ReconnectPolicy
from execserver.environment import OutputEvent
from execserver.environment.process import ExecProcess
from execserver.errors import ExecServerError
from execserver.remote import remote_environment
from tests.conftest import SOAK, TIME, ServerProcess
from tests.harness.faults import Chaos, CuttingProxy

MIN_CUTS = int(os.environ.get("EXECSERVER_CHAOS_CUTS", "1000" if SOAK else "100"))
OUTPUT_BYTES_PER_S = 300_000
"""Per producer. Retention is 1 MiB per process, so output survives outages up to ~3.4 s."""
RETENTION_WINDOW_S = 1024 * 1024 / OUTPUT_BYTES_PER_S

# Prints `NNNNNNNN <54 bytes>` lines (64 bytes) at up to OUTPUT_BYTES_PER_S until stdin says
# quit, then `bye N`.
PRODUCER = r"""
import os, selectors, sys, time
rate = int(sys.argv[1])
sel = selectors.DefaultSelector()
sel.register(sys.stdin.buffer, selectors.EVENT_READ)
pad = b"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQR"
n = 0
paid = time.monotonic()
while True:
    if sel.select(timeout=0.005):
        data = os.read(0, 4096)
        if not data or b"quit" in data:
            os.write(1, b"bye %d\n" % n)
            sys.exit(0)
    now = time.monotonic()
    # At most 50 ms of catch-up after a stall (a write blocked by back-pressure, a starved CPU):
    # the rate never exceeds `rate`, so an outage shorter than the retention window loses nothing.
    paid = max(paid, now - 0.05)
    count = int((now - paid) * rate / 64)
    if count > 0:
        os.write(1, b"".join(b"%08d " % i + pad + b"\n" for i in range(n, n + count)))
        n += count
        paid += count * 64 / rate
"""

# For each stdin line `<k> <payload>` prints `ack <k> <len(payload)> <crc32(payload)>`;
# on `quit`, `bye <lines seen>`.
ACKER = r"""
import sys, zlib
seen = 0
for line in sys.stdin.buffer:
    line = line.rstrip(b"\n")
    if line == b"quit":
        break
    k, _, payload = line.partition(b" ")
    sys.stdout.buffer.write(b"ack %s %d %d\n" % (k, len(payload), zlib.crc32(payload)))
    sys.stdout.buffer.flush()
    seen += 1
sys.stdout.buffer.write(b"bye %d\n" % seen)
"""


@dataclass
class Outages:
    """Implements `ClientListener`: when each connection loss began and ended."""

    started: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)

    def on_notification(self, method: str, params: msgspec.Raw) -> None:
        pass

    def on_disconnected(self) -> None:
        self.started.append(time.monotonic())

    def on_resumed(self) -> None:
        if len(self.durations) < len(self.started):
            self.durations.append(time.monotonic() - self.started[-1])

    def on_failed(self, error: ExecServerError) -> None:
        pass


@pytest.fixture(params=["ours", "reference"])
def server(request: pytest.FixtureRequest) -> ServerProcess:
    result: ServerProcess = request.getfixturevalue(request.param)
    return result


@dataclass
class Rig:
    proxy: CuttingProxy
    client: ExecServerClient
    outages: Outages
    rng: random.Random


@pytest.fixture
async def rig(server: ServerProcess) -> AsyncIterator[Rig]:
    rng = random.Random(int(os.environ.get("EXECSERVER_CHAOS_SEED", "20261121")))
    chaos = Chaos(rng, max_delay_s=0.002, split=True, stall_probability=0.005, stall_s=0.15)
    port = int(server.url.rsplit(":", 1)[1])
    async with CuttingProxy(port, chaos=chaos) as proxy:
        client = await ExecServerClient.connect(
            f"ws://127.0.0.1:{proxy.port}", policy=ReconnectPolicy(deadline_s=30 * TIME)
        )
        outages = Outages()
        client.add_listener(outages)
        yield Rig(proxy, client, outages, rng)
        await client.aclose()


async def collect(process: ExecProcess) -> bytes:
    out = bytearray()
    async for event in process:
        if isinstance(event, OutputEvent):
            out += event.data
    return bytes(out)


def check_producer(stdout: bytes) -> int:
    """Lines 0..N-1 each once and in order, then `bye N`; returns N."""
    lines = stdout.split(b"\n")
    assert lines[-1] == b"", "output ends mid-line"
    *numbered, bye, _ = lines
    assert bye.startswith(b"bye "), bye
    count = int(bye[4:])
    assert len(numbered) == count, f"{len(numbered)} lines arrived, {count} were printed"
    for index, line in enumerate(numbered):
        assert line[:9] == b"%08d " % index and len(line) == 63, f"line {index}: {line[:40]!r}"
    return count


async def test_chaos_output_and_writes_exactly_once(rig: Rig) -> None:
    """>= MIN_CUTS cuts with delays, splits and stalls: every output line and every stdin
    write exactly once and in order, on one session, each outage resumed in time."""
    env = remote_environment(rig.client)
    session = rig.client.session_id
    producers = [
        await env.process.start(
            [sys.executable, "-c", PRODUCER, str(OUTPUT_BYTES_PER_S)], pipe_stdin=True
        )
        for _ in range(2)
    ]
    ackers = [
        await env.process.start([sys.executable, "-c", ACKER], pipe_stdin=True) for _ in range(2)
    ]
    collectors = [asyncio.ensure_future(collect(p)) for p in (*producers, *ackers)]
    sent: list[list[tuple[int, int]]] = [[] for _ in ackers]
    done = asyncio.Event()
    rng = rig.rng

    async def cutter() -> None:
        while not done.is_set():
            await asyncio.sleep(rng.uniform(0.03, 0.15))
            if rig.proxy.cut() and rng.random() < 0.15:
                rig.proxy.refuse_for(rng.uniform(0.05, 0.5))

    async def writer(index: int) -> None:
        process = ackers[index]
        while rig.proxy.cuts < MIN_CUTS:
            payload = rng.randbytes(rng.randint(0, 16_000)).hex().encode()
            line = b"%d %s\n" % (len(sent[index]), payload)
            assert await process.write(line) == "accepted"
            sent[index].append((len(payload), zlib.crc32(payload)))

    cutting = asyncio.ensure_future(cutter())
    try:
        async with asyncio.timeout(240 * TIME * max(1.0, MIN_CUTS / 100)):
            await asyncio.gather(*(writer(i) for i in range(len(ackers))))
        done.set()
        await cutting
        for process in (*producers, *ackers):
            assert await process.write(b"quit\n") == "accepted"
        async with asyncio.timeout(60 * TIME):
            outputs = await asyncio.gather(*collectors)
    finally:
        done.set()
        await cutting
        for task in collectors:
            task.cancel()
    assert rig.proxy.cuts >= MIN_CUTS
    assert rig.client.session_id == session, "a new session was started instead of a resume"
    assert rig.client.reconnects >= MIN_CUTS // 2
    assert rig.outages.durations, "no outage was observed"
    assert max(rig.outages.durations) < RETENTION_WINDOW_S, rig.outages.durations
    lines = [check_producer(out) for out in outputs[: len(producers)]]
    for index, stdout in enumerate(outputs[len(producers) :]):
        expected = b"".join(
            b"ack %d %d %d\n" % (k, n, crc) for k, (n, crc) in enumerate(sent[index])
        )
        assert stdout == expected + b"bye %d\n" % len(sent[index]), "writes lost or repeated"
    for process in (*producers, *ackers):
        assert await process.wait() == 0
    written = sum(n + len(b"%d \n" % k) for s in sent for k, (n, _) in enumerate(s))
    print(
        f"\nchaos: {rig.proxy.cuts} cuts, {rig.client.reconnects} resumes "
        f"(longest outage {max(rig.outages.durations) * 1000:.0f} ms); "
        f"{sum(lines)} output lines ({sum(len(o) for o in outputs)} bytes) and "
        f"{sum(len(s) for s in sent)} writes ({written} bytes) checked exactly once"
    )
