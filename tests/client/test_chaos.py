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
from pathlib import Path

import msgspec
import pytest

from execserver.client.client import ExecServerClient
from execserver.client.reconnect import ReconnectPolicy
from execserver.environment import OutputEvent
from execserver.environment.process import ExecProcess
from execserver.errors import ExecServerError
from execserver.relay.harness import RelayTarget
from execserver.remote import remote_environment
from tests.conftest import SOAK, TIME, ServerProcess, require_reference
from tests.harness.faults import Chaos, CuttingProxy
from tests.harness.relay import (
    CONNECTED,
    ENVIRONMENT_ID,
    EXECUTOR_TOKEN,
    HARNESS_TOKEN,
    relay_process,
    remote_executor,
    wait_for_metric,
)

MIN_CUTS = int(os.environ.get("EXECSERVER_CHAOS_CUTS", "1000" if SOAK else "100"))
OUTPUT_BYTES_PER_S = 300_000
"""Per producer, on our executor (its journal keeps every byte whatever the lag)."""
REFERENCE_OUTPUT_BYTES_PER_S = 100_000
"""Per producer, on the reference: it retains the last 1 MiB per process, and a reader that
falls further behind than that loses output — an outage counts, and so does a client starved of
CPU on a loaded machine. At this rate the reader may lag ~10 s, far beyond any outage here."""
RETENTION_BYTES = 1024 * 1024

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


@dataclass
class Rig:
    proxy: CuttingProxy
    client: ExecServerClient
    outages: Outages
    rng: random.Random
    only: bytes | None = None
    """What the cutter cuts: every connection (direct), or the harness's sockets (relay)."""
    rate: int = OUTPUT_BYTES_PER_S
    """Bytes per second per producer."""
    cut_every_s: tuple[float, float] = (0.03, 0.15)
    """Time between cuts. A relay reconnect costs a registry round trip, a WebSocket upgrade,
    a hybrid post-quantum handshake and a registry validation (~12 ms before chaos, ~2 ms
    direct), so relay rigs cut less often: with direct spacing a resume and its catch-up
    rarely finished between two cuts."""

    def cut(self) -> bool:
        return self.proxy.cut(only=self.only)

    @property
    def retention_window_s(self) -> float:
        """How long a reader may lag (an outage included) before the reference evicts output."""
        return RETENTION_BYTES / self.rate


def _rng() -> random.Random:
    return random.Random(int(os.environ.get("EXECSERVER_CHAOS_SEED", "20261121")))


def _chaos(rng: random.Random) -> Chaos:
    return Chaos(rng, max_delay_s=0.002, split=True, stall_probability=0.005, stall_s=0.15)


@pytest.fixture(params=["ours", "reference", "relay-ours", "relay-reference"])
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    """A client whose connection goes through a chaotic, cutting proxy: straight to the
    executor, or (relay-*) through our relay to an executor in --remote mode, where the proxy
    sits in front of the rendezvous and the harness's sockets are cut."""
    kind: str = request.param
    rng = _rng()
    policy = ReconnectPolicy(deadline_s=30 * TIME)
    outages = Outages()
    if not kind.startswith("relay-"):
        server: ServerProcess = request.getfixturevalue(kind)
        port = int(server.url.rsplit(":", 1)[1])
        async with CuttingProxy(port, chaos=_chaos(rng)) as proxy:
            client = await ExecServerClient.connect(f"ws://127.0.0.1:{proxy.port}", policy=policy)
            client.add_listener(outages)
            rate = REFERENCE_OUTPUT_BYTES_PER_S if kind == "reference" else OUTPUT_BYTES_PER_S
            yield Rig(proxy, client, outages, rng, rate=rate)
            await client.aclose()
        return
    executor_kind = kind.removeprefix("relay-")
    if executor_kind == "reference":
        require_reference()
    # The proxy carries both the executor's and the harness's rendezvous sockets (the relay
    # advertises one public URL); it mangles and cuts only the harness's.
    async with CuttingProxy(0, chaos=_chaos(rng), chaos_only=b"/relay/harness") as proxy:
        public = ["--public-url", f"http://127.0.0.1:{proxy.port}"]
        async with relay_process(tmp_path, public) as relay:
            proxy.retarget(relay.port)
            async with remote_executor(executor_kind, relay.url, tmp_path / "executor-home"):
                await wait_for_metric(relay.url, EXECUTOR_TOKEN, CONNECTED)
                target = RelayTarget(relay.url, ENVIRONMENT_ID, HARNESS_TOKEN)
                client = await ExecServerClient.connect_relay(target, policy=policy)
                client.add_listener(outages)
                rate = (
                    REFERENCE_OUTPUT_BYTES_PER_S
                    if executor_kind == "reference"
                    else OUTPUT_BYTES_PER_S
                )
                yield Rig(
                    proxy,
                    client,
                    outages,
                    rng,
                    only=b"/relay/harness",
                    rate=rate,
                    cut_every_s=(0.15, 0.4),
                )
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
        await env.process.start([sys.executable, "-c", PRODUCER, str(rig.rate)], pipe_stdin=True)
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
            await asyncio.sleep(rng.uniform(*rig.cut_every_s))
            if rig.cut() and rng.random() < 0.15:
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
    assert max(rig.outages.durations) < rig.retention_window_s, rig.outages.durations
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
