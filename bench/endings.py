"""What whole-tree kill and limits cost per spawn (issue 20): one-shot latency, interleaved.

Variants, each a `process/start` of `/bin/true` -> its `process/closed`, one WebSocket
connection per server, rounds interleaved (A B C ..., then reversed) so load drifts hit all:

* `before`: a checkout without per-process cgroups (`--before-src`, e.g. an older `src/`);
* `default`: this checkout with default flags (every process in its own cgroup);
* `no-cgroups`: this checkout with `--no-process-cgroups` (the process tree walk only; the crash
  watchdog in tree mode, told of each child over a pipe);
* `before-no-cgroups`: the `--before-src` checkout with `--no-process-cgroups` (before the
  watchdog's tree mode: no watchdog without cgroups);
* `limited`: the `default` server, each start with `limits` (memory, pids, cpus): the cost of a
  limited spawn (on cgroup v1 the spawning thread joins the memory and cpu cgroups for it).

    python bench/endings.py [--runs 300] [--before-src /path/to/old/src]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.latency import Client, percentile, start

LIMITS = {"memoryBytes": 256 * 1024 * 1024, "pids": 64, "cpus": 1.0}


def server(src: Path, *flags: str) -> tuple[subprocess.Popen[bytes], str]:
    env_src = f"PYTHONPATH={src}"
    command = ["env", env_src, sys.executable, "-m", "execserver", "serve", *flags]
    return start(command)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--before-src", type=Path, help="src/ of a build without cgroups")
    parser.add_argument(
        "--variants",
        default="before,default,no-cgroups,limited",
        help="comma-separated subset to run (limited spawns disturb their neighbours: the "
        "memory cgroups they create and remove keep the kernel busy for a while)",
    )
    args = parser.parse_args()
    processes: list[subprocess.Popen[bytes]] = []
    urls: dict[str, str] = {}
    wanted = set(args.variants.split(","))
    try:
        for name, src, flags in [
            ("before", args.before_src, ()),
            ("default", ROOT / "src", ()),
            ("no-cgroups", ROOT / "src", ("--no-process-cgroups",)),
            ("before-no-cgroups", args.before_src, ("--no-process-cgroups",)),
        ]:
            if src is None or (
                name not in wanted and not (name == "default" and "limited" in wanted)
            ):
                continue
            process, urls[name] = server(src, "--max-sessions", "1000", *flags)
            processes.append(process)
        clients = {name: await Client.connect(url) for name, url in urls.items()}
        variants: list[tuple[str, Client, dict[str, Any]]] = [
            (name, client, {}) for name, client in clients.items() if name in wanted
        ]
        if "limited" in wanted:
            variants.append(("limited", clients["default"], {"limits": LIMITS}))
        samples: dict[str, list[float]] = {name: [] for name, _, _ in variants}
        for name, client, extra in variants:  # warm-up
            for i in range(10):
                await client.one_shot(f"warm-{name}-{i}", ["/bin/true"], False, extra)
        for run in range(args.runs):
            order = variants if run % 2 == 0 else list(reversed(variants))
            for name, client, extra in order:
                samples[name].append(
                    await client.one_shot(f"{name}-{run}", ["/bin/true"], False, extra)
                )
        load = os.getloadavg()[0]
        print(f"/bin/true start->closed, {args.runs} runs each, ms (load average {load:.2f})")
        for name, values in samples.items():
            ms = [v * 1000 for v in values]
            print(
                f"  {name:10s} p50 {statistics.median(ms):6.3f}  p95 {percentile(ms, 0.95):6.3f}"
                f"  p99 {percentile(ms, 0.99):6.3f}  min {min(ms):6.3f}"
            )
        # Each variant against its base: p50s, and the median of the per-round differences
        # (each round runs the variants back to back, so a load swing hits both sides alike).
        for base, names in (
            ("before", [n for n in samples if not n.startswith("before")]),
            ("before-no-cgroups", ["no-cgroups"]),
        ):
            for name in [n for n in names if base in samples and n in samples]:
                delta = statistics.median(samples[name]) - statistics.median(samples[base])
                paired = statistics.median(
                    a - b for a, b in zip(samples[name], samples[base], strict=True)
                )
                print(
                    f"  {name} - {base}: p50 {delta * 1000:+.3f} ms, "
                    f"paired median {paired * 1000:+.3f} ms"
                )
    finally:
        for process in processes:
            process.terminate()
            process.wait()


if __name__ == "__main__":
    asyncio.run(main())
