"""A relay fleet for tests: a NATS cluster, relay nodes (`execserver relay --nats …`, real
subprocesses) and a TCP load balancer in front of them, all on 127.0.0.1.

    async with relay_fleet(tmp_path) as fleet:
        fleet.url                  # the balancer: what executors and harnesses are given
        fleet.node_url(1)          # one node directly
        await fleet.kill_node(0)   # SIGKILL (start_node(0) brings it back on the same port)
        await fleet.nats.kill(2)   # one NATS server

Every node shares one ticket secret, advertises its own URL (unless `advertise=False`) and
serves /metrics with the executor token.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tests.conftest import TIME
from tests.harness.balancer import TcpBalancer
from tests.harness.nats import NatsCluster, nats_cluster
from tests.harness.ports import listen_ports
from tests.harness.relay import relay_flags
from tests.relay.support import EXECUTOR_TOKEN, RelayProcess, relay_metrics, start_relay_process


@dataclass
class Fleet:
    nats: NatsCluster
    balancer: TcpBalancer
    ports: list[int]
    nodes: list[RelayProcess | None]
    workdir: Path
    secret_file: Path
    advertise: bool
    extra: list[str]
    advertise_base: str | None = None
    """When set, node `i` advertises `{advertise_base}/node/{node_id(i)}` (a path routed to
    it by a balancer, as deploy/fleet/haproxy.cfg does) instead of its own address."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.balancer.port}"

    def node_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.ports[index]}"

    def node_id(self, index: int) -> str:
        return f"node{index}"

    def args(self, index: int) -> list[str]:
        args = [
            "--listen", f"127.0.0.1:{self.ports[index]}",
            "--public-url", f"ws://127.0.0.1:{self.balancer.port}",
            "--nats", ",".join(self.nats.urls),
            "--ticket-secret-file", str(self.secret_file),
            "--node-id", self.node_id(index),
            *relay_flags(self.workdir),
            *self.extra,
        ]  # fmt: skip
        if self.advertise_base is not None:
            args += ["--advertise-url", f"{self.advertise_base}/node/{self.node_id(index)}"]
        elif self.advertise:
            args += ["--advertise-url", f"ws://127.0.0.1:{self.ports[index]}"]
        return args

    async def start_node(self, index: int) -> RelayProcess:
        node = await start_relay_process(self.args(index), self.workdir, self.node_id(index))
        self.nodes[index] = node
        return node

    async def kill_node(self, index: int) -> None:
        node = self.nodes[index]
        assert node is not None
        with contextlib.suppress(ProcessLookupError):
            node.process.send_signal(signal.SIGKILL)
        await node.process.wait()
        self.nodes[index] = None

    def live(self) -> list[int]:
        return [i for i, node in enumerate(self.nodes) if node is not None]

    async def metrics(self, index: int) -> str:
        return await relay_metrics(self.node_url(index), EXECUTOR_TOKEN)

    async def gauge(self, index: int, name: str) -> int:
        """A gauge of node `index` (0 when absent)."""
        page = await self.metrics(index)
        match = re.search(rf"^exec_server_relay_{name} (\d+)$", page, re.MULTILINE)
        return 0 if match is None else int(match.group(1))

    async def holder(self, timeout: float = 30.0) -> int:
        """The index of the live node holding the (one) executor socket, once one does."""
        async with asyncio.timeout(timeout * TIME):
            while True:
                for index in self.live():
                    with contextlib.suppress(aiohttp.ClientError):
                        if await self.gauge(index, "executors_connected") >= 1:
                            return index
                await asyncio.sleep(0.05)  # a poll with a deadline

    async def wait_alive(self, count: int, timeout: float = 30.0) -> None:
        """Until every live node knows `count` live nodes."""
        async with asyncio.timeout(timeout * TIME):
            while True:
                seen = []
                for index in self.live():
                    with contextlib.suppress(aiohttp.ClientError):
                        seen.append(await self.gauge(index, "fleet_nodes_alive"))
                if seen and all(n == count for n in seen) and len(seen) == len(self.live()):
                    return
                await asyncio.sleep(0.05)  # a poll with a deadline

    def stderr(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}"
            for path in sorted(self.workdir.glob("node*.stderr"))
        )


@contextlib.asynccontextmanager
async def relay_fleet(
    workdir: Path,
    *,
    nodes: int = 3,
    nats_servers: int = 3,
    advertise: bool = True,
    advertise_base: str | None = None,
    extra: list[str] | None = None,
) -> AsyncIterator[Fleet]:
    """`nodes` relay nodes on a `nats_servers` NATS cluster behind a balancer; every process
    is stopped at the end (the nodes required to exit 0 unless killed)."""
    workdir.mkdir(parents=True, exist_ok=True)
    secret_file = workdir / "ticket-secret"
    secret_file.write_text(secrets.token_hex(32) + "\n")  # as `openssl rand -hex 32` makes it
    secret_file.chmod(0o600)
    ports = listen_ports(nodes)
    async with (
        nats_cluster(workdir / "nats", size=nats_servers) as cluster,
        TcpBalancer(ports) as balancer,
    ):
        fleet = Fleet(
            cluster,
            balancer,
            ports,
            [None] * nodes,
            workdir,
            secret_file,
            advertise,
            extra or [],
            advertise_base,
        )
        try:
            # Every start is awaited to its end, so that one node failing to start does not
            # leave another starting unwatched: the `finally` stops all that did start.
            started = await asyncio.gather(
                *(fleet.start_node(i) for i in range(nodes)), return_exceptions=True
            )
            for outcome in started:
                if isinstance(outcome, BaseException):
                    raise outcome
            await fleet.wait_alive(nodes)
            yield fleet
        finally:
            codes = await asyncio.gather(
                *(node.stop() for node in fleet.nodes if node is not None), return_exceptions=True
            )
        assert all(code == 0 for code in codes), (codes, fleet.stderr())
