"""Issue 22 figures: what one hostile request costs everyone else, on our server or the reference.

    .venv/bin/python bench/hardening.py [--server ours|reference] [--mib 60] [--rounds 3]
                                        [--no-pagemap]

* `stall`: while one client sends a `[0,0,...]` message of `--mib` MiB (the value limit is
  262 144), a second client sends `environment/status` every 10 ms; the figure is the longest
  wait for an answer (worst over the rounds) and the time the hostile message took.
* `pagemap`: the server's peak RSS growth after `fs/readFile` of `/proc/self/pagemap` (ours,
  under `--max-memory 256M`; the reference is not run for this one: it grows until the OOM
  killer ends it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness.servers import start_server

MiB = 1024 * 1024


def _rss(pid: int) -> tuple[int, int]:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


async def _initialized(url: str) -> websockets.ClientConnection:
    ws = await websockets.connect(url, max_size=None, ping_interval=None)
    await ws.send(json.dumps({"id": 0, "method": "initialize", "params": {"clientName": "b"}}))
    await ws.recv()
    await ws.send(json.dumps({"method": "initialized", "params": {}}))
    return ws


async def stall(url: str, mib: int) -> tuple[float, float]:
    """(longest status wait, hostile message answer time), seconds."""
    hostile = await _initialized(url)
    probe = await _initialized(url)
    values = mib * MiB // 2
    text = '{"id":1,"method":"fs/readFile","params":[' + "0," * (values - 1) + "0]}"
    fragments = [text[i : i + 4 * MiB] for i in range(0, len(text), 4 * MiB)]
    longest = 0.0
    done = asyncio.Event()

    async def ping() -> None:
        nonlocal longest
        request = 100
        while not done.is_set():
            request += 1
            started = time.perf_counter()
            await probe.send(json.dumps({"id": request, "method": "environment/status"}))
            await probe.recv()
            longest = max(longest, time.perf_counter() - started)
            await asyncio.sleep(0.01)

    pinger = asyncio.ensure_future(ping())
    started = time.perf_counter()
    await hostile.send(fragments)
    await hostile.recv()
    took = time.perf_counter() - started
    done.set()
    await pinger
    await hostile.close()
    await probe.close()
    return longest, took


async def pagemap(url: str, pid: int) -> int:
    ws = await _initialized(url)
    before = _rss(pid)[1]
    await ws.send(
        json.dumps(
            {"id": 1, "method": "fs/readFile", "params": {"path": "file:///proc/self/pagemap"}}
        )
    )
    print("  answer:", json.loads(await ws.recv())["error"]["message"][:90], "...")
    await ws.close()
    return _rss(pid)[1] - before


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=("ours", "reference"), default="ours")
    parser.add_argument("--mib", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--no-pagemap", action="store_true", help="skip the pagemap read (a build without the cap)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        extra = ["--max-memory", "256M"] if args.server == "ours" and not args.no_pagemap else []
        server = await start_server(args.server, Path(tmp), extra=extra)
        try:
            # pagemap first: the peak RSS is not yet raised by the stall runs
            if args.server == "ours" and not args.no_pagemap:
                grown = await pagemap(server.url, server.pid)
                print(f"ours: fs/readFile /proc/self/pagemap: peak RSS +{grown // MiB} MiB")
            results = [await stall(server.url, args.mib) for _ in range(args.rounds)]
            print(
                f"{args.server}: {args.mib} MiB [0,0,...]: longest status wait "
                f"{max(r[0] for r in results):.2f} s, hostile answer in "
                f"{max(r[1] for r in results):.2f} s (worst of {args.rounds})"
            )
        finally:
            with contextlib.suppress(Exception):
                await server.stop()


if __name__ == "__main__":
    asyncio.run(main())
