"""Failover of a relay fleet with a command printing a counter throughout, for the fleet tests
and bench/nats_failover.py: our client runs the counter through the fleet, a fault (SIGKILL
of the executor's node, or of a NATS server) happens once 20 lines arrived, and every line
must arrive exactly once, then exit code 7, on the same session.

    took = await failover(fleet, tmp_path, "ours", "nats")  # seconds: kill to next line
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from execserver.client.client import ExecServerClient
from execserver.client.reconnect import ReconnectPolicy
from execserver.environment import OutputEvent
from execserver.relay.harness import RelayTarget
from execserver.remote import remote_environment
from tests.conftest import TIME
from tests.harness.fleet import Fleet
from tests.harness.relay import ENVIRONMENT_ID, HARNESS_TOKEN, remote_executor
from tests.harness.servers import REFERENCE_VERSION

COUNTER_LINES = 160
COUNTER = (
    "import sys, time\n"
    f"for i in range({COUNTER_LINES}):\n"
    "    print(i, flush=True)\n"
    "    time.sleep(0.05)\n"
    "sys.exit(7)\n"
)


@dataclass
class CounterRun:
    """A counter command through our client; when each line arrived."""

    lines: list[bytes] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    exit_code: int | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once 20 lines have arrived."""


async def run_counter(client: ExecServerClient, cwd: Path, run: CounterRun) -> None:
    env = remote_environment(client)
    process = await env.process.start([sys.executable, "-c", COUNTER], cwd=str(cwd))
    pending = b""
    async for event in process:
        if isinstance(event, OutputEvent):
            pending += event.data
            *complete, pending = pending.split(b"\n")
            now = time.monotonic()
            for line in complete:
                run.lines.append(line)
                run.arrivals.append(now)
            if len(run.lines) >= 20:
                run.started.set()
    run.exit_code = await process.wait()


def check_counter(run: CounterRun) -> None:
    assert run.lines == [b"%d" % i for i in range(COUNTER_LINES)], (
        f"{len(run.lines)} lines, first wrong at "
        f"{next((i for i, line in enumerate(run.lines) if line != b'%d' % i), None)}"
    )
    assert run.exit_code == 7


def recovery_s(run: CounterRun, fault_at: float) -> float:
    """From the fault to the first line that arrived after it."""
    after = [t for t in run.arrivals if t > fault_at]
    assert after, "no line arrived after the fault"
    return after[0] - fault_at


NatsVictim = Callable[[Fleet, int], Awaitable[int]]
"""Picks the NATS server to kill, given the fleet and the harness's node (which the stream
crosses NATS from): the index of the server."""


async def harness_server(fleet: Fleet, harness_node: int) -> int:
    """The NATS server the harness's node is connected to (its streams through NATS reset)."""
    server = fleet.nats.server_of(f"execserver-relay-{fleet.node_id(harness_node)}")
    assert server is not None
    return server


async def failover(
    fleet: Fleet,
    tmp_path: Path,
    executor_kind: str,
    fault: str,
    *,
    version: str = REFERENCE_VERSION,
    nats_victim: NatsVictim = harness_server,
) -> float:
    """Run the counter through our client while `fault` ("node": the executor's node;
    "nats": the NATS server `nats_victim` picks) is killed; returns the recovery time."""
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(
            remote_executor(executor_kind, fleet.url, tmp_path / "executor", version=version)
        )
        holder = await fleet.holder()
        other = (holder + 1) % len(fleet.ports)
        if not fleet.advertise:  # the harness lands where the balancer sends it: not the holder
            fleet.balancer.preferred = fleet.ports[other]
        target = RelayTarget(fleet.url, ENVIRONMENT_ID, HARNESS_TOKEN)
        client = await ExecServerClient.connect_relay(
            target, policy=ReconnectPolicy(deadline_s=90 * TIME, max_interval_s=0.5)
        )
        stack.push_async_callback(client.aclose)
        session = client.session_id
        run = CounterRun()
        counting = asyncio.ensure_future(run_counter(client, tmp_path, run))
        try:
            async with asyncio.timeout(30 * TIME):
                await run.started.wait()
            if fault == "node":
                fault_at = time.monotonic()
                await fleet.kill_node(holder)
            else:
                # The stream crosses NATS; kill the NATS server the harness's node is on.
                assert await fleet.gauge(other, "fleet_remote_executors") == 1
                server = await nats_victim(fleet, other)
                fault_at = time.monotonic()
                await fleet.nats.kill(server)
            async with asyncio.timeout(120 * TIME):
                await counting
        finally:
            counting.cancel()
        check_counter(run)
        assert client.session_id == session, "a new session instead of a resume"
        took = recovery_s(run, fault_at)
        print(f"\nfailover ({fault} killed, {executor_kind} executor): recovered in {took:.2f} s")
        return took


__all__ = ["COUNTER_LINES", "CounterRun", "NatsVictim", "check_counter", "failover", "recovery_s"]
