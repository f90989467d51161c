"""CPU per operation on each side of a relayed connection: our executor, our relay and the
harness client (this process), for the operations behind the issue-16 targets.

    .venv/bin/python bench/relay_cpu.py [--rounds N] [--only echo,oneshot,output]
                                        [--codex] [--py-spy DIR] [--cprofile PATH]

Starts `execserver relay` and `execserver serve --remote` (and with `--codex` the pinned codex
executor) like bench/relay_compare.py, opens one relayed connection per run with our harness
client and measures, per round and operation:

    echo     process/write of 9 bytes to `cat` until the echo arrives (one round trip)
    oneshot  process/start of /bin/true until process/closed
    output   `head -c 64 MiB /dev/zero`, per MiB of process output

the wall time and the CPU each process spent (the scheduler's run time of all its threads),
divided by the count. CPU per operation moves far less with the machine's load than latency
or throughput do, so it shows what a change to the hot path buys on a shared machine;
relay_compare.py gives the end-to-end figures. The table shows the median over rounds and
[min..max]. `--py-spy DIR` records the executor and the relay with py-spy (if installed)
during the runs, `--cprofile PATH` profiles this process (the harness client).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.compare import (
    LARGE_TIMEOUT,
    OURS_EXTRA,
    SMALL_TIMEOUT,
    Context,
    MiB,
    Server,
    Settings,
    Watch,
    format_table,
    process_params,
    start_server,
    stop_server,
)
from bench.relay_compare import (
    ENVIRONMENTS,
    RelayedSlot,
    executor_command,
    start_relay,
    wait_connected,
)
from bench.wsclient import RpcPeer
from execserver.event_loop import EVENT_LOOPS
from execserver.relay.harness import RelayTarget
from execserver.relay.noise import NoiseIdentity
from execserver.relay.registry_client import RegistryClient

OUTPUT_BYTES = 64 * MiB
Operation = Callable[[RpcPeer, Context, int], Awaitable[None]]


async def echo(conn: RpcPeer, ctx: Context, count: int) -> None:
    loop = asyncio.get_running_loop()
    process_id = ctx.fresh_id("cat")
    watch = Watch(conn, process_id, keep_data=True)
    start = conn.request("process/start", process_params(process_id, ["cat"], pipeStdin=True))
    watch.follow(start)
    await asyncio.wait_for(start, SMALL_TIMEOUT)
    for i in range(count):
        token = b"%08d\n" % i
        watch.data.clear()
        watch.waiter = loop.create_future()
        chunk = base64.b64encode(token).decode()
        write = conn.request(
            "process/write", {"processId": process_id, "chunk": chunk, "writeId": f"w{i}"}
        )
        while True:
            await asyncio.wait_for(watch.waiter, SMALL_TIMEOUT)
            if watch.data.endswith(token):
                break
            watch.waiter = loop.create_future()
        await asyncio.wait_for(write, SMALL_TIMEOUT)
    watch.waiter = None
    await conn.call("process/terminate", {"processId": process_id}, SMALL_TIMEOUT)
    await asyncio.wait_for(watch.closed, SMALL_TIMEOUT)


async def oneshot(conn: RpcPeer, ctx: Context, count: int) -> None:
    for _ in range(count):
        process_id = ctx.fresh_id("one")
        watch = Watch(conn, process_id)
        start = conn.request("process/start", process_params(process_id, ["/bin/true"]))
        watch.follow(start)
        await asyncio.wait_for(watch.closed, SMALL_TIMEOUT)
        await asyncio.wait_for(start, SMALL_TIMEOUT)
        watch.forget()


async def output(conn: RpcPeer, ctx: Context, count: int) -> None:
    size = count * MiB
    process_id = ctx.fresh_id("out")
    watch = Watch(conn, process_id)
    argv = ["head", "-c", str(size), "/dev/zero"]
    start = conn.request("process/start", process_params(process_id, argv))
    watch.follow(start)
    await asyncio.wait_for(watch.closed, LARGE_TIMEOUT)
    await start
    if watch.output_bytes != size:
        raise RuntimeError(f"got {watch.output_bytes} bytes of output, expected {size}")


OPERATIONS: dict[str, tuple[Operation, int, str]] = {
    "echo": (echo, 400, "round trip"),
    "oneshot": (oneshot, 100, "process"),
    "output": (output, OUTPUT_BYTES // MiB, "MiB"),
}


def _proc_cpu(pid: int) -> float:
    """CPU seconds of all threads of `pid`, from the scheduler's nanosecond accounting
    (/proc/PID/task/*/schedstat; utime + stime count in 10 ms ticks)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            continue  # a thread that just ended
    return total / 1e9


def own_cpu() -> float:
    return time.process_time()


async def measure(slot: RelayedSlot, relay: Server, ctx: Context, name: str) -> dict[str, float]:
    """One run of operation `name` on a fresh connection: wall and CPU per operation, in µs."""
    operation, count, _ = OPERATIONS[name]
    conn = await slot.open()
    try:
        assert slot.pid is not None and relay.pid is not None
        before = (time.perf_counter(), _proc_cpu(slot.pid), _proc_cpu(relay.pid), own_cpu())
        await operation(conn, ctx, count)
        after = (time.perf_counter(), _proc_cpu(slot.pid), _proc_cpu(relay.pid), own_cpu())
    finally:
        conn.close()
    wall, executor, relay_cpu, client = (
        (b - a) * 1e6 / count for a, b in zip(before, after, strict=True)
    )
    return {"wall": wall, "executor": executor, "relay": relay_cpu, "client": client}


def cell(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} [{min(values):.1f}..{max(values):.1f}]"


async def main_async(args: argparse.Namespace) -> int:
    names = args.only.split(",") if args.only else list(OPERATIONS)
    workdir = Path(tempfile.mkdtemp(prefix="execserver-relay-cpu-"))
    ctx = Context(Settings(), workdir)
    executor_token = "executor-" + secrets.token_hex(16)
    harness_token = "harness-" + secrets.token_hex(16)
    processes: list[Server] = []
    registries: list[RegistryClient] = []
    spies: list[asyncio.subprocess.Process] = []
    slot_names = ["relay", "codex"] if args.codex else ["relay"]
    results: dict[tuple[str, str], dict[str, list[float]]] = {}
    load_start = os.getloadavg()[0]
    try:
        relay = await start_relay(workdir, executor_token, harness_token, [])
        processes.append(relay)
        slots: dict[str, RelayedSlot] = {}
        for slot_name in slot_names:
            executor = await start_server(
                slot_name,
                workdir,
                executor_command(slot_name, relay.url),
                env={"CODEX_API_KEY": executor_token},
                announces=None,
            )
            processes.append(executor)
            registry = RegistryClient(relay.url, ENVIRONMENTS[slot_name], harness_token)
            registries.append(registry)
            slots[slot_name] = RelayedSlot(
                slot_name,
                relay.url,
                executor.process,
                relay=relay,
                target=RelayTarget(relay.url, ENVIRONMENTS[slot_name], harness_token),
                identity=NoiseIdentity.generate(),
                registry=registry,
            )
        await wait_connected(relay, executor_token, processes[1:])
        for slot in slots.values():  # warm-up
            for name in names:
                await measure(slot, relay, ctx, name)
        if args.py_spy:
            args.py_spy.mkdir(parents=True, exist_ok=True)
            for role, server in (("relay", relay), ("executor", processes[1])):
                out = args.py_spy / f"{role}.txt"
                spy_argv = ["py-spy", "record", "--format", "raw", "--nonblocking", "-r", "500",
                            "-p", str(server.pid), "-o", str(out)]  # fmt: skip
                spies.append(
                    await asyncio.create_subprocess_exec(
                        *spy_argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                    )
                )
        profile = cProfile.Profile() if args.cprofile else None
        for round_index in range(args.rounds):
            for name in names:
                order = slot_names if round_index % 2 == 0 else slot_names[::-1]
                for slot_name in order:
                    if profile is not None:
                        profile.enable()
                    sample = await measure(slots[slot_name], relay, ctx, name)
                    if profile is not None:
                        profile.disable()
                    entry = results.setdefault((name, slot_name), {})
                    for side, value in sample.items():
                        entry.setdefault(side, []).append(value)
        if profile is not None:
            profile.dump_stats(args.cprofile)
    finally:
        for spy in spies:  # py-spy writes its profile on SIGINT
            spy.send_signal(signal.SIGINT)
            await asyncio.wait_for(spy.wait(), 30)
        for registry in registries:
            await registry.aclose()
        for process in reversed(processes):
            await stop_server(process)
        shutil.rmtree(workdir, ignore_errors=True)
    header = ["operation", "executor", "per", "wall µs", "executor CPU µs", "relay CPU µs",
              "client CPU µs"]  # fmt: skip
    rows = []
    for (name, slot_name), entry in results.items():
        rows.append(
            [
                name,
                "ours" if slot_name == "relay" else "codex",
                OPERATIONS[name][2],
                *(cell(entry[side]) for side in ("wall", "executor", "relay", "client")),
            ]
        )
    print(format_table(header, rows, args.markdown))
    print(
        f"{args.rounds} rounds; load average {load_start:.2f} at the start, "
        f"{os.getloadavg()[0]:.2f} at the end"
    )
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", help="comma-separated: " + ",".join(OPERATIONS))
    parser.add_argument("--codex", action="store_true", help="also the codex executor")
    parser.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        help="our executors' `serve --event-loop` (default: serve's own default)",
    )
    parser.add_argument("--py-spy", type=Path, help="record executor and relay with py-spy")
    parser.add_argument("--cprofile", type=Path, help="cProfile this process to PATH")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if args.event_loop:
        OURS_EXTRA.extend(["--event-loop", args.event_loop])  # every executor of ours
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
