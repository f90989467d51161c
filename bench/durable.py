"""Processes that outlive their sessions: replay from the output journal, and upgrade downtime.

    .venv/bin/python bench/durable.py [--quick] [--rounds N] [--size-mib N] [--upgrades N]
                                      [--json PATH]

Starts our server (`python -m execserver serve`, default flags: the journal lives in a private
temporary state directory) and measures:

* `replay_client_mibps`: a detached process wrote SIZE MiB while nobody was attached; the time
  from `env.process.attach(handle)` (the Python client, what `execserver attach` runs) to the
  last byte, with every byte compared. Output past the 1 MiB memory window comes from disk.
* `replay_read_mibps`: the same bytes read with raw `process/read` calls (`maxBytes` 4 MiB,
  bench/wsclient.py, base64 counted not decoded): what the server's journal reads cost alone.
* `upgrade_total_s`: from `kill -HUP` to the first successful resume of a connected client
  (the client reconnects every 100 ms, as ours does by default). Includes the check of the
  installed code in a child, during which the old server still serves.
* `upgrade_blackout_s`: from the moment the client's connection drops (the `execve`) to the
  resume: the time nobody is served. A counter printing every 50 ms runs throughout and every
  line is checked to arrive exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests.harness.servers import start_server

from bench.wsclient import b64_decoded_len, connect
from execserver.client.client import ClientState
from execserver.protocol.process import ProcessOutputChunk
from execserver.remote import connect_environment

MiB = 1024 * 1024
WRITER = (
    "import random, sys\n"
    "data = random.Random({seed}).randbytes({size})\n"
    "sys.stdout.buffer.write(data)\n"
    "sys.stdout.flush()\n"
)
COUNTER = (
    "import time\ni = 0\nwhile True:\n    print(i, flush=True)\n    i += 1\n    time.sleep(0.05)\n"
)


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "n": len(samples),
    }


async def replay(url: str, size: int, seed: int) -> tuple[float, float]:
    """(client MiB/s, raw read MiB/s) for one detached process of `size` bytes."""
    async with await connect_environment(url) as env:
        process = await env.process.start(
            [sys.executable, "-c", WRITER.format(seed=seed, size=size)], detach=True
        )
        handle = process.handle
        assert handle is not None
        while True:  # poll with a deadline: the writer is done when the process closed
            (info,) = [p for p in await env.process.list_processes() if p.handle == handle]
            if info.state == "closed":
                break
            await asyncio.sleep(0.05)
        assert info.output_bytes == size, info
    expected = random.Random(seed).randbytes(size)

    async with await connect_environment(url) as env:
        start = time.perf_counter()
        attached = await env.process.attach(handle)
        parts = []
        async for event in attached:
            if isinstance(event, ProcessOutputChunk):
                parts.append(event.chunk)
        client_s = time.perf_counter() - start
    if b"".join(parts) != expected:
        raise SystemExit("replay: the bytes differ")

    rpc = await connect(url, timeout=30)  # connected and initialized
    try:
        await rpc.call("process/attach", {"handle": handle, "processId": "raw"})
        start = time.perf_counter()
        after = 0
        total = 0
        while True:
            result = await rpc.call(
                "process/read", {"processId": "raw", "afterSeq": after, "maxBytes": 4 * MiB}
            )
            if not result["chunks"]:
                break
            total += sum(b64_decoded_len(c["chunk"]) for c in result["chunks"])
            after = result["nextSeq"] - 1
        read_s = time.perf_counter() - start
    finally:
        rpc.close()
    if total != size:
        raise SystemExit(f"raw replay: {total} bytes, expected {size}")
    async with await connect_environment(url) as env:
        await env.process.kill(handle)
    return size / MiB / client_s, size / MiB / read_s


async def upgrades(pid: int, url: str, count: int) -> tuple[list[float], list[float]]:
    """(HUP -> resume, drop -> resume) seconds for `count` upgrades, a counter running."""
    totals: list[float] = []
    blackouts: list[float] = []
    async with await connect_environment(url) as env:
        client = env.process.client  # type: ignore[attr-defined]
        process = await env.process.start([sys.executable, "-c", COUNTER])
        lines: list[int] = []
        pending = b""

        async def collect() -> None:
            nonlocal pending
            async for event in process:
                if isinstance(event, ProcessOutputChunk):
                    *complete, pending = (pending + event.chunk).split(b"\n")
                    lines.extend(int(x) for x in complete)

        collector = asyncio.ensure_future(collect())
        await asyncio.sleep(0.5)
        for _ in range(count):
            reconnects = client.reconnects
            sent = time.perf_counter()
            os.kill(pid, signal.SIGHUP)
            await client.wait_for_state(ClientState.RECOVERING)
            dropped = time.perf_counter()
            await client.wait_for_state(ClientState.CONNECTED)
            resumed = time.perf_counter()
            assert client.reconnects == reconnects + 1
            totals.append(resumed - sent)
            blackouts.append(resumed - dropped)
            await asyncio.sleep(1.0)  # let the new image settle before the next signal
        await process.terminate()
        await asyncio.wait_for(collector, 30)
    if lines != list(range(len(lines))):
        raise SystemExit("upgrade: counter lines lost or repeated")
    return totals, blackouts


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds, 16 MiB, 2 upgrades")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size-mib", type=int, default=48)
    parser.add_argument("--upgrades", type=int, default=5)
    parser.add_argument("--json", default=str(ROOT / "bench" / "durable.json"))
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.size_mib, args.upgrades = 2, 16, 2
    with tempfile.TemporaryDirectory(prefix="bench-durable-") as tmp:
        # The server runs this checkout's code, whatever the venv has installed.
        path = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
        server = await start_server("ours", Path(tmp), env={**os.environ, "PYTHONPATH": path})
        try:
            client_rates, read_rates = [], []
            for index in range(args.rounds):
                rates = await replay(server.url, args.size_mib * MiB, seed=index)
                client_rates.append(rates[0])
                read_rates.append(rates[1])
            totals, blackouts = await upgrades(server.pid, server.url, args.upgrades)
        finally:
            await server.stop()
    results: dict[str, Any] = {
        "meta": {
            "command": " ".join(sys.argv),
            "size_mib": args.size_mib,
            "load": os.getloadavg(),
            "cpus": os.cpu_count(),
        },
        "replay_client_mibps": summary(client_rates),
        "replay_read_mibps": summary(read_rates),
        "upgrade_total_s": summary(totals),
        "upgrade_blackout_s": summary(blackouts),
    }
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print("| metric | median | min | max | n |")
    print("|---|---|---|---|---|")
    for name, value in results.items():
        if name != "meta":
            print(
                f"| {name} | {value['median']:.3g} | {value['min']:.3g} | {value['max']:.3g} "
                f"| {value['n']} |"
            )


if __name__ == "__main__":
    asyncio.run(main())
