"""Recovery of a relay fleet from the SIGKILL of one NATS server of three, measured.

Each kill runs on a fresh fleet (tests/harness/fleet.py: NATS x3 with JetStream, relay x3
behind a TCP balancer, all on 127.0.0.1) the scenario of
`tests/relay/test_fleet.py::test_fleet_failover_nats_server_killed`: our executor on one node,
our client on another (its stream crosses NATS), a command printing a counter; once 20 lines
arrived, SIGKILL of the NATS server the client's node is connected to. Every line must arrive
exactly once, then exit code 7, on the same session; the figure is the time from the kill to
the next line. docs/SCALING.md has the figures.

    .venv/bin/python bench/nats_failover.py                    # 6 kills, leaders where they fell
    .venv/bin/python bench/nats_failover.py --lead --kills 6   # worst case: the victim leads
    .venv/bin/python bench/nats_failover.py --json PATH

`--lead` first moves the leadership of the registrations and nodes buckets' streams to the
victim (a leader step-down naming it as preferred), so that each kill also costs them their
leader (JetStream elects a new one after 4-9 s of election timeout, which nats-server does
not let one configure); the authorization and claim lanes stay spread over the servers as
the relay keeps them (one lane each), so the victim also leads one lane of each. Each kill
records which streams the victim led.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))  # this checkout's execserver, not an installed one
# ... in the relay nodes too (they inherit the environment).
os.environ["PYTHONPATH"] = os.pathsep.join(
    filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])
)

import nats
from tests.harness.failover import failover, harness_server
from tests.harness.fleet import Fleet, relay_fleet

from bench.compare import machine_info, run_cancellable

RELAY_STREAMS = ("KV_relay_registrations", "KV_relay_nodes")
"""The streams `--lead` hands to the victim (the relay itself spreads the leaders of the
authorization and claim lanes over the servers, one lane each; the victim keeps its own)."""
LEAD_TIMEOUT_S = 30.0


async def move_leaders(fleet: Fleet, victim: int) -> None:
    """Make server `victim` lead every relay bucket's stream (step-downs naming it preferred),
    waiting until `/jsz` says so."""
    name = fleet.nats.servers[victim].name
    others = [url for i, url in enumerate(fleet.nats.urls) if i != victim]
    nc = await nats.connect(servers=others, name="bench-nats-failover")
    try:
        deadline = time.monotonic() + LEAD_TIMEOUT_S
        while True:
            leaders = await asyncio.to_thread(fleet.nats.leaders)
            pending = [s for s in RELAY_STREAMS if leaders.get(s) != victim]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"could not move the leaders of {pending} to {name}")
            for stream in pending:
                body = json.dumps({"placement": {"preferred": name}}).encode()
                try:
                    await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", body, timeout=2)
                except (nats.errors.Error, TimeoutError):
                    pass
            await asyncio.sleep(0.5)  # a poll with a deadline: elections take their time
    finally:
        await nc.close()


async def one_kill(index: int, workdir: Path, lead: bool) -> dict[str, Any]:
    record: dict[str, Any] = {"kill": index}

    async def victim(fleet: Fleet, harness_node: int) -> int:
        server = await harness_server(fleet, harness_node)
        if lead:
            await move_leaders(fleet, server)
        leaders = await asyncio.to_thread(fleet.nats.leaders)
        record["victim"] = fleet.nats.servers[server].name
        record["victim_led"] = sorted(s for s, i in leaders.items() if i == server)
        return server

    async with relay_fleet(workdir / "fleet", advertise=False) as fleet:
        record["recovery_s"] = round(
            await failover(fleet, workdir, "ours", "nats", nats_victim=victim), 3
        )
        pages = [await fleet.metrics(i) for i in fleet.live()]
        record["nats_reconnects"] = [
            line.split()[-1]
            for page in pages
            for line in page.splitlines()
            if line.startswith("exec_server_relay_nats_reconnects_total")
        ]
    return record


def load() -> dict[str, str]:
    """The load average and the kernel's CPU pressure now (other work shares the machine)."""
    pressure = Path("/proc/pressure/cpu")
    return {
        "loadavg": Path("/proc/loadavg").read_text().strip(),
        "cpu_pressure": pressure.read_text().splitlines()[0] if pressure.exists() else "",
    }


async def run(args: argparse.Namespace) -> int:
    results: dict[str, Any] = {
        "machine": machine_info(),
        "load_before": load(),
        "lead": args.lead,
        "kills": [],
    }
    for index in range(args.kills):
        with tempfile.TemporaryDirectory(prefix="nats-failover-") as tmp:
            record = await one_kill(index, Path(tmp), args.lead)
        results["kills"].append(record)
        print(
            f"kill {index}: {record['victim']} (led {', '.join(record['victim_led']) or 'nothing'})"
            f" -> next line after {record['recovery_s']:.2f} s",
            flush=True,
        )
    times = [k["recovery_s"] for k in results["kills"]]
    results["worst_s"] = max(times)
    results["median_s"] = statistics.median(times)
    results["load_after"] = load()
    print(
        f"{len(times)} kills: median {results['median_s']:.2f} s, worst {results['worst_s']:.2f} s"
    )
    print(f"load before: {results['load_before']}; after: {results['load_after']}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--lead", action="store_true", help="the victim leads every relay bucket")
    parser.add_argument("--json", type=Path, default=None, help="write the raw figures here")
    args = parser.parse_args()
    run_cancellable(run(args), "the fleet")


if __name__ == "__main__":
    main()
