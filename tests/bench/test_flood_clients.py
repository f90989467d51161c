"""bench/flood_clients.py against a real relay (in process, one node): its executors and
harness sockets do the real registration, `/connect` and upgrades, and every pre-built frame
they flood is routed by the relay and counted where it arrives, in both directions."""

from __future__ import annotations

import uuid

from bench.flood_clients import FloodWorker

from tests.harness.polling import poll_async
from tests.relay.support import EXECUTOR_TOKEN, HARNESS_TOKEN, running_relay


async def _arrived(sink: FloodWorker, keys: list[str]) -> int:
    counts = (await sink.handle({"cmd": "counts"}))["sockets"]
    return sum(counts[key][0] for key in keys)


async def _flood(
    sender: FloodWorker,
    sink: FloodWorker,
    targets: dict[str, list[str]],
    keys: list[str],
    rates: dict[str, float] | None = None,
) -> int:
    """Flood `targets` from `sender` (at `rates`, default as fast as it drains) until
    `sink`'s sockets `keys` counted 1,000 frames more, stop, wait until every frame sent has
    arrived; the frames sent."""
    base = await _arrived(sink, keys)

    async def at_least(count: int) -> bool:
        return await _arrived(sink, keys) - base >= count

    await sender.handle({"cmd": "flood", "targets": targets, "frame_bytes": 270, "rates": rates})
    try:
        await poll_async(lambda: at_least(1000), what="flooded frames arriving")
    finally:
        await sender.handle({"cmd": "stop"})
    counts = (await sender.handle({"cmd": "counts"}))["sockets"]
    sent: int = sum(counts[key][2] for key in targets)
    await poll_async(lambda: at_least(sent), what="every frame sent arriving")
    assert await _arrived(sink, keys) - base == sent
    return sent


async def test_flood_clients_move_every_frame_through_a_relay() -> None:
    async with running_relay() as relay:
        executors, harnesses = FloodWorker(), FloodWorker()
        try:
            env = "flood-env"
            await executors.handle(
                {"cmd": "executors", "token": EXECUTOR_TOKEN, "registry_url": relay.url,
                 "envs": [env]}
            )  # fmt: skip
            ids = [str(uuid.uuid4()), str(uuid.uuid4())]
            opened = await harnesses.handle(
                {"cmd": "harnesses", "token": HARNESS_TOKEN, "registry_url": relay.url,
                 "nodes": [], "streams": [[env, sid, 0] for sid in ids]}
            )  # fmt: skip
            assert sorted(holder[0] for holder in opened["holders"]) == sorted(ids)

            async def resumes() -> bool:  # each stream's first frame reaches the executor
                return await _arrived(executors, [env]) == 2

            await poll_async(resumes, what="the streams' resumes")
            # Harness to executor (one socket per stream, as fast as they drain), then
            # executor to harness (the executor's socket floods both streams, paced).
            assert await _flood(harnesses, executors, {sid: [sid] for sid in ids}, [env]) > 0
            assert await _flood(executors, harnesses, {env: ids}, ids, {env: 5000.0}) > 0
            counts = (await harnesses.handle({"cmd": "counts"}))["sockets"]
            assert all(counts[sid][0] > 0 for sid in ids), counts
            assert "frames_dropped_total{" not in await relay.metrics()
        finally:
            await executors.aclose()
            await harnesses.aclose()
