"""Frames per second per relay node, end to end, with cheap load generators: the fleet of
bench/fleet_scale.py (3 NATS servers with JetStream, 3 relay nodes, the recipe's HAProxy,
started by its `running_fleet`), executors and harness sockets of bench/flood_clients.py that
do the real registration, `/connect` and rendezvous upgrades and then move pre-serialised
`RelayData` frames, counted where they arrive. docs/SCALING.md has the method and the figures.

    .venv/bin/python bench/fleet_flood.py                    # ~40 s: both directions, both modes
    .venv/bin/python bench/fleet_flood.py --rate 20000       # offer 20,000 frames/s per node
    .venv/bin/python bench/fleet_flood.py --frame-bytes 60000 --seconds 3

Per mode (harness sockets on their executor's node, `same`, or on the next node, `cross`:
their frames cross NATS) and direction (harness to executor, executor to harness): every
socket floods at once; after `--warmup` seconds the receiving sockets' counts, the nodes'
/metrics and the CPU time of every process are read, and again `--seconds` later. Frames/s per
node are the frames counted at the receiving sockets, by the node that holds their executor.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))  # this checkout's execserver, not an installed one

from bench.compare import ServerFailed, fmt, format_table, machine_info, run_cancellable
from bench.fleet_scale import (
    NODES,
    POLL_S,
    FleetOptions,
    FleetUnderTest,
    WorkerProcess,
    counter,
    cpu_of,
    cpu_pressure,
    running_fleet,
)

MODES = {"same": 0, "cross": 1}
"""Mode → how many nodes after the executor's the harness sockets dial."""
DIRECTIONS = ("to_executor", "to_harness")
READY_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 30.0
"""After a flood stops, the longest its queued frames may take to arrive."""
WORKER_SCRIPT = ROOT / "bench" / "flood_clients.py"


class Flood:
    def __init__(
        self,
        fleet: FleetUnderTest,
        executors: WorkerProcess,
        harnesses: WorkerProcess,
        args: argparse.Namespace,
    ) -> None:
        self.fleet = fleet
        self.executors = executors
        self.harnesses = harnesses
        self.args = args
        self.envs = [f"flood-{i:04d}" for i in range(NODES * args.executors_per_node)]
        self.holder: dict[str, str] = {}
        """Environment id → the node holding its executor (from the bundles)."""

    async def attach(self) -> None:
        await self.executors.call(
            cmd="executors",
            token=self.fleet.executor_token,
            registry_url=self.fleet.registry_url,
            envs=self.envs,
        )
        await self.fleet.wait_until(
            "executors_connected", lambda v: sum(v) >= len(self.envs), "executors attached"
        )

    async def open(self, shift: int) -> dict[str, list[str]]:
        """`streams_per_executor` harness sockets per executor, each claiming its stream;
        returns env → its stream ids once every executor has received their resumes."""
        before = (await self.executors.call(cmd="counts"))["sockets"]
        streams = {
            env: [str(uuid.uuid4()) for _ in range(self.args.streams_per_executor)]
            for env in self.envs
        }
        answer = await self.harnesses.call(
            cmd="harnesses",
            token=self.fleet.harness_token,
            registry_url=self.fleet.registry_url,
            nodes=[self.fleet.node_id(i) for i in range(NODES)],
            streams=[[env, sid, shift] for env, sids in streams.items() for sid in sids],
        )
        env_of = {sid: env for env, sids in streams.items() for sid in sids}
        for stream_id, holder, _node in answer["holders"]:
            self.holder[env_of[stream_id]] = holder
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            now = (await self.executors.call(cmd="counts"))["sockets"]
            if all(now[env][0] - before[env][0] >= len(sids) for env, sids in streams.items()):
                return streams
            if time.monotonic() > deadline:
                raise ServerFailed("the executors did not receive every stream's first frame")
            await asyncio.sleep(POLL_S)  # a poll with a deadline

    async def measure(
        self, mode: str, direction: str, streams: dict[str, list[str]]
    ) -> dict[str, Any]:
        args = self.args
        if direction == "to_executor":
            sender, sink = self.harnesses, self.executors
            targets = {sid: [sid] for sids in streams.values() for sid in sids}
            node_of = {env: self.holder[env] for env in streams}
        else:
            sender, sink = self.executors, self.harnesses
            targets = dict(streams)
            node_of = {sid: self.holder[env] for env, sids in streams.items() for sid in sids}
        # `--rate` is per node: shared by the sockets sending the streams of that node.
        env_of = {sid: env for env, sids in streams.items() for sid in sids}
        sender_node = {key: self.holder[env_of.get(key, key)] for key in targets}
        per_node = Counter(sender_node.values())
        rates = {key: args.rate / per_node[node] for key, node in sender_node.items()}
        received = (await sink.call(cmd="counts"))["sockets"]
        sent = (await sender.call(cmd="counts"))["sockets"]
        await sender.call(cmd="flood", targets=targets, frame_bytes=args.frame_bytes, rates=rates)
        try:
            await asyncio.sleep(args.warmup)  # let the flood reach its steady state
            first = await self._sample(sink)
            await asyncio.sleep(args.seconds)  # the measured window
            last = await self._sample(sink)
        finally:
            await sender.call(cmd="stop")
        stopped = time.monotonic()
        # Every frame sent must arrive (the relay never drops a frame of an open stream);
        # what the sockets, HAProxy and the relays had queued arrives after the stop.
        while True:
            sent_now = (await sender.call(cmd="counts"))["sockets"]
            received_now = (await sink.call(cmd="counts"))["sockets"]
            out = sum(sent_now[key][2] - sent[key][2] for key in targets)
            arrived = sum(received_now[key][0] - received[key][0] for key in node_of)
            if arrived >= out:
                break
            if time.monotonic() - stopped > DRAIN_TIMEOUT_S:
                print(f"{mode}/{direction}: {out - arrived} frames lost", file=sys.stderr)
                break  # lost (a reset stream): reported, the run goes on
            await asyncio.sleep(POLL_S)  # a poll with a deadline
        drained_s = time.monotonic() - stopped
        pages = await self.fleet.scrape_all()
        closed = [key for key in last["counts"]["closed"] if key in node_of]
        if closed:
            raise ServerFailed(f"{mode}/{direction}: sockets closed during the flood: {closed[:5]}")
        wall = last["counts"]["at"] - first["counts"]["at"]
        delivered: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for key, node in node_of.items():
            frames_before, bytes_before, _ = first["counts"]["sockets"][key]
            frames_after, bytes_after, _ = last["counts"]["sockets"][key]
            delivered[node][0] += frames_after - frames_before
            delivered[node][1] += bytes_after - bytes_before
        nodes = []
        for index in range(NODES):
            node = self.fleet.node_id(index)
            frames, moved = delivered.get(node, [0, 0])
            used = last["relay_cpu"][index] - first["relay_cpu"][index]
            forwarded = counter(last["pages"][index], "frames_forwarded_total") - counter(
                first["pages"][index], "frames_forwarded_total"
            )
            nodes.append(
                {
                    "node": node,
                    "executors": sum(1 for env in streams if self.holder[env] == node),
                    "frames_per_s": frames / wall,
                    "mb_per_s": moved / wall / 1e6,
                    "relay_cpu_share": used / wall,
                    "forwarded_per_s": forwarded / wall,
                    "forwarded_per_cpu_s": forwarded / used if used > 0 else None,
                }
            )
        shares = {part: (last["cpu"][part] - first["cpu"][part]) / wall for part in first["cpu"]}
        total = sum(n["frames_per_s"] for n in nodes)
        return {
            "mode": mode,
            "direction": direction,
            "sockets": len(targets),
            "offered_per_node": args.rate or None,
            "seconds": wall,
            "frames_per_s_per_node": total / NODES,
            "frames_sent": out,
            "frames_arrived": arrived,
            "drained_s": drained_s,
            "stream_resets": sum(counter(page, "stream_resets_total") for page in pages),
            "nodes_alive": [page.get("fleet_nodes_alive") for page in pages],
            "nodes": nodes,
            "cpu_share": shares,
            "cpu_pressure": cpu_pressure(),
        }

    async def _sample(self, sink: WorkerProcess) -> dict[str, Any]:
        fleet = self.fleet
        counts = await sink.call(cmd="counts")
        return {
            "counts": counts,
            "relay_cpu": fleet.relay_cpu(),
            "cpu": {
                "nats": fleet.nats_cpu(),
                "haproxy": sum(cpu_of(b.pid) for b in fleet.balancers),
                "clients": sum(cpu_of(pid) for pid in fleet.clients),
            },
            "pages": await fleet.scrape_all(),
        }

    async def run(self) -> list[dict[str, Any]]:
        await self.attach()
        results = []
        for mode in self.args.modes.split(","):
            streams = await self.open(MODES[mode])
            for direction in DIRECTIONS:
                print(f"flood {mode} {direction}", file=sys.stderr)
                results.append(await self.measure(mode, direction, streams))
            await self.harnesses.call(cmd="close")
        return results


HEADER = ["mode", "direction", "unit", "node0", "node1", "node2", "per node"]


def rows(results: list[dict[str, Any]]) -> list[list[str]]:
    out: list[list[str]] = []
    for result in results:
        nodes = result["nodes"]
        label = [result["mode"], result["direction"]]

        def add(
            unit: str,
            key: str,
            total: float | None,
            nodes: list[Any] = nodes,
            label: list[str] = label,
        ) -> None:
            out.append([*label, unit, *(fmt(n[key]) for n in nodes), fmt(total)])

        add("frames/s delivered", "frames_per_s", result["frames_per_s_per_node"])
        add("MB/s delivered", "mb_per_s", sum(n["mb_per_s"] for n in nodes) / NODES)
        add("relay CPU share", "relay_cpu_share", None)
        add("relay frames per CPU-s", "forwarded_per_cpu_s", None)
        shares = result["cpu_share"]
        out.append(
            [*label, "frames sent / arrived, s to drain", str(result["frames_sent"]),
             str(result["frames_arrived"]), fmt(result["drained_s"]),
             f"{result['stream_resets']:.0f} resets"]
        )  # fmt: skip
        out.append(
            [
                *label,
                "CPU share: NATS / HAProxy / clients",
                fmt(shares["nats"]),
                fmt(shares["haproxy"]),
                fmt(shares["clients"]),
                "",
            ]
        )
    return out


def render(results: dict[str, Any], markdown: bool) -> str:
    meta = results["meta"]
    notes = [
        f"executors per node {meta['executors_per_node']}, harness sockets per executor "
        f"{meta['streams_per_executor']}, frames of {meta['frame_bytes']} bytes, "
        f"offered {meta['rate'] or 'as fast as the sockets drain'}",
        f"load average {meta['loadavg_start']} -> {meta['loadavg_end']}; "
        f"{meta['cpu_pressure_start']} -> {meta['cpu_pressure_end']}",
    ]
    return format_table(HEADER, rows(results["floods"]), markdown, notes)


async def main_async(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="execserver-fleet-flood-"))
    options = FleetOptions(relay_args=shlex.split(args.relay_args or ""))
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    load_start = list(os.getloadavg())
    pressure_start = cpu_pressure()
    began = time.monotonic()
    print(f"workdir {workdir}", file=sys.stderr)
    async with running_fleet(workdir, options) as fleet:
        executors = await WorkerProcess.start("executors", workdir, WORKER_SCRIPT)
        harnesses = await WorkerProcess.start("harnesses", workdir, WORKER_SCRIPT)
        fleet.clients = [executors.process.pid, harnesses.process.pid]
        try:
            floods = await Flood(fleet, executors, harnesses, args).run()
        finally:
            await asyncio.gather(executors.stop(), harnesses.stop())
    results = {
        "meta": {
            "command": shlex.join([Path(sys.executable).name, *sys.argv]),
            "started_at": started_at,
            "duration_s": round(time.monotonic() - began, 1),
            "machine": machine_info(),
            "loadavg_start": [round(x, 2) for x in load_start],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "cpu_pressure_start": pressure_start,
            "cpu_pressure_end": cpu_pressure(),
            "executors_per_node": args.executors_per_node,
            "streams_per_executor": args.streams_per_executor,
            "frame_bytes": args.frame_bytes,
            "rate": args.rate,
        },
        "floods": floods,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_bytes(msgspec.json.format(msgspec.json.encode(results), indent=1))
    print(render(results, args.markdown))
    print(f"\n{results['meta']['duration_s']} s; raw figures in {args.json}", file=sys.stderr)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--executors-per-node", type=int, default=4)
    parser.add_argument(
        "--streams-per-executor", type=int, default=2, help="harness sockets per executor"
    )
    parser.add_argument("--frame-bytes", type=int, default=270, help="bytes per RelayMessageFrame")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="frames/s offered per node (0: as fast as possible)"
    )
    parser.add_argument("--modes", default="same,cross", help="same, cross or both")
    parser.add_argument("--warmup", type=float, default=1.5, help="seconds before measuring")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per flood")
    parser.add_argument("--relay-args", help="extra arguments for every `execserver relay`")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "flood-results.json")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--render", type=Path, help="only print the table of a JSON result")
    args = parser.parse_args()
    if args.render:
        print(render(msgspec.json.decode(args.render.read_bytes()), args.markdown))
        return
    if set(args.modes.split(",")) - set(MODES):
        parser.error("--modes: same, cross or same,cross")
    run_cancellable(main_async(args), "processes")


if __name__ == "__main__":
    main()
