"""Relay mode, side by side: our executor direct vs through our relay, and ours vs the pinned
codex executor (`codex exec-server --remote`, 0.169.0) through the same relay.

    .venv/bin/python bench/relay_compare.py [--quick] [--rounds N] [--only METRIC[,METRIC]]
                                            [--json PATH] [--markdown]
    .venv/bin/python bench/relay_compare.py --render bench/relay-results.json [--markdown]

Everything runs on 127.0.0.1 and is started here: our relay (`execserver relay`, with executor
and harness token files), our executor twice (`serve --listen ws://…` for the direct slot,
`serve --remote URL --environment-id bench-ours` for the relayed one) and the codex executor
(`exec-server --remote URL --environment-id bench-codex`); both executors' registration bearer
is `CODEX_API_KEY`. The three slots are

    direct  ours, a WebSocket straight to the executor (bench/wsclient.py's WsRpc)
    relay   ours, through the relay: /connect, rendezvous WebSocket, Noise stream
    codex   the codex executor, through the same relay the same way

and a relayed connection is `execserver.relay.harness.connect_relay` (our harness client,
one static Noise identity per slot, a pooled registry client) carrying the same JSON-RPC
requests as the direct one (bench/wsclient.py's ChannelRpc). The metrics, the interleaving
(direct relay codex, codex relay direct, ...), the statistics and the JSON are
bench/compare.py's; `relay/direct` and `ours/codex` compare slots the way `ours/ref` does
there. Relay CPU is read from /proc/PID/stat of the relay process around every run, so the
throughput metrics also give relay CPU per MiB forwarded.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import secrets
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness.servers import ours_command, reference_binary

from bench.compare import (
    CLK_TCK,
    METRICS_BY_NAME,
    OURS_EXTRA,
    SMALL_TIMEOUT,
    Context,
    Metric,
    MiB,
    Runner,
    Server,
    ServerFailed,
    Settings,
    fmt,
    format_table,
    machine_info,
    prepare_files,
    run_cancellable,
    start_server,
    stop_server,
    summary_cell,
)
from bench.wsclient import ChannelRpc, RpcPeer
from execserver.event_loop import EVENT_LOOPS
from execserver.relay.harness import RelayTarget, connect_relay
from execserver.relay.noise import NoiseIdentity
from execserver.relay.registry_client import RegistryClient

SLOTS = ("direct", "relay", "codex")
PAIRS = (("relay", "direct"), ("relay", "codex"))
LABELS = {"direct": "direct: ours", "relay": "relay: ours", "codex": "relay: codex"}
ENVIRONMENTS = {"relay": "bench-ours", "codex": "bench-codex"}
ADDED_P50_MS = 0.5
CODEX_TARGET_METRICS = ("oneshot_true", "echo_rtt", "output_mbps", "readfile_32m")
"""The metrics the issue compares with the codex executor; the others are shown for context."""
STREAMING_SHARE = 0.5
CONNECTED_TIMEOUT = 30.0
# The relay runs with its defaults: a harness that reads slower than the executor sends (the
# Python bench client on a 32 MiB fs/readFile or a fast output stream) holds the executor's
# socket back once its 4 MiB queue is full, instead of being cut off.
RELAY_EXTRA: list[str] = []


def relay_settings(quick: bool) -> Settings:
    """compare.py's counts, with more rounds (three slots share each round, and the relayed
    figures spread more): about a minute with `quick`, about two without."""
    if quick:
        return dataclasses.replace(Settings.quick(), rounds=9, oneshot=20, echo=40)
    return dataclasses.replace(Settings(), rounds=12)


def _metric(base: str, **changes: Any) -> Metric:
    return dataclasses.replace(METRICS_BY_NAME[base], **changes)


METRICS = [
    _metric("oneshot_true"),
    _metric("getmetadata"),
    _metric("echo_rtt"),
    _metric("output_mbps"),
    _metric("readfile_32m"),
    _metric(
        "connect_init",
        name="handshake",
        description="a fresh initialized connection: direct = TCP + WebSocket upgrade + "
        "initialize; relayed = /connect + rendezvous WebSocket + resume + Noise handshake "
        "(the executor validates it with the registry) + initialize",
    ),
]
BYTES_PER_RUN = {
    "output_mbps": lambda s: s.output_bytes,
    "readfile_32m": lambda s: 32 * MiB * s.file_32m_reads,
}


@dataclasses.dataclass
class RelayedSlot(Server):
    """An executor reached through the relay: connections are relay streams, and the relay's
    CPU is recorded next to the executor's."""

    relay: Server | None = None
    target: RelayTarget | None = None
    identity: NoiseIdentity | None = None
    registry: RegistryClient | None = None

    def side_cpu_seconds(self) -> dict[str, float]:
        assert self.relay is not None
        cpu = self.relay.cpu_seconds()
        return {} if cpu is None else {"relay": cpu}

    async def open(self, quickack: bool = False) -> RpcPeer:
        target, identity, registry = self.target, self.identity, self.registry
        assert target is not None and identity is not None and registry is not None

        async def connector(receiver: ChannelRpc) -> Any:
            return await connect_relay(
                target, receiver, identity, registry=registry, timeout=SMALL_TIMEOUT
            )

        return await ChannelRpc.open(connector, timeout=SMALL_TIMEOUT)


def relayed_slot(
    name: str, executor: Server, relay: Server, environment: str, harness_token: str
) -> tuple[RelayedSlot, RegistryClient]:
    """The slot of an executor attached to `relay` as `environment`, and its registry client
    (the caller closes it)."""
    registry = RegistryClient(relay.url, environment, harness_token)
    slot = RelayedSlot(
        name,
        relay.url,
        executor.process,
        executor.stderr_path,
        executor.command,
        relay=relay,
        target=RelayTarget(relay.url, environment, harness_token),
        identity=NoiseIdentity.generate(),
        registry=registry,
    )
    return slot, registry


# -- processes ------------------------------------------------------------------------------


async def start_relay(
    workdir: Path,
    executor_token: str,
    harness_token: str,
    extra: list[str],
    *,
    name: str = "relay",
    env: dict[str, str] | None = None,
) -> Server:
    (workdir / "executor.tokens").write_text(executor_token + "\n")
    (workdir / "harness.tokens").write_text(harness_token + "\n")
    command = [
        sys.executable, "-m", "execserver", "relay", "--listen", "127.0.0.1:0",
        "--executor-token-file", str(workdir / "executor.tokens"),
        "--harness-token-file", str(workdir / "harness.tokens"),
        "--metrics", *RELAY_EXTRA, *extra,
    ]  # fmt: skip
    return await start_server(name, workdir, command, env=env, announces="http://")


def ours_remote_command(registry_url: str, environment: str) -> list[str]:
    """Our executor dialling out to `registry_url` as `environment`."""
    return [
        sys.executable, "-m", "execserver", "serve",
        "--remote", registry_url, "--environment-id", environment, *OURS_EXTRA,
    ]  # fmt: skip


def executor_command(slot: str, registry_url: str) -> list[str]:
    environment = ENVIRONMENTS[slot]
    if slot == "relay":
        return ours_remote_command(registry_url, environment)
    binary = reference_binary()
    if binary is None:
        raise ServerFailed("the codex binary is not installed (run .ci/run or set CODEX_BIN)")
    return [str(binary), "exec-server", "--remote", registry_url, "--environment-id", environment]


async def wait_connected(relay: Server, token: str, executors: list[Server]) -> None:
    """Poll the relay's /metrics until every executor is attached."""
    line = f"exec_server_relay_executors_connected {len(executors)}"
    deadline = time.monotonic() + CONNECTED_TIMEOUT
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as client:
        while time.monotonic() < deadline:
            for server in [relay, *executors]:
                await server.check_alive()
            page = (await client.get(relay.url + "/metrics")).text
            if line in page.splitlines():
                return
            await asyncio.sleep(0.1)  # a poll with a deadline
    tails = "\n".join(f"{s.name}:\n{s.stderr_tail()}" for s in executors)
    raise ServerFailed(f"the executors did not attach to the relay in time\n{tails}")


# -- output ---------------------------------------------------------------------------------


def _summary(entry: dict[str, Any], slot: str, key: str = "median") -> float | None:
    summary = entry["servers"][slot].get("summary")
    return None if summary is None else summary[key]


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:.2f}"


def _added(entry: dict[str, Any], key: str) -> str:
    relay, direct = _summary(entry, "relay", key), _summary(entry, "direct", key)
    if entry["better"] != "lower" or relay is None or direct is None:
        return "-"
    return fmt(relay - direct)


HEADER = [
    "metric",
    "unit",
    "better",
    *(f"{LABELS[slot]} median [min..max]" for slot in SLOTS),
    "relay−direct",
    "relay/direct",
    "ours/codex",
]


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, entry in results["metrics"].items():
        per_slot = entry["servers"]
        rows.append(
            [
                name,
                entry["unit"],
                entry["better"],
                *(summary_cell(per_slot[slot]) for slot in SLOTS),
                _added(entry, "median"),
                _ratio(_summary(entry, "relay"), _summary(entry, "direct")),
                _ratio(_summary(entry, "relay"), _summary(entry, "codex")),
            ]
        )
        for extra in entry.get("extra_rows", []):
            values = [_summary(entry, slot, extra) for slot in SLOTS]
            rows.append(
                [
                    f"  {extra}",
                    entry["unit"],
                    entry["better"],
                    *(fmt(value) for value in values),
                    _added(entry, extra),
                    _ratio(values[1], values[0]),
                    _ratio(values[1], values[2]),
                ]
            )
    return rows


CPU_HEADER = [
    "metric",
    "MiB per run",
    *(f"executor ms/MiB, {LABELS[slot]}" for slot in SLOTS),
    "relay ms/MiB, ours",
    "relay ms/MiB, codex",
]


def cpu_rows(results: dict[str, Any]) -> list[list[str]]:
    """CPU per MiB moved, for the throughput metrics (medians over rounds)."""
    rows = []
    for name, entry in results["metrics"].items():
        mib = entry.get("mib_per_run")
        if not mib:
            continue
        per_slot = entry["servers"]

        def per_mib(value: float | None, mib: float = mib) -> str:
            return "-" if value is None else fmt(value * 1000 / mib)

        rows.append(
            [
                name,
                fmt(mib),
                *(per_mib(per_slot[slot].get("cpu_s_median")) for slot in SLOTS),
                *(
                    per_mib((per_slot[slot].get("side_cpu_s_median") or {}).get("relay"))
                    for slot in ("relay", "codex")
                ),
            ]
        )
    return rows


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, checked against the medians of this run."""
    metrics = results["metrics"]
    out: list[dict[str, Any]] = []
    scale = {"ms": 1.0, "µs": 0.001}
    for name in ("oneshot_true", "getmetadata", "echo_rtt"):
        entry = metrics.get(name)
        if entry is None:
            continue
        relay, direct = _summary(entry, "relay"), _summary(entry, "direct")
        added = None if relay is None or direct is None else (relay - direct) * scale[entry["unit"]]
        out.append(
            {
                "target": f"added p50 per request ≤ {ADDED_P50_MS} ms",
                "metric": name,
                "value": added,
                "shown": "-" if added is None else f"{added:.3f} ms",
                "met": added is not None and added <= ADDED_P50_MS,
            }
        )
    for name in ("output_mbps", "readfile_32m"):
        entry = metrics.get(name)
        if entry is None:
            continue
        share = entry["ratios"]["relay/direct"]["ratio"]
        out.append(
            {
                "target": f"relay ≥ {STREAMING_SHARE} of direct",
                "metric": name,
                "value": share,
                "shown": "-" if share is None else f"{share:.2f}",
                "met": share is not None and share >= STREAMING_SHARE,
            }
        )
    for name, entry in metrics.items():
        ratio = entry["ratios"]["relay/codex"]["ratio"]
        # "At least as good as codex": ≥ 1.0 as a speed, whichever direction is better.
        speed = None if not ratio else (ratio if entry["better"] == "higher" else 1 / ratio)
        out.append(
            {
                "target": "ours ≥ 1.0 of codex through the relay"
                + ("" if name in CODEX_TARGET_METRICS else " (not a target)"),
                "metric": name,
                "value": speed,
                "shown": "-" if speed is None else f"{speed:.2f}",
                "met": speed is not None and speed >= 1.0,
            }
        )
    return out


def render(results: dict[str, Any], markdown: bool) -> str:
    parts = [format_table(HEADER, table_rows(results), markdown, results.get("notes") or [])]
    cpu = cpu_rows(results)
    if cpu:
        parts.append(format_table(CPU_HEADER, cpu, markdown, figures_from=1))
    checks = [
        [
            t["target"],
            t["metric"],
            t["shown"],
            ("yes" if t["met"] else "no")
            if "not a target" in t["target"]
            else ("met" if t["met"] else "MISSED"),
        ]
        for t in targets(results)
    ]
    if checks:
        header = ["target", "metric", "reached", ""]
        parts.append(format_table(header, checks, markdown, figures_from=2))
    return "\n\n".join(parts)


# -- driver ---------------------------------------------------------------------------------


def select_metrics(only: str | None) -> list[Metric]:
    if not only:
        return list(METRICS)
    names = {name.strip() for name in only.split(",") if name.strip()}
    unknown = names - {metric.name for metric in METRICS}
    if unknown:
        raise SystemExit(
            f"--only: unknown {', '.join(sorted(unknown))}; "
            f"metrics: {', '.join(m.name for m in METRICS)}"
        )
    return [metric for metric in METRICS if metric.name in names]


async def main_async(args: argparse.Namespace) -> int:
    settings = relay_settings(args.quick)
    if args.rounds is not None:
        settings.rounds = args.rounds
    metrics = select_metrics(args.only)
    workdir = Path(tempfile.mkdtemp(prefix="execserver-relay-compare-"))
    ctx = Context(settings, workdir)
    executor_token = "executor-" + secrets.token_hex(16)
    harness_token = "harness-" + secrets.token_hex(16)
    processes: list[Server] = []
    slots: dict[str, Server] = {}
    registries: list[RegistryClient] = []
    began = time.monotonic()
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    load_start = list(os.getloadavg())
    exit_code = 0
    runner: Runner | None = None
    try:
        print(f"preparing files in {workdir}", file=sys.stderr)
        prepare_files(ctx, metrics)
        relay = await start_relay(
            workdir, executor_token, harness_token, shlex.split(args.relay_args or "")
        )
        processes.append(relay)
        print(f"relay: {relay.url} pid {relay.pid}", file=sys.stderr)
        direct = await start_server("direct", workdir, ours_command(extra=OURS_EXTRA))
        processes.append(direct)
        slots["direct"] = direct
        executors = []
        for slot in ("relay", "codex"):
            executor = await start_server(
                slot,
                workdir,
                executor_command(slot, relay.url),
                env={"CODEX_API_KEY": executor_token},
                announces=None,
            )
            processes.append(executor)
            executors.append(executor)
            slots[slot], registry = relayed_slot(
                slot, executor, relay, ENVIRONMENTS[slot], harness_token
            )
            registries.append(registry)
        await wait_connected(relay, executor_token, executors)
        for slot, server in slots.items():
            print(f"{slot}: {server.url} pid {server.pid}", file=sys.stderr)
        runner = Runner(slots, ctx, metrics, slots=SLOTS, pairs=PAIRS)
        try:
            await runner.run(settings.rounds)
            await relay.check_alive()
        except ServerFailed as error:
            print(f"FATAL: {error}", file=sys.stderr)
            exit_code = 2
        if any(r["errors"] for m in runner.data.values() for r in m.values()):
            print(f"relay stderr:\n{relay.stderr_tail()}", file=sys.stderr)
    finally:
        for registry in registries:
            await registry.aclose()
        for process in reversed(processes):
            await stop_server(process)
        shutil.rmtree(workdir, ignore_errors=True)
    assert runner is not None
    meta = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "started_at": started_at,
        "duration_s": round(time.monotonic() - began, 1),
        "machine": machine_info(),
        "loadavg_start": load_start,
        "loadavg_end": list(os.getloadavg()),
        "settings": settings.__dict__,
        "clk_tck": CLK_TCK,
        "slots": {name: LABELS[name] for name in SLOTS},
        "processes": {
            process.name: {"url": process.url, "command": process.command} for process in processes
        },
        "client": "bench/wsclient.py: WsRpc (direct), ChannelRpc over "
        "execserver.relay.harness.connect_relay (relayed)",
    }
    results = runner.results(meta)
    for metric in metrics:
        bytes_per_run = BYTES_PER_RUN.get(metric.name)
        if bytes_per_run is not None:
            results["metrics"][metric.name]["mib_per_run"] = bytes_per_run(settings) / MiB
    results["targets"] = targets(results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_bytes(msgspec.json.format(msgspec.json.encode(results), indent=1))
    print(render(results, args.markdown))
    load = ", ".join(f"{x:.2f}" for x in meta["loadavg_start"])
    print(
        f"\n{meta['duration_s']} s; load average at start {load}; raw samples in {args.json}",
        file=sys.stderr,
    )
    errors = sum(len(r["errors"]) for m in runner.data.values() for r in m.values())
    if errors:
        print(f"{errors} run(s) failed, see 'errors' in the JSON", file=sys.stderr)
        exit_code = exit_code or 1
    return exit_code


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, help="rounds (default 12, --quick 9)")
    parser.add_argument("--quick", action="store_true", help="about a minute: fewer iterations")
    parser.add_argument("--only", help="comma-separated metric names")
    parser.add_argument("--relay-args", help="extra arguments for `execserver relay`")
    parser.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        help="our executors' `serve --event-loop` (default: serve's own default)",
    )
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "relay-results.json")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    parser.add_argument("--render", type=Path, help="only print the tables of a JSON result")
    parser.add_argument("--list", action="store_true", help="list the metrics and exit")
    args = parser.parse_args()
    if args.event_loop:
        OURS_EXTRA.extend(["--event-loop", args.event_loop])  # every executor of ours
    if args.list:
        for metric in METRICS:
            print(f"{metric.name:14s} {metric.unit:6s} {metric.better:6s} {metric.description}")
        return
    if args.render:
        print(render(msgspec.json.decode(args.render.read_bytes()), args.markdown))
        return
    run_cancellable(main_async(args), "processes")


if __name__ == "__main__":
    main()
