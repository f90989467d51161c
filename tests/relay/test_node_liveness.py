"""Node liveness in a fleet (`NodeDirectory`) on a real NATS server: late heartbeats alone are no
death. A node not heard of for the TTL is probed directly, and declared dead only when the probe
fails. A cross-node flood used to delay heartbeats for seconds while every node was up, and a
node then reset the streams of a node that was well (docs/SCALING.md, bench/fleet_flood.py)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from execserver.relay.service.metrics import RelayMetrics
from execserver.relay.service.nats_state import connect_nats
from execserver.relay.service.nodes import NodeDirectory
from tests.harness.nats import nats_cluster
from tests.harness.polling import poll

HEARTBEAT_S = 0.1
TTL_S = 0.4
SILENT_S = 3600.0
"""The quiet node's heartbeat period: it announces itself once, at start, and never again."""


async def test_a_node_without_heartbeats_is_dead_only_once_a_probe_fails(tmp_path: Path) -> None:
    async with nats_cluster(tmp_path, size=1) as cluster, contextlib.AsyncExitStack() as stack:
        watcher_nc = await connect_nats(cluster.urls, name="watcher")
        stack.push_async_callback(watcher_nc.close)
        metrics = RelayMetrics()
        watcher = await NodeDirectory.open(
            watcher_nc, "watcher", None, heartbeat_s=HEARTBEAT_S, ttl_s=TTL_S, metrics=metrics
        )
        stack.push_async_callback(watcher.aclose)
        changes: list[tuple[str, bool]] = []
        watcher.subscribe(lambda node_id, alive: changes.append((node_id, alive)))
        quiet_nc = await connect_nats(cluster.urls, name="quiet")
        quiet = await NodeDirectory.open(quiet_nc, "quiet", None, heartbeat_s=SILENT_S)
        await poll(lambda: watcher.alive("quiet"), what="the quiet node announced")

        # Its heartbeats have stopped (as a flood delays them) but it answers: alive, again
        # and again, each time the TTL runs out.
        def answered() -> int:
            return metrics.value("node_probes_total", outcome="answered")

        await poll(lambda: answered() >= 3, what="three probes answered")
        assert watcher.alive("quiet")
        assert changes == [("quiet", True)]
        assert metrics.value("node_probes_total", outcome="failed") == 0

        # Gone for real (its connection closed, its key left behind as by SIGKILL): the next
        # probe finds no responder and the node is dead.
        await quiet_nc.close()
        await poll(lambda: not watcher.alive("quiet"), what="the quiet node declared dead")
        assert changes == [("quiet", True), ("quiet", False)]
        assert metrics.value("node_probes_total", outcome="failed") == 1
        await quiet.aclose()


async def test_close_ends_the_heartbeats_when_a_nats_call_loses_the_cancellation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nats-py waits with `asyncio.wait_for`, which on Python 3.11 returns a reply that arrives
    together with the cancellation instead of raising it. A heartbeat that loses `aclose()`'s
    cancellation that way must not keep the loop (and `aclose()`) running forever, as it once
    did in a test run."""
    async with nats_cluster(tmp_path, size=1) as cluster:
        nc = await connect_nats(cluster.urls, name="closing")
        try:
            directory = await NodeDirectory.open(nc, "closing", None, heartbeat_s=1.0)
            beating = asyncio.Event()

            async def beat_losing_the_cancellation() -> None:
                beating.set()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(3600)  # cancelled: returns, as wait_for can

            monkeypatch.setattr(directory, "beat", beat_losing_the_cancellation)
            await asyncio.wait_for(beating.wait(), 10)
            closing = asyncio.ensure_future(directory.aclose())
            done, _ = await asyncio.wait({closing}, timeout=5)
            assert closing in done, "aclose() still waits for its heartbeat loop"
            await closing
        finally:
            await nc.close()
