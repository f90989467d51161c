"""Two builds of our executor side by side in one run, direct and through one relay.

    .venv/bin/python bench/relay_ab.py --base PATH [--only METRIC[,METRIC]] [--rounds N]
                                       [--json PATH] [--markdown]

PATH is another checkout (a `git worktree add /tmp/base COMMIT`, say): its `src` is put first
on the path of the base build's executors, this checkout's `src` on the others'. Four slots
run interleaved in every round (forward in even rounds, reversed in odd ones, bench/compare.py's
Runner), so both builds see the same moments of a noisy host:

    direct       this build, a WebSocket straight to the executor
    relay        this build, through the relay (`serve --remote`)
    direct-base  the base build, direct
    relay-base   the base build, through the same relay

With --relay-per-build each build's executor goes through a relay of its own build instead
(both relays running side by side), which compares changes to the relay itself.

The metrics are bench/relay_compare.py's (default: oneshot_true, getmetadata, echo_rtt). The
table gives each slot's median and, per build, the added p50 through the relay; `this/base`
compares the builds slot by slot (for latencies below 1 means this build is faster). On this
kind of host alternated whole runs of one build differ by more than most changes do; a change
shows here as a difference that repeats across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness.servers import ours_command

from bench.compare import (
    OURS_EXTRA,
    Context,
    Runner,
    Server,
    fmt,
    format_table,
    prepare_files,
    start_server,
    stop_server,
)
from bench.relay_compare import (
    METRICS,
    ours_remote_command,
    relay_settings,
    relayed_slot,
    start_relay,
    wait_connected,
)
from execserver.relay.registry_client import RegistryClient

SLOTS = ("direct", "relay", "direct-base", "relay-base")
PAIRS = (("direct", "direct-base"), ("relay", "relay-base"))
DEFAULT_METRICS = "oneshot_true,getmetadata,echo_rtt"


def build_env(tree: Path) -> dict[str, str]:
    return {"PYTHONPATH": str(tree / "src")}


async def start_slots(
    workdir: Path, base: Path, relays: dict[str, Server], executor_token: str, harness_token: str
) -> tuple[dict[str, Server], list[Server], list[RegistryClient]]:
    """`relays`: the relay of each build ("" and "-base"; one Server twice when shared)."""
    slots: dict[str, Server] = {}
    processes: list[Server] = []
    registries: list[RegistryClient] = []
    executors: dict[str, list[Server]] = {}
    for suffix, tree in (("", ROOT), ("-base", base)):
        env = build_env(tree)
        relay = relays[suffix]
        direct = await start_server(
            "direct" + suffix, workdir, ours_command(extra=OURS_EXTRA), env=env
        )
        processes.append(direct)
        slots[direct.name] = direct
        environment = "ab" + suffix
        executor = await start_server(
            "relay" + suffix,
            workdir,
            ours_remote_command(relay.url, environment),
            env={**env, "CODEX_API_KEY": executor_token},
            announces=None,
        )
        processes.append(executor)
        executors.setdefault(relay.name, []).append(executor)
        slots[executor.name], registry = relayed_slot(
            executor.name, executor, relay, environment, harness_token
        )
        registries.append(registry)
    for relay in {r.name: r for r in relays.values()}.values():
        await wait_connected(relay, executor_token, executors[relay.name])
    return slots, processes, registries


def _median(record: dict[str, Any]) -> float | None:
    samples = record["samples"]
    return statistics.median(samples) if samples else None


def _added(medians: dict[str, float | None], relay: str, direct: str) -> str:
    a, b = medians[relay], medians[direct]
    return "-" if a is None or b is None else fmt(a - b)


def _ratio(medians: dict[str, float | None], a: str, b: str) -> str:
    x, y = medians[a], medians[b]
    return "-" if x is None or not y else f"{x / y:.2f}"


def rows(results: dict[str, Any]) -> list[list[str]]:
    out = []
    for name, entry in results["metrics"].items():
        medians = {slot: _median(entry["servers"][slot]) for slot in SLOTS}
        out.append(
            [
                name,
                entry["unit"],
                *(fmt(medians[slot]) for slot in SLOTS),
                _added(medians, "relay", "direct"),
                _added(medians, "relay-base", "direct-base"),
                _ratio(medians, "direct", "direct-base"),
                _ratio(medians, "relay", "relay-base"),
            ]
        )
    return out


HEADER = [
    "metric",
    "unit",
    *(f"{slot} p50" for slot in SLOTS),
    "added (this)",
    "added (base)",
    "this/base direct",
    "this/base relay",
]


async def main_async(args: argparse.Namespace) -> int:
    base = args.base.resolve()
    if not (base / "src" / "execserver").is_dir():
        print(f"relay_ab: {base} has no src/execserver", file=sys.stderr)
        return 2
    names = {n.strip() for n in args.only.split(",") if n.strip()}
    metrics = [m for m in METRICS if m.name in names]
    if not metrics or len(metrics) != len(names):
        known = ", ".join(m.name for m in METRICS)
        print(f"relay_ab: --only takes some of: {known}", file=sys.stderr)
        return 2
    settings = relay_settings(quick=False)
    if args.rounds is not None:
        settings.rounds = args.rounds
    workdir = Path(tempfile.mkdtemp(prefix="execserver-relay-ab-"))
    ctx = Context(settings, workdir)
    executor_token = "executor-" + secrets.token_hex(16)
    harness_token = "harness-" + secrets.token_hex(16)
    processes: list[Server] = []
    registries: list[RegistryClient] = []
    load_start = os.getloadavg()
    try:
        prepare_files(ctx, metrics)
        relay = await start_relay(workdir, executor_token, harness_token, [], env=build_env(ROOT))
        processes.append(relay)
        relays = {"": relay, "-base": relay}
        if args.relay_per_build:
            relays["-base"] = await start_relay(
                workdir, executor_token, harness_token, [], name="relay-of-base",
                env=build_env(base),
            )  # fmt: skip
            processes.append(relays["-base"])
        slots, started, registries = await start_slots(
            workdir, base, relays, executor_token, harness_token
        )
        processes.extend(started)
        runner = Runner(slots, ctx, metrics, slots=SLOTS, pairs=PAIRS)
        await runner.run(settings.rounds)
        for each in relays.values():
            await each.check_alive()
    finally:
        for registry in registries:
            await registry.aclose()
        for process in reversed(processes):
            await stop_server(process)
        shutil.rmtree(workdir, ignore_errors=True)
    meta = {
        "base": str(base),
        "this": str(ROOT),
        "relay_per_build": args.relay_per_build,
        "loadavg_start": list(load_start),
    }
    results = runner.results(meta)
    if args.json is not None:
        args.json.write_bytes(msgspec.json.format(msgspec.json.encode(results), indent=1))
    print(format_table(HEADER, rows(results), args.markdown, []))
    load = ", ".join(f"{x:.2f}" for x in load_start)
    relays = "a relay per build" if args.relay_per_build else "one relay (this build's)"
    print(f"\n{settings.rounds} rounds; {relays}; load average at start {load}; base {base}")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the other checkout")
    parser.add_argument("--only", default=DEFAULT_METRICS)
    parser.add_argument(
        "--relay-per-build",
        action="store_true",
        help="each build's executor through a relay of its own build (compares relays)",
    )
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
