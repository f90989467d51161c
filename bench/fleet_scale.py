"""Scale test of the relay fleet on real processes, all on 127.0.0.1: a 3-server NATS cluster
with JetStream, three relay nodes (`python -m execserver relay --nats …`, their defaults
otherwise), the fleet recipe's HAProxy (deploy/fleet/haproxy.cfg) in front of them, and worker
processes running our relay clients (bench/fleet_clients.py): many `RelayExecutor`s per
process, and harness streams. docs/SCALING.md has the method and the figures.

    .venv/bin/python bench/fleet_scale.py                   # 100 and 1,000 executors (~3 min)
    .venv/bin/python bench/fleet_scale.py --full            # 100, 1,000 and 10,000
    .venv/bin/python bench/fleet_scale.py --steps 100,2000 --workers 4 --json PATH
    .venv/bin/python bench/fleet_scale.py --render bench/fleet-results.json --markdown

Everything goes through the balancer as in the recipe: executors register and dial the
public URL (the node with the fewest connections takes them), harnesses ask it for /connect
and follow the bundle's advertised URL (`<balancer>/node/<id>/`) to the executor's node; a
stream "across nodes" is sent to another node's path instead, so its frames cross NATS.

Per step, for the executors added: registrations/s (from the first /register to the last
attachment the nodes report), register/attach latency and CPU per registration of each part;
then with all of them idle: relay RSS per executor, KV sizes, /connect p50/p99 (asked at the
executor's node and at another one, open loop) and the most /connect answered per second,
a whole stream open (/connect, WebSocket, Noise handshake, /validate) p50/p99, relay RSS
per idle stream, echo round trips on the executor's node and across nodes, and three floods
(small frames on the executor's node, small frames across nodes, large frames) giving
frames/s, MB/s and relay CPU per node. After the last step: SIGKILL of one node, and how long
until its executors are attached elsewhere and its harness streams answer again, and the
/connect latency of executors on the other nodes meanwhile (offered during the storm).

Started here and stopped at the end (also on Ctrl-C). Needs `haproxy` (scripts/test.sh
installs it) and nats-server >= 2.9.21 (the test dependencies' 2.15.1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import resource
import secrets
import shlex
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))  # this checkout's execserver, not an installed one

from tests.harness.haproxy import haproxy_process, local_haproxy_config
from tests.harness.nats import NatsCluster, nats_cluster
from tests.harness.ports import listen_ports

from bench.compare import (
    CLK_TCK,
    Server,
    ServerFailed,
    fmt,
    format_table,
    machine_info,
    percentile,
    run_cancellable,
    start_server,
    stop_server,
)
from bench.fleet_clients import BenchRegistry, Harness, rss_kib
from execserver.relay import api

NODES = 3
STEPS = (100, 1_000)
FULL_STEPS = (100, 1_000, 10_000)
EXECUTORS_PER_WORKER = 2_500
SPARE_SOCKETS = 4_000
"""Sockets through the balancer besides the executors' (streams, registry calls)."""
NOFILE_WANTED = 1 << 18
SMALL_FRAME = 200
"""Bytes of JSON per small flood message (one relay frame each, ~270 bytes on the wire)."""
LARGE_FRAME = 60_000
"""Bytes of JSON per large flood message (one record, one frame of ~60 KB)."""
FLOODS = (
    # name, message size, same node?
    ("small_same", SMALL_FRAME, True),
    ("small_cross", SMALL_FRAME, False),
    ("large_same", LARGE_FRAME, True),
)
SETTLE_TIMEOUT_S = 300.0
COMMAND_TIMEOUT_S = 1200.0
"""The longest a worker may take over one command (starting thousands of executors)."""
POLL_S = 0.05
RECOVERY_TIMEOUT_S = 180.0
STORM_CONNECTS = 400
STORM_CONNECT_RATE = 20.0
"""/connect for executors on the surviving nodes, offered during the reconnect storm (per s)."""
VICTIM = 0
"""The node killed after the last step."""
WARM_PREFIX = "warm"


def child_env(src: Path = ROOT / "src") -> dict[str, str]:
    """The environment of a process started here: `src` (default: this checkout's) first on
    its path, so it runs the code under test, not whichever copy is installed."""
    paths = [str(src), *filter(None, os.environ.get("PYTHONPATH", "").split(":"))]
    return {**os.environ, "PYTHONPATH": ":".join(paths)}


@dataclass(kw_only=True)
class FleetOptions:
    """How `running_fleet` starts the relay nodes and the balancer."""

    balancers: int = 1
    relay_args: list[str] = field(default_factory=list)
    relay_src: Path = ROOT / "src"
    profile_dir: Path | None = None


@dataclass(kw_only=True)
class Settings(FleetOptions):
    steps: tuple[int, ...]
    workers: int
    harness_workers: int
    concurrency: int
    connects: int
    connect_concurrency: int
    connect_rate: float
    opens: int
    idle_streams: int
    echoes: int
    flood_streams: int
    small_count: int
    large_count: int
    kill: bool
    kill_streams: int


# -- processes --------------------------------------------------------------------------------


def raise_file_limit() -> int:
    """Raise RLIMIT_NOFILE (inherited by every process started here) for 10,000 sockets."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < NOFILE_WANTED:
        with contextlib.suppress(ValueError, OSError):  # only root may raise the hard limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE_WANTED, NOFILE_WANTED))
            return NOFILE_WANTED
    target = hard if hard == resource.RLIM_INFINITY else min(hard, NOFILE_WANTED)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class WorkerProcess:
    """bench/fleet_clients.py in a subprocess: one JSON command in, one JSON answer out."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, stderr: Path) -> None:
        self.name = name
        self.process = process
        self.stderr = stderr
        self._lock = asyncio.Lock()

    @classmethod
    async def start(
        cls, name: str, workdir: Path, script: Path = ROOT / "bench" / "fleet_clients.py"
    ) -> WorkerProcess:
        """Start `script` (a worker speaking `fleet_clients.serve_commands`' protocol)."""
        stderr = workdir / f"{name}.stderr"
        with open(stderr, "wb") as err:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                str(script),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                limit=1 << 26,
                env=child_env(),
                start_new_session=True,
            )
        return cls(name, process, stderr)

    async def call(self, **command: Any) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        async with self._lock, asyncio.timeout(COMMAND_TIMEOUT_S):
            self.process.stdin.write(msgspec.json.encode(command) + b"\n")
            await self.process.stdin.drain()
            line = await self.process.stdout.readline()
        if not line:
            tail = self.stderr.read_text(errors="replace")[-3000:]
            raise ServerFailed(f"{self.name} exited ({self.process.returncode}):\n{tail}")
        answer: dict[str, Any] = msgspec.json.decode(line)
        if "error" in answer:
            raise ServerFailed(f"{self.name}: {answer['error']}")
        return answer

    async def stop(self) -> None:
        process = self.process
        if process.returncode is None and process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.write(b'{"cmd":"quit"}\n')
                await process.stdin.drain()
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()


def cpu_pressure() -> str:
    """The kernel's CPU pressure line (`some avg10=… avg60=…`): how much of the time runnable
    tasks waited for a CPU (the machine is shared; this says how much)."""
    try:
        return Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return ""


def cpu_of(pid: int | None) -> float:
    """utime + stime (seconds) of process `pid`, 0 when it is gone."""
    if pid is None:
        return 0.0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class FleetUnderTest:
    nats: NatsCluster
    nodes: list[Server]
    ports: list[int]
    balancer_port: int
    balancers: list[asyncio.subprocess.Process]
    """HAProxy processes sharing the public port (SO_REUSEPORT, the kernel spreads the
    connections): one unless one process could not hold all the sockets."""
    metrics_token: str
    executor_token: str
    harness_token: str
    clients: list[int] = field(default_factory=list)
    """Process ids of the client workers (their CPU is counted as the clients')."""
    http: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(timeout=30))

    @property
    def registry_url(self) -> str:
        """The public URL: the balancer."""
        return f"http://127.0.0.1:{self.balancer_port}"

    def node_id(self, index: int) -> str:
        return f"node{index}"

    def node_registry(self, index: int) -> str:
        """Node `index`'s registry through the balancer (the recipe's `/node/<id>` path)."""
        return f"{self.registry_url}/node/{self.node_id(index)}"

    def index_of(self, node_id: str | None) -> int:
        if node_id is None or not node_id.startswith("node"):
            raise ServerFailed(f"a bundle named no node: {node_id!r}")
        return int(node_id.removeprefix("node"))

    def live(self) -> list[int]:
        return [
            i
            for i, node in enumerate(self.nodes)
            if node.process and node.process.returncode is None
        ]

    async def scrape(self, index: int) -> dict[str, float]:
        """Node `index`'s /metrics (asked directly) as {series (with labels): value}."""
        response = await self.http.get(
            f"http://127.0.0.1:{self.ports[index]}/metrics",
            headers=api.bearer(self.metrics_token),
        )
        response.raise_for_status()
        values: dict[str, float] = {}
        for line in response.text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name.removeprefix("exec_server_relay_")] = float(value)
        return values

    async def scrape_all(self) -> list[dict[str, float]]:
        """Every node's page ({} for a node that is gone)."""
        live = self.live()
        pages = await asyncio.gather(*(self.scrape(i) for i in live))
        found = dict(zip(live, pages, strict=True))
        return [found.get(i, {}) for i in range(len(self.nodes))]

    def relay_cpu(self) -> list[float]:
        return [cpu_of(node.pid) for node in self.nodes]

    def nats_cpu(self) -> float:
        return sum(cpu_of(s.process.pid if s.process else None) for s in self.nats.servers)

    def cpu_meter(self) -> CpuMeter:
        return CpuMeter(self)

    def relay_rss_kib(self) -> list[int]:
        return [rss_kib(node.pid) if node.pid else 0 for node in self.nodes]

    def nats_rss_kib(self) -> list[int]:
        return [rss_kib(s.process.pid) if s.process else 0 for s in self.nats.servers]

    def check_alive(self) -> None:
        for index, node in enumerate(self.nodes):
            if index not in self.live():
                raise ServerFailed(f"{node.name} exited; stderr:\n{node.stderr_tail()}")
        for balancer in self.balancers:
            if balancer.returncode is not None:
                raise ServerFailed(f"haproxy exited ({balancer.returncode})")

    async def wait_until(
        self, gauge: str, predicate: Callable[[list[float]], bool], what: str
    ) -> float:
        """Poll the nodes' /metrics until `predicate(list of gauge values)`; seconds taken."""
        began = time.perf_counter()
        deadline = began + SETTLE_TIMEOUT_S
        while True:
            pages = await self.scrape_all()
            values = [page.get(gauge, 0.0) for page in pages]
            if predicate(values):
                return time.perf_counter() - began
            if time.perf_counter() > deadline:
                raise ServerFailed(f"{what}: still {values} after {SETTLE_TIMEOUT_S:g} s")
            self.check_alive()
            await asyncio.sleep(POLL_S)  # a poll with a deadline


class CpuMeter:
    """CPU used since it was made by the relay nodes, the NATS servers, the balancer and the
    client workers (each part summed over its processes)."""

    def __init__(self, fleet: FleetUnderTest) -> None:
        self._fleet = fleet
        self._start = self._now()

    def _now(self) -> dict[str, float]:
        fleet = self._fleet
        return {
            "relay": sum(fleet.relay_cpu()),
            "nats": fleet.nats_cpu(),
            "balancer": sum(cpu_of(balancer.pid) for balancer in fleet.balancers),
            "client": sum(cpu_of(pid) for pid in fleet.clients),
        }

    def per(self, count: int) -> dict[str, float]:
        """Milliseconds of CPU per operation of each part, for `count` operations."""
        now = self._now()
        return {f"{part}_cpu_ms": (now[part] - self._start[part]) * 1000 / count for part in now}


def kv_streams(cluster: NatsCluster) -> dict[str, dict[str, int]]:
    """Messages and bytes of every JetStream stream (the KV buckets), from the monitoring port
    of a server that holds a replica."""
    found: dict[str, dict[str, int]] = {}
    for server in cluster.servers:
        url = f"http://127.0.0.1:{server.monitor_port}/jsz?streams=true"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                page = json.load(response)
        except OSError:
            continue
        for account in page.get("account_details") or []:
            for stream in account.get("stream_detail") or []:
                state = stream.get("state") or {}
                name = stream["name"].removeprefix("KV_")
                entry = {"messages": state.get("messages", 0), "bytes": state.get("bytes", 0)}
                if entry["bytes"] >= found.get(name, {}).get("bytes", -1):
                    found[name] = entry
    return found


async def balancer_ready(http: httpx.AsyncClient, urls: list[str]) -> None:
    """Until each of `urls` (the balancer's /readyz, per node too) answers 200."""
    deadline = time.perf_counter() + 30
    for url in urls:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url)).status_code == 200:
                    break
            if time.perf_counter() > deadline:
                raise ServerFailed(f"the balancer does not answer 200 at {url}")
            await asyncio.sleep(POLL_S)  # a poll with a deadline


@contextlib.asynccontextmanager
async def running_fleet(workdir: Path, settings: FleetOptions) -> AsyncIterator[FleetUnderTest]:
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        raise ServerFailed("haproxy is not installed (apt-get install haproxy)")
    executor_token = "executor-" + secrets.token_hex(16)
    harness_token = "harness-" + secrets.token_hex(16)
    (workdir / "executor.tokens").write_text(executor_token + "\n")
    (workdir / "harness.tokens").write_text(harness_token + "\n")
    secret = workdir / "ticket-secret"
    secret.write_text(secrets.token_hex(32) + "\n")
    secret.chmod(0o600)
    *ports, balancer_port = listen_ports(NODES + 1)
    public = f"ws://127.0.0.1:{balancer_port}"
    async with nats_cluster(workdir / "nats", size=3) as cluster:
        nodes: list[Server] = []
        try:
            for index, port in enumerate(ports):
                python = [sys.executable]
                if settings.profile_dir is not None:
                    profile = settings.profile_dir / f"node{index}.prof"
                    python += ["-m", "cProfile", "-o", str(profile)]
                command = [
                    *python, "-m", "execserver", "relay",
                    "--listen", f"127.0.0.1:{port}",
                    "--public-url", public,
                    "--advertise-url", f"{public}/node/node{index}",
                    "--nats", ",".join(cluster.urls),
                    "--ticket-secret-file", str(secret),
                    "--node-id", f"node{index}",
                    "--executor-token-file", str(workdir / "executor.tokens"),
                    "--harness-token-file", str(workdir / "harness.tokens"),
                    "--metrics",
                    *settings.relay_args,
                ]  # fmt: skip
                nodes.append(
                    await start_server(
                        f"node{index}",
                        workdir,
                        command,
                        env=child_env(settings.relay_src),
                        announces="http",
                    )
                )
            config = workdir / "haproxy.cfg"
            config.write_text(
                local_haproxy_config(
                    balancer_port, [(f"node{i}", port) for i, port in enumerate(ports)]
                )
            )
            async with contextlib.AsyncExitStack() as stack:
                balancers = [
                    await stack.enter_async_context(
                        haproxy_process(haproxy, config, workdir / f"haproxy{i}.log")
                    )
                    for i in range(settings.balancers)
                ]
                fleet = FleetUnderTest(
                    cluster,
                    nodes,
                    ports,
                    balancer_port,
                    balancers,
                    executor_token,
                    executor_token,
                    harness_token,
                )
                try:
                    await balancer_ready(
                        fleet.http,
                        [f"{fleet.node_registry(i)}/readyz" for i in range(NODES)],
                    )
                    await fleet.wait_until(
                        "fleet_nodes_alive", lambda v: all(n == NODES for n in v), "nodes alive"
                    )
                    yield fleet
                finally:
                    await fleet.http.aclose()
        finally:
            for node in nodes:
                await stop_server(node)


# -- measurements -----------------------------------------------------------------------------


def env_id(index: int) -> str:
    return f"scale-{index:06d}"


def latency_summary(seconds: list[float]) -> dict[str, Any]:
    if not seconds:
        return {"n": 0}
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50": percentile(ms, 0.50),
        "p99": percentile(ms, 0.99),
        "max": max(ms),
    }


def counter(page: dict[str, float], name: str, **labels: str) -> float:
    """Sum of the series of `name` whose labels include `labels`."""
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    return sum(
        value
        for key, value in page.items()
        if key.split("{")[0] == name and all(label in key for label in wanted)
    )


def collector_figures(pages: list[dict[str, float]]) -> dict[str, list[float | None]]:
    """Per node, from its /metrics once the step's executors are attached: the longest
    collection pause since start, the full collections so far and their mean pause, and the
    objects frozen out of the collections."""
    full = 'gc_pause_seconds_{}{{generation="2"}}'
    figures: dict[str, list[float | None]] = {
        "longest_pause_ms": [],
        "full_collections": [],
        "full_mean_ms": [],
        "objects_frozen": [],
    }
    for page in pages:
        count = page.get(full.format("count"))
        total = page.get(full.format("sum"))
        figures["longest_pause_ms"].append(page.get("gc_longest_pause_ms"))
        figures["full_collections"].append(count)
        figures["full_mean_ms"].append(1000 * total / count if count and total else None)
        figures["objects_frozen"].append(page.get("gc_objects_frozen"))
    return figures


class Bench:
    def __init__(
        self,
        fleet: FleetUnderTest,
        executors: list[WorkerProcess],
        harnesses: list[WorkerProcess],
        settings: Settings,
    ) -> None:
        self.fleet = fleet
        self.executors = executors
        self.harnesses = harnesses
        self.settings = settings
        self.registered = 0
        self.harness = Harness(fleet.harness_token)
        self.rng = random.Random(17)
        self.baseline_rss: list[int] = []
        self.holders: dict[str, int] = {}
        """Environment id → index of the node holding its executor, as /connect answered."""

    def learn(self, env: str, node_id: str | None) -> int:
        index = self.holders[env] = self.fleet.index_of(node_id)
        return index

    # --- executors --------------------------------------------------------------------------

    async def add_executors(self, names: Sequence[str]) -> dict[str, Any]:
        """Start executors `names`, spread over the workers, all registering at the public
        URL; return when the nodes report them attached."""
        per_worker: list[list[tuple[str, str]]] = [[] for _ in self.executors]
        for position, name in enumerate(names):
            per_worker[position % len(self.executors)].append((name, self.fleet.registry_url))
        before = sum(counter(p, "executors_connected") for p in await self.fleet.scrape_all())
        target = before + len(names)
        meter = self.fleet.cpu_meter()
        began = time.perf_counter()
        answers = await asyncio.gather(
            *(
                worker.call(
                    cmd="start",
                    token=self.fleet.executor_token,
                    placements=placements,
                    concurrency=self.settings.concurrency,
                )
                for worker, placements in zip(self.executors, per_worker, strict=True)
                if placements
            )
        )
        failed = sum(answer["failed"] for answer in answers)
        if failed:
            failures = [f for answer in answers for f in answer["failures"]]
            raise ServerFailed(f"{failed} executors did not connect: {failures[:5]}")
        await self.fleet.wait_until(
            "executors_connected", lambda v: sum(v) >= target, "executors attached"
        )
        seconds = time.perf_counter() - began
        register_s = [s for answer in answers for s in answer["register_s"]]
        attach_s = [s for answer in answers for s in answer["attach_s"]]
        held = [page.get("executors_connected", 0.0) for page in await self.fleet.scrape_all()]
        return {
            "added": len(names),
            "seconds": seconds,
            "per_second": len(names) / seconds,
            "register_ms": latency_summary(register_s),
            "attach_ms": latency_summary(attach_s),
            "held_per_node": held,
            **meter.per(len(names)),
        }

    async def settle(self, total: int) -> None:
        """Until every node's copy of the registrations has `total` entries."""
        await self.fleet.wait_until(
            "executors_registered", lambda v: all(n >= total for n in v), "registrations seen"
        )

    # --- /connect and stream opening --------------------------------------------------------

    def sample_envs(self, count: int) -> list[str]:
        return [env_id(self.rng.randrange(self.registered)) for _ in range(count)]

    async def located(self, node: int, count: int) -> list[str]:
        """`count` environments whose executor is on node `node` (asking /connect for more
        random ones until enough are known)."""
        for _round in range(100):
            known = sorted(env for env, held in self.holders.items() if held == node)
            known = [env for env in known if not env.startswith(WARM_PREFIX)]
            if len(known) >= count:
                return self.rng.sample(known, count)
            await asyncio.gather(
                *(
                    self._connect_call(self.fleet.registry_url, env, [])
                    for env in self.sample_envs(8)
                )
            )
        raise ServerFailed(f"fewer than {count} executors found on node{node}")

    async def _connect_call(self, registry_url: str, env: str, timings: list[float]) -> int:
        """One POST /connect for `env` at `registry_url`; its duration is appended to
        `timings`; the index of the node holding the executor is returned (and learnt)."""
        key = self.harness.identity.public_key
        registry = BenchRegistry(
            registry_url, env, self.fleet.harness_token, http=self.harness.http, timings=timings
        )
        await registry.connect(api.NoisePublicKey.from_raw(key.x25519, key.mlkem768))
        return self.learn(env, registry.holder)

    async def storm_connects(self, envs: list[str]) -> dict[str, Any]:
        """`STORM_CONNECTS` POST /connect at the public URL for `envs` (executors on the
        surviving nodes, which stay attached), offered at `STORM_CONNECT_RATE` per second
        whatever the answers take: what a harness meets while a node's executors storm back."""
        timings: list[float] = []
        errors: list[str] = []
        began = time.perf_counter()

        async def one(sample: int, env: str) -> None:
            due = began + sample / STORM_CONNECT_RATE
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            try:
                await self._connect_call(self.fleet.registry_url, env, [])
            except Exception as exc:  # a lost harness: counted, and the run goes on
                errors.append(f"{env}: {exc}")
                return
            timings.append(time.perf_counter() - due)

        picks = [envs[n % len(envs)] for n in range(STORM_CONNECTS)] if envs else []
        await asyncio.gather(*(one(n, env) for n, env in enumerate(picks)))
        return {**latency_summary(timings), "errors": len(errors), "error_samples": errors[:5]}

    async def connect_latency(self) -> dict[str, Any]:
        """POST /connect for random registered environments, each asked at one node in turn
        (through the balancer's /node/<id> path), offered at `connect_rate` per second
        whatever the answers take (open loop: a slow answer does not delay the next request,
        and a request's time counts from when it was due); split by whether the node asked
        holds the executor."""
        timings: list[float] = []
        at_holder: list[float] = []
        elsewhere: list[float] = []
        errors: list[str] = []
        envs = self.sample_envs(self.settings.connects)
        interval = 1 / self.settings.connect_rate
        in_flight = most_in_flight = 0
        meter = self.fleet.cpu_meter()
        began = time.perf_counter()

        async def one(sample: int, env: str) -> None:
            nonlocal in_flight, most_in_flight
            due = began + sample * interval
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            in_flight += 1
            most_in_flight = max(most_in_flight, in_flight)
            asked = sample % NODES
            try:
                holder = await self._connect_call(self.fleet.node_registry(asked), env, [])
            except Exception as exc:  # a lost harness: counted, and the run goes on
                errors.append(f"{env}: {exc}")
                return
            finally:
                in_flight -= 1
            took = time.perf_counter() - due
            timings.append(took)
            (at_holder if holder == asked else elsewhere).append(took)

        await asyncio.gather(*(one(n, env) for n, env in enumerate(envs)))
        return {
            **latency_summary(timings),
            "at_holder": latency_summary(at_holder),
            "elsewhere": latency_summary(elsewhere),
            "offered_per_s": self.settings.connect_rate,
            "most_in_flight": most_in_flight,
            **meter.per(len(envs)),
            "errors": len(errors),
            "error_samples": errors[:5],
        }

    async def connect_saturation(self) -> dict[str, Any]:
        """/connect at the public URL with `connect_concurrency` requests always in flight:
        the most the fleet answers per second here, and the latency then."""
        timings: list[float] = []
        gate = asyncio.Semaphore(self.settings.connect_concurrency)

        async def one(env: str) -> None:
            async with gate:
                await self._connect_call(self.fleet.registry_url, env, timings)

        envs = self.sample_envs(self.settings.connects)
        meter = self.fleet.cpu_meter()
        began = time.perf_counter()
        await asyncio.gather(*(one(env) for env in envs))
        seconds = time.perf_counter() - began
        return {
            **latency_summary(timings),
            "per_second": len(envs) / seconds,
            **meter.per(len(envs)),
        }

    async def open_latency(self) -> dict[str, Any]:
        """Whole relayed stream opens (/connect at the public URL, WebSocket to the
        advertised URL, Noise handshake with the executor's /validate), four at once; each
        stream is closed right after."""
        timings: list[float] = []
        gate = asyncio.Semaphore(4)

        async def one(env: str) -> None:
            async with gate:
                began = time.perf_counter()
                peer = await self.harness.open(self.fleet.registry_url, env)
                timings.append(time.perf_counter() - began)
                self.learn(env, peer.holder)
                peer.close()

        envs = self.sample_envs(self.settings.opens)
        meter = self.fleet.cpu_meter()
        await asyncio.gather(*(one(env) for env in envs))
        return {**latency_summary(timings), **meter.per(len(envs))}

    async def open_streams(self, streams: list[list[Any]]) -> list[tuple[str, str]]:
        """Open `streams` ([registry URL, env, node id or None]) spread over the harness
        workers (kept open there until `close_streams`); the holders their bundles named."""
        shares: list[list[list[Any]]] = [[] for _ in self.harnesses]
        for position, stream in enumerate(streams):
            shares[position % len(self.harnesses)].append(stream)
        opened = await asyncio.gather(
            *(
                worker.call(cmd="open", token=self.fleet.harness_token, streams=share)
                for worker, share in zip(self.harnesses, shares, strict=True)
                if share
            )
        )
        problems = [f for answer in opened for f in answer["failed"]]
        if problems:
            await self.close_streams()
            raise ServerFailed(f"{len(problems)} streams did not open: {problems[:5]}")
        return [tuple(pair) for answer in opened for pair in answer["holders"]]

    async def close_streams(self) -> None:
        await asyncio.gather(*(worker.call(cmd="close") for worker in self.harnesses))

    async def stream_memory(self) -> dict[str, Any]:
        """Relay RSS per idle stream: `idle_streams` streams to random executors (each on its
        executor's node), opened, answered once, measured, closed."""
        count = self.settings.idle_streams
        if count <= 0:
            return {"streams": 0}
        before = self.fleet.relay_rss_kib()
        clients_before = [(await w.call(cmd="rss"))["rss_kib"] for w in self.harnesses]
        streams = [[self.fleet.registry_url, env, None] for env in self.sample_envs(count)]
        await self.open_streams(streams)
        try:
            answers = await asyncio.gather(*(w.call(cmd="echo") for w in self.harnesses))
            errors = [e for answer in answers for e in answer["errors"]]
            if errors:
                raise ServerFailed(f"idle streams did not answer: {errors[:5]}")
            pages = await self.fleet.scrape_all()
            after = self.fleet.relay_rss_kib()
            clients_after = [(await w.call(cmd="rss"))["rss_kib"] for w in self.harnesses]
        finally:
            await self.close_streams()
        return {
            "streams": count,
            "streams_active": sum(page.get("streams_active", 0.0) for page in pages),
            "relay_kib_per_stream": (sum(after) - sum(before)) / count,
            "harness_kib_per_stream": (sum(clients_after) - sum(clients_before)) / count,
        }

    async def echo_latency(self) -> dict[str, Any]:
        """Echo round trips on a stream on the executor's node and on one sent to the next
        node (crossing NATS), for one executor per node, interleaved."""
        same: list[float] = []
        cross: list[float] = []
        rounds = max(1, self.settings.echoes // NODES)
        for node in range(NODES):
            (env,) = await self.located(node, 1)
            other = self.fleet.node_id((node + 1) % NODES)
            direct = await self.harness.open(self.fleet.registry_url, env)
            crossing = await self.harness.open(self.fleet.registry_url, env, node=other)
            try:
                for peer in (direct, crossing):  # warm-up
                    await peer.call("echo", {"n": 0})
                for n in range(rounds):
                    for peer, into in ((direct, same), (crossing, cross)):
                        began = time.perf_counter()
                        await peer.call("echo", {"n": n})
                        into.append(time.perf_counter() - began)
            finally:
                direct.close()
                crossing.close()
        return {"same_node_ms": latency_summary(same), "cross_node_ms": latency_summary(cross)}

    # --- floods -----------------------------------------------------------------------------

    async def flood(self, size: int, same_node: bool, count: int) -> dict[str, Any]:
        """`flood_streams` streams per node, each to a different executor held by that node
        (on that node, or sent to the next one), all flooding at once."""
        streams: list[list[Any]] = []
        for node in range(NODES):
            wanted = min(self.settings.flood_streams, max(1, self.registered // NODES // 2))
            for env in await self.located(node, wanted):
                other = None if same_node else self.fleet.node_id((node + 1) % NODES)
                streams.append([self.fleet.registry_url, env, other])
        await self.open_streams(streams)
        try:
            pages = await self.fleet.scrape_all()
            cpu, nats_cpu = self.fleet.relay_cpu(), self.fleet.nats_cpu()
            began = time.perf_counter()
            answers = await asyncio.gather(
                *(worker.call(cmd="flood", count=count, size=size) for worker in self.harnesses)
            )
            wall = time.perf_counter() - began
            cpu_after, nats_after = self.fleet.relay_cpu(), self.fleet.nats_cpu()
            pages_after = await self.fleet.scrape_all()
        finally:
            await self.close_streams()
        errors = [e for answer in answers for e in answer["errors"]]
        if errors:
            raise ServerFailed(f"flood failed: {errors[:5]}")
        nodes = []
        for index in range(NODES):
            frames = counter(pages_after[index], "frames_forwarded_total") - counter(
                pages[index], "frames_forwarded_total"
            )
            moved = counter(pages_after[index], "bytes_forwarded_total") - counter(
                pages[index], "bytes_forwarded_total"
            )
            used = cpu_after[index] - cpu[index]
            nodes.append(
                {
                    "frames_per_s": frames / wall,
                    "mb_per_s": moved / wall / 1e6,
                    "cpu_share": used / wall,
                    "frames_per_cpu_s": frames / used if used > 0 else None,
                    "mb_per_cpu_s": moved / used / 1e6 if used > 0 else None,
                }
            )
        return {
            "streams": len(streams),
            "messages": sum(answer["messages"] for answer in answers),
            "seconds": wall,
            "nats_cpu_share": (nats_after - nats_cpu) / wall,
            "nodes": nodes,
        }

    # --- node loss --------------------------------------------------------------------------

    async def kill_recovery(self) -> dict[str, Any]:
        """SIGKILL node `VICTIM` with its executors attached and `kill_streams` harness
        streams open on it (each answered once); then: when the other nodes declare it dead,
        when 50 %, 90 % and all of its executors had a rendezvous socket again (through the
        balancer, with the tickets they hold: the executors' own clocks), when the other
        nodes' /metrics counted them all attached, how many registered again, and how long
        each harness stream took from its end to an answer on a fresh stream (/connect at
        the public URL, retried every 0.1 s)."""
        fleet = self.fleet
        envs = await self.located(VICTIM, self.settings.kill_streams)
        holders = await self.open_streams([[fleet.registry_url, env, None] for env in envs])
        misplaced = [env for env, node in holders if fleet.index_of(node) != VICTIM]
        if misplaced:
            raise ServerFailed(f"streams not on node{VICTIM}: {misplaced[:5]}")
        answers = await asyncio.gather(*(w.call(cmd="echo") for w in self.harnesses))
        if any(answer["errors"] for answer in answers):
            raise ServerFailed(f"streams did not answer before the kill: {answers}")
        pages = await fleet.scrape_all()
        total = sum(page.get("executors_connected", 0.0) for page in pages)
        held = pages[VICTIM].get("executors_connected", 0.0)
        survivors = [i for i in range(NODES) if i != VICTIM]
        registers_before = sum(
            counter(pages[i], "registry_requests_total", operation="register") for i in survivors
        )
        unavailable_before = sum(
            counter(pages[i], "rejections_total", role="executor", reason="route_unavailable")
            + counter(pages[i], "registry_requests_total", status="503")
            for i in survivors
        )
        recovering = [
            asyncio.ensure_future(worker.call(cmd="recover")) for worker in self.harnesses
        ]
        victim = fleet.nodes[VICTIM]
        assert victim.process is not None
        stable = sorted(
            env
            for env, held in self.holders.items()
            if held != VICTIM and not env.startswith(WARM_PREFIX)
        )
        killed_at = time.monotonic()
        victim.process.send_signal(signal.SIGKILL)
        await victim.process.wait()
        storm = asyncio.ensure_future(self.storm_connects(stable))
        marks: dict[str, float] = {}
        last: list[float] = []
        while "all_attached_s" not in marks or "declared_dead_s" not in marks:
            if time.monotonic() - killed_at > RECOVERY_TIMEOUT_S:
                stuck = [
                    (await worker.call(cmd="reconnected", since=killed_at))["stuck"]
                    for worker in self.executors
                ]
                raise ServerFailed(f"node{VICTIM}'s executors not back: {marks}, {last}, {stuck}")
            pages = await fleet.scrape_all()
            now = time.monotonic() - killed_at
            alive = [pages[i].get("fleet_nodes_alive", 0.0) for i in survivors]
            if "declared_dead_s" not in marks and all(n == NODES - 1 for n in alive):
                marks["declared_dead_s"] = now
            last = [pages[i].get("executors_connected", 0.0) for i in survivors]
            if "all_attached_s" not in marks and sum(last) >= total:
                marks["all_attached_s"] = now
            await asyncio.sleep(POLL_S)  # a poll with a deadline
        recovered = await asyncio.gather(*recovering)
        storm_connects = await storm
        reconnected = await asyncio.gather(
            *(worker.call(cmd="reconnected", since=killed_at) for worker in self.executors)
        )
        back = sorted(s for answer in reconnected for s in answer["seconds"])
        for name, share in (("half_back_s", 0.5), ("most_back_s", 0.9), ("all_back_s", 1.0)):
            index = max(0, min(len(back) - 1, math.ceil(share * held) - 1))
            marks[name] = back[index] if len(back) >= held * share else float("nan")
        pages = await fleet.scrape_all()
        registers_after = sum(
            counter(pages[i], "registry_requests_total", operation="register") for i in survivors
        )
        unavailable = sum(
            counter(pages[i], "rejections_total", role="executor", reason="route_unavailable")
            + counter(pages[i], "registry_requests_total", status="503")
            for i in survivors
        )
        refused = sum(pages[i].get("kv_operations_refused_total", 0.0) for i in survivors)
        longest_gc = [pages[i].get("gc_longest_pause_ms") for i in survivors]
        await self.close_streams()
        seconds = [s for answer in recovered for s in answer["seconds"]]
        errors = [e for answer in recovered for e in answer["errors"]]
        return {
            "executors_on_victim": held,
            "executors_reconnected": len(back),
            **marks,
            "registered_again": registers_after - registers_before,
            "answered_503": unavailable - unavailable_before,
            "kv_refused": refused,
            "survivors_longest_gc_ms": longest_gc,
            "streams": len(envs),
            "stream_back_ms": latency_summary(seconds),
            "stream_attempts_max": max(
                (a for answer in recovered for a in answer["attempts"]), default=0
            ),
            "stream_errors": errors[:5],
            "storm_connect_ms": storm_connects,
        }

    # --- one step ---------------------------------------------------------------------------

    async def warm_up(self) -> None:
        """One executor per node and one flood of each kind before the memory baseline, so the
        relays' buffers have reached their working size before anything is counted."""
        names = [f"{WARM_PREFIX}-{i}" for i in range(NODES)]
        await self.add_executors(names)
        worker = self.harnesses[0]
        for _name, size, same in FLOODS:
            streams = [
                [self.fleet.registry_url, name, None if same else self.fleet.node_id(i)]
                for i, name in enumerate(names)
            ]
            await worker.call(cmd="open", token=self.fleet.harness_token, streams=streams)
            await worker.call(cmd="flood", count=200, size=size)
            await worker.call(cmd="close")
        self.baseline_rss = self.fleet.relay_rss_kib()

    async def step(self, total: int) -> dict[str, Any]:
        previous = self.registered
        rss_before = self.fleet.relay_rss_kib()
        print(f"[{total}] starting {total - previous} executors", file=sys.stderr)
        registration = await self.add_executors([env_id(i) for i in range(previous, total)])
        self.registered = total
        await self.settle(total + NODES)
        rss_after = self.fleet.relay_rss_kib()
        memory = {
            "relay_rss_mib": [kib / 1024 for kib in rss_after],
            "marginal_kib_per_executor": (sum(rss_after) - sum(rss_before)) / (total - previous),
            "kib_per_executor": (sum(rss_after) - sum(self.baseline_rss)) / total,
            "nats_rss_mib": [kib / 1024 for kib in self.fleet.nats_rss_kib()],
            "worker_rss_mib": [
                (await worker.call(cmd="rss"))["rss_kib"] / 1024 for worker in self.executors
            ],
            "kv": kv_streams(self.fleet.nats),
        }
        gc_pages = await self.fleet.scrape_all()
        print(f"[{total}] /connect", file=sys.stderr)
        connect = await self.connect_latency()
        saturation = await self.connect_saturation()
        print(f"[{total}] streams", file=sys.stderr)
        opens = await self.open_latency()
        memory["streams"] = await self.stream_memory()
        echo = await self.echo_latency()
        floods = {}
        for name, size, same in FLOODS:
            print(f"[{total}] flood {name}", file=sys.stderr)
            count = self.settings.small_count if size == SMALL_FRAME else self.settings.large_count
            floods[name] = await self.flood(size, same, count)
        return {
            "executors": total,
            "gc": collector_figures(gc_pages),
            "registration": registration,
            "memory": memory,
            "connect_ms": connect,
            "connect_saturation_ms": saturation,
            "open_ms": opens,
            "echo": echo,
            "floods": floods,
        }


# -- output -----------------------------------------------------------------------------------

PARTS = (("relay", "relay"), ("nats", "NATS"), ("balancer", "HAProxy"), ("client", "clients"))


def _ms(summary: dict[str, Any], key: str) -> str:
    return fmt(summary.get(key)) if summary.get("n") else "-"


def _per_node(values: list[float | None]) -> str:
    return " / ".join("-" if v is None else fmt(v) for v in values)


def rows(results: dict[str, Any]) -> list[list[str]]:
    steps = results["steps"]
    out: list[list[str]] = []

    def add(label: str, unit: str, cells: list[str]) -> None:
        out.append([label, unit, *cells])

    def cpu(label: str, key: str) -> None:
        for part, name in PARTS:
            add(
                f"  {name} CPU per {label}",
                "ms",
                [fmt(s[key].get(f"{part}_cpu_ms")) for s in steps],
            )

    add("registrations/s (batch)", "1/s", [fmt(s["registration"]["per_second"]) for s in steps])
    add("  executors added", "", [str(s["registration"]["added"]) for s in steps])
    add(
        "  executors held per node",
        "",
        [_per_node(s["registration"]["held_per_node"]) for s in steps],
    )
    for key in ("register_ms", "attach_ms"):
        label = "/register" if key == "register_ms" else "register + attach"
        add(f"{label} p50", "ms", [_ms(s["registration"][key], "p50") for s in steps])
        add(f"{label} p99", "ms", [_ms(s["registration"][key], "p99") for s in steps])
    cpu("registration", "registration")
    rate = fmt(steps[0]["connect_ms"]["offered_per_s"]) if steps else "-"
    add(f"/connect p50 ({rate}/s offered)", "ms", [_ms(s["connect_ms"], "p50") for s in steps])
    add(f"/connect p99 ({rate}/s offered)", "ms", [_ms(s["connect_ms"], "p99") for s in steps])
    for where, label in (("at_holder", "at the executor's node"), ("elsewhere", "at another node")):
        add(
            f"  {label} p50 / p99",
            "ms",
            [f"{_ms(s['connect_ms'][where], 'p50')} / {_ms(s['connect_ms'][where], 'p99')}"
             for s in steps],
        )  # fmt: skip
    add("  /connect failed", "", [str(s["connect_ms"]["errors"]) for s in steps])
    add("  most in flight", "", [str(s["connect_ms"]["most_in_flight"]) for s in steps])
    cpu("/connect", "connect_ms")
    saturated = [s["connect_saturation_ms"] for s in steps]
    add("/connect most answered", "1/s", [fmt(c["per_second"]) for c in saturated])
    add("  p50 / p99 then", "ms", [f"{_ms(c, 'p50')} / {_ms(c, 'p99')}" for c in saturated])
    add("stream open p50", "ms", [_ms(s["open_ms"], "p50") for s in steps])
    add("stream open p99", "ms", [_ms(s["open_ms"], "p99") for s in steps])
    cpu("stream open", "open_ms")
    for where in ("same_node_ms", "cross_node_ms"):
        label = "echo, same node" if where == "same_node_ms" else "echo, across nodes"
        add(f"{label} p50", "ms", [_ms(s["echo"][where], "p50") for s in steps])
        add(f"{label} p99", "ms", [_ms(s["echo"][where], "p99") for s in steps])
    for name, _size, _same in FLOODS:
        floods = [s["floods"][name] for s in steps]
        add(
            f"{name}: frames/s per node",
            "1/s",
            [_per_node([n["frames_per_s"] for n in f["nodes"]]) for f in floods],
        )
        add(
            f"{name}: frames per relay CPU-s",
            "1/s",
            [_per_node([n["frames_per_cpu_s"] for n in f["nodes"]]) for f in floods],
        )
        if name.startswith("large"):
            add(
                f"{name}: MB/s per node",
                "MB/s",
                [_per_node([n["mb_per_s"] for n in f["nodes"]]) for f in floods],
            )
            add(
                f"{name}: MB per relay CPU-s",
                "MB/s",
                [_per_node([n["mb_per_cpu_s"] for n in f["nodes"]]) for f in floods],
            )
        add(
            f"{name}: relay CPU share",
            "cores",
            [_per_node([n["cpu_share"] for n in f["nodes"]]) for f in floods],
        )
        if not name.endswith("same"):
            add(f"{name}: NATS CPU share", "cores", [fmt(f["nats_cpu_share"]) for f in floods])
    gc_rows = (
        ("relay longest GC pause (so far)", "ms", "longest_pause_ms"),
        ("  full collections (so far)", "", "full_collections"),
        ("  mean full collection", "ms", "full_mean_ms"),
        ("  objects frozen", "", "objects_frozen"),
    )
    for label, unit, key in gc_rows:
        add(label, unit, [_per_node(s["gc"][key]) if "gc" in s else "-" for s in steps])
    add("relay RSS per node", "MiB", [_per_node(s["memory"]["relay_rss_mib"]) for s in steps])
    add(
        "relay RSS per executor (all nodes)",
        "KiB",
        [fmt(s["memory"]["kib_per_executor"]) for s in steps],
    )
    add(
        "  marginal (this step)",
        "KiB",
        [fmt(s["memory"]["marginal_kib_per_executor"]) for s in steps],
    )
    streams = [s["memory"]["streams"] for s in steps]
    add(
        "relay RSS per idle stream",
        "KiB",
        [fmt(m.get("relay_kib_per_stream")) + f" ({m['streams']})" for m in streams],
    )
    add(
        "  harness RSS per stream",
        "KiB",
        [fmt(m.get("harness_kib_per_stream")) for m in streams],
    )
    add("NATS RSS per server", "MiB", [_per_node(s["memory"]["nats_rss_mib"]) for s in steps])
    for bucket in ("relay_registrations", "relay_authorizations", "relay_claims", "relay_nodes"):
        add(
            f"KV {bucket}",
            "msgs / MB",
            [
                "{} / {}".format(
                    s["memory"]["kv"].get(bucket, {}).get("messages", 0),
                    fmt(s["memory"]["kv"].get(bucket, {}).get("bytes", 0) / 1e6),
                )
                for s in steps
            ],
        )
    add(
        "executor worker RSS",
        "MiB",
        [_per_node(s["memory"]["worker_rss_mib"]) for s in steps],
    )
    return out


def kill_rows(kill: dict[str, Any]) -> list[list[str]]:
    back = kill["stream_back_ms"]
    return [
        ["executors on the killed node", "", fmt(kill["executors_on_victim"])],
        ["declared dead by the others", "s", fmt(kill.get("declared_dead_s"))],
        ["50 % of its executors connected elsewhere", "s", fmt(kill.get("half_back_s"))],
        ["90 %", "s", fmt(kill.get("most_back_s"))],
        ["all", "s", fmt(kill.get("all_back_s"))],
        ["all counted attached by the nodes' /metrics", "s", fmt(kill.get("all_attached_s"))],
        ["executors that registered again", "", fmt(kill["registered_again"])],
        ["executor dials and registry calls answered 503", "", fmt(kill.get("answered_503"))],
        ["  state operations refused after queueing", "", fmt(kill.get("kv_refused"))],
        [
            "  survivors' longest GC pause (so far)",
            "ms",
            _per_node(kill.get("survivors_longest_gc_ms", [])),
        ],
        [
            f"harness streams answering again ({kill['streams']}) p50 / max",
            "s",
            f"{fmt(back.get('p50', 0) / 1000)} / {fmt(back.get('max', 0) / 1000)}"
            if back.get("n")
            else "-",
        ],
        ["  most attempts of one stream", "", str(kill["stream_attempts_max"])],
        *_storm_rows(kill.get("storm_connect_ms")),
    ]


def _storm_rows(storm: dict[str, Any] | None) -> list[list[str]]:
    if not storm or not storm.get("n"):
        return []
    return [
        [
            f"/connect during the storm ({storm['n']} at {STORM_CONNECT_RATE:g}/s) p50 / p99",
            "ms",
            f"{fmt(storm['p50'])} / {fmt(storm['p99'])}",
        ],
        ["  /connect failed during the storm", "", str(storm["errors"])],
    ]


def render(results: dict[str, Any], markdown: bool) -> str:
    header = ["figure", "unit", *(f"{s['executors']} executors" for s in results["steps"])]
    text = format_table(header, rows(results), markdown, figures_from=2)
    kill = results.get("kill")
    if kill:
        executors = results["steps"][-1]["executors"] if results["steps"] else 0
        title = f"node loss (SIGKILL, {executors} executors)"
        text += "\n\n" + format_table(
            [title, "unit", "value"], kill_rows(kill), markdown, figures_from=2
        )
    return text


# -- driver -----------------------------------------------------------------------------------


async def main_async(args: argparse.Namespace) -> int:
    settings = Settings(
        steps=tuple(int(n) for n in args.steps.split(",")) if args.steps else
        (FULL_STEPS if args.full else STEPS),
        workers=args.workers,
        harness_workers=args.harness_workers,
        concurrency=args.concurrency,
        connects=args.connects,
        connect_concurrency=args.connect_concurrency,
        connect_rate=args.connect_rate,
        opens=args.opens,
        idle_streams=args.idle_streams,
        echoes=args.echoes,
        flood_streams=args.flood_streams,
        small_count=args.small_count,
        large_count=args.large_count,
        kill=not args.no_kill,
        kill_streams=args.kill_streams,
        balancers=args.balancers,
        relay_args=shlex.split(args.relay_args or ""),
        relay_src=args.relay_src.resolve(),
        profile_dir=args.profile,
    )  # fmt: skip
    if list(settings.steps) != sorted(set(settings.steps)) or settings.steps[0] < 10 * NODES:
        raise SystemExit("--steps: increasing executor counts, the first at least 30")
    workers = settings.workers or max(2, -(-settings.steps[-1] // EXECUTORS_PER_WORKER))
    nofile = raise_file_limit()
    # A balancer holds two sockets per connection through it.
    sockets = 2 * settings.steps[-1] + SPARE_SOCKETS
    settings.balancers = settings.balancers or max(1, -(-sockets // nofile))
    if nofile < max(sockets // settings.balancers, settings.steps[-1] // NODES * 2) + 1000:
        raise SystemExit(
            f"RLIMIT_NOFILE is {nofile}: too few for {settings.steps[-1]} executors "
            f"(more --balancers, a higher hard limit, or fewer --steps)"
        )
    workdir = Path(tempfile.mkdtemp(prefix="execserver-fleet-scale-"))
    if settings.profile_dir is not None:
        settings.profile_dir.mkdir(parents=True, exist_ok=True)
    print(f"workdir {workdir}; RLIMIT_NOFILE {nofile}; {workers} executor workers", file=sys.stderr)
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    load_start = list(os.getloadavg())
    pressure_start = cpu_pressure()
    began = time.monotonic()
    steps: list[dict[str, Any]] = []
    kill: dict[str, Any] | None = None
    async with running_fleet(workdir, settings) as fleet:
        executor_workers = [
            await WorkerProcess.start(f"executors{i}", workdir) for i in range(workers)
        ]
        harness_workers = [
            await WorkerProcess.start(f"harness{i}", workdir)
            for i in range(settings.harness_workers)
        ]
        fleet.clients = [w.process.pid for w in [*executor_workers, *harness_workers]]
        bench = Bench(fleet, executor_workers, harness_workers, settings)
        try:
            await bench.warm_up()
            for total in settings.steps:
                steps.append(await bench.step(total))
                print(render({"steps": steps}, False), file=sys.stderr)
            if settings.kill:
                print(f"[{settings.steps[-1]}] SIGKILL node{VICTIM}", file=sys.stderr)
                kill = await bench.kill_recovery()
        finally:
            await bench.harness.aclose()
            await asyncio.gather(*(w.stop() for w in [*executor_workers, *harness_workers]))
    meta: dict[str, Any] = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "started_at": started_at,
        "duration_s": round(time.monotonic() - began, 1),
        "machine": machine_info(),
        "loadavg_start": load_start,
        "loadavg_end": list(os.getloadavg()),
        "cpu_pressure_start": pressure_start,
        "cpu_pressure_end": cpu_pressure(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(settings).items()},
        "executor_workers": workers,
        "rlimit_nofile": nofile,
    }
    results = {"meta": meta, "steps": steps, "kill": kill}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_bytes(msgspec.json.format(msgspec.json.encode(results), indent=1))
    print(render(results, args.markdown))
    load = ", ".join(f"{x:.2f}" for x in load_start)
    print(
        f"\n{meta['duration_s']} s; load average at start {load}; raw figures in {args.json}",
        file=sys.stderr,
    )
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true", help="100, 1,000 and 10,000 executors")
    parser.add_argument("--steps", help="comma-separated executor counts (default 100,1000)")
    parser.add_argument(
        "--workers", type=int, default=0, help=f"executor processes (default: one per "
        f"{EXECUTORS_PER_WORKER} executors, at least 2)"
    )  # fmt: skip
    parser.add_argument("--harness-workers", type=int, default=2, help="harness processes")
    parser.add_argument(
        "--concurrency", type=int, default=32, help="executors starting at once per worker"
    )
    parser.add_argument("--connects", type=int, default=600, help="/connect samples per step")
    parser.add_argument(
        "--connect-rate", type=float, default=50.0, help="/connect offered per second"
    )
    parser.add_argument(
        "--connect-concurrency", type=int, default=8, help="/connect in flight, saturated"
    )
    parser.add_argument("--opens", type=int, default=60, help="stream opens per step")
    parser.add_argument(
        "--idle-streams", type=int, default=300, help="streams held open to measure memory"
    )
    parser.add_argument("--echoes", type=int, default=300, help="echo round trips per mode")
    parser.add_argument("--flood-streams", type=int, default=4, help="flood streams per node")
    parser.add_argument("--small-count", type=int, default=5000, help="small messages per stream")
    parser.add_argument("--large-count", type=int, default=200, help="large messages per stream")
    parser.add_argument("--no-kill", action="store_true", help="skip the node kill at the end")
    parser.add_argument(
        "--kill-streams", type=int, default=8, help="harness streams on the killed node"
    )
    parser.add_argument(
        "--balancers",
        type=int,
        default=0,
        help="HAProxy processes on the public port (default: as many as RLIMIT_NOFILE needs)",
    )
    parser.add_argument("--relay-args", help="extra arguments for every `execserver relay`")
    parser.add_argument(
        "--relay-src",
        type=Path,
        default=ROOT / "src",
        help="the execserver sources the relay nodes run (default: this checkout's); e.g. an "
        "older build's, to measure a relay change before and after with the same clients",
    )
    parser.add_argument("--profile", type=Path, help="run the nodes under cProfile, into DIR")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "fleet-results.json")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--render", type=Path, help="only print the table of a JSON result")
    args = parser.parse_args()
    if args.render:
        print(render(msgspec.json.decode(args.render.read_bytes()), args.markdown))
        return
    run_cancellable(main_async(args), "processes")


if __name__ == "__main__":
    main()
