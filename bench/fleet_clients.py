"""The clients of bench/fleet_scale.py: many relay executors in one process, and harness
streams, all made of our own relay client code (nothing is simulated on the wire).

An executor here is `execserver.relay.executor.RelayExecutor` as `execserver serve --remote`
runs it (registration, the rendezvous WebSocket, reconnects with its backoff, Noise
responder, validation of each harness with the registry); only what answers inside a stream is
smaller than an `ExecServer`: `Responder`, a JSON-RPC peer whose `echo` answers its params and
whose `flood` sends `count` notifications of `size` bytes (pausing while the stream is
congested) and then answers, so that a flood measures the relay and not a child process. All
executors of one process share one HTTP pool for their registry calls and one Noise identity
(the relay stores the key per registration all the same). A harness stream is
`execserver.relay.harness.connect_relay` (/connect, rendezvous WebSocket, Noise initiator)
with `BenchPeer` as its receiver; `BenchRegistry` times the registry calls, remembers which
node the bundle pointed at (`/node/<id>/` of the recipe's balancer) and may point the stream at
another node (the ticket is valid on every node): that is how a stream crosses nodes.

Run as a worker (`python bench/fleet_clients.py`), it reads one JSON command per line on stdin
and answers each with one JSON line on stdout (see `Worker`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import re
import sys
import time
from pathlib import Path
from typing import Any, Protocol

import httpx
import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))  # this checkout's execserver, not an installed one

from execserver.relay import api
from execserver.relay.executor import RelayExecutor
from execserver.relay.harness import RelayChannel, RelayTarget, connect_relay
from execserver.relay.noise import NoiseIdentity
from execserver.relay.registry_client import (
    ConnectBundle,
    RegistryClient,
    registry_http_client,
)
from execserver.tasks import TaskOwner
from execserver.transport.base import MessageChannel

ATTACH_TIMEOUT_S = 120.0
FLOOD_TIMEOUT_S = 300.0
OPEN_CONCURRENCY = 16
"""Streams a worker opens at once."""
RECOVERY_TIMEOUT_S = 120.0
RETRY_PAUSE_S = 0.1
"""Between two attempts of a harness to open its stream again after losing it."""
_encode = msgspec.json.encode
_decode = msgspec.json.decode
NOTIFICATION_PREFIX = b'{"method"'


_NODE_PATH = re.compile(r"/node/([^/]+)/")


def holder_of(url: str) -> str | None:
    """The node id in a bundle URL advertised as `<balancer>/node/<id>/…`."""
    found = _NODE_PATH.search(url)
    return found.group(1) if found else None


def to_node(url: str, node_id: str) -> str:
    """Bundle URL `url` sent to node `node_id` instead, through the balancer."""
    return _NODE_PATH.sub(f"/node/{node_id}/", url, count=1)


class BenchRegistry(RegistryClient):
    """A registry client that records how long each `register` and `connect` took (seconds,
    appended to `timings`) and the node of the last bundle (`holder`); with `node`, it hands
    out bundles pointed at that node."""

    def __init__(
        self,
        base_url: str,
        environment_id: str,
        token: str,
        *,
        http: httpx.AsyncClient,
        timings: list[float] | None = None,
        node: str | None = None,
    ) -> None:
        super().__init__(base_url, environment_id, token, http=http)
        self.timings = timings if timings is not None else []
        self.node = node
        self.holder: str | None = None

    async def register(self, public_key: api.NoisePublicKey) -> api.RegisterResponse:
        start = time.perf_counter()
        answer = await super().register(public_key)
        self.timings.append(time.perf_counter() - start)
        return answer

    async def connect(self, harness_key: api.NoisePublicKey) -> ConnectBundle:
        start = time.perf_counter()
        bundle = await super().connect(harness_key)
        self.timings.append(time.perf_counter() - start)
        self.holder = holder_of(bundle.url)
        if self.node is not None:
            bundle = dataclasses.replace(bundle, url=to_node(bundle.url, self.node))
        return bundle


# -- the executor side ------------------------------------------------------------------------


class Responder:
    """One stream's JSON-RPC peer on the executor side (see the module docstring)."""

    def __init__(self, channel: MessageChannel) -> None:
        self._channel = channel
        self._closed = False
        self._remaining = 0
        self._notification = b""
        self._flood_id: object = None

    def message_received(self, data: bytes) -> None:
        request = _decode(data)
        method, request_id = request.get("method"), request.get("id")
        if method == "flood" and self._remaining == 0:
            params = request["params"]
            self._notification = _encode(
                {"method": "flood/data", "params": "x" * max(0, int(params["size"]) - 40)}
            )
            self._remaining = int(params["count"])
            self._flood_id = request_id
            self._pump()
        elif request_id is not None:
            self._channel.send(_encode({"id": request_id, "result": request.get("params")}))

    def _pump(self) -> None:
        channel, notification = self._channel, self._notification
        while self._remaining and not self._closed:
            if channel.is_congested():
                channel.call_when_writable(self._pump)
                return
            channel.send(notification)
            self._remaining -= 1
        if not self._closed:
            self._channel.send(_encode({"id": self._flood_id, "result": {}}))

    def connection_lost(self) -> None:
        self._closed = True
        self._remaining = 0


class BenchExecutor(RelayExecutor):
    """A `RelayExecutor` that notes when (`time.monotonic()`, the same clock in every process
    of the machine) each of its rendezvous connections came up."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connected_at: list[float] = []

    def count(self, name: str) -> None:
        if name == "rendezvous_connections":
            self.connected_at.append(time.monotonic())
        super().count(name)


class Executors:
    """Many `RelayExecutor`s in this process, each in its own task."""

    def __init__(self, token: str) -> None:
        self._token = token
        self._http = registry_http_client()
        self._identity = NoiseIdentity.generate()
        self._tasks = TaskOwner("bench executors")
        self.executors: dict[str, BenchExecutor] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def stuck(self, limit: int = 10) -> list[str]:
        """Executors without a rendezvous socket now: their counters and task outcome."""
        return [
            f"{env}: {executor.counters} "
            + ("running" if not self.tasks[env].done() else _outcome(self.tasks[env]))
            for env, executor in self.executors.items()
            if not executor.connected.is_set()
        ][:limit]

    async def start(self, placements: list[tuple[str, str]], concurrency: int) -> dict[str, Any]:
        """Start an executor per (environment id, registry URL), at most `concurrency` of
        them registering and dialling at once; return when each is connected (or failed)."""
        gate = asyncio.Semaphore(concurrency)
        register_s: list[float] = []
        attach_s: list[float] = []
        failures: list[str] = []

        async def one(environment_id: str, url: str) -> None:
            async with gate:
                start = time.perf_counter()
                registry = BenchRegistry(
                    url, environment_id, self._token, http=self._http, timings=register_s
                )
                executor = BenchExecutor(
                    url,
                    environment_id,
                    self._token,
                    lambda channel, _principal: Responder(channel),
                    identity=self._identity,
                    registry=registry,
                )
                self.executors[environment_id] = executor
                task = self.tasks[environment_id] = self._tasks.spawn(executor.run())
                connected = asyncio.ensure_future(executor.connected.wait())
                try:
                    await asyncio.wait(
                        {task, connected},
                        timeout=ATTACH_TIMEOUT_S,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    connected.cancel()
                if executor.connected.is_set():
                    attach_s.append(time.perf_counter() - start)
                else:
                    failures.append(f"{environment_id}: {_outcome(task)}")

        began = time.perf_counter()
        await asyncio.gather(*(one(env, url) for env, url in placements))
        return {
            "started": len(attach_s),
            "seconds": time.perf_counter() - began,
            "register_s": register_s,
            "attach_s": attach_s,
            "failures": failures[:20],
            "failed": len(failures),
        }

    async def aclose(self) -> None:
        await self._tasks.aclose()
        await self._http.aclose()


def _outcome(task: asyncio.Task[None]) -> str:
    if not task.done():
        return f"not connected in {ATTACH_TIMEOUT_S:g} s"
    if task.cancelled():
        return "cancelled"
    return repr(task.exception())


# -- the harness side -------------------------------------------------------------------------


class BenchPeer:
    """A harness stream's receiver: counts `flood/data` notifications without decoding them
    and resolves `call()`s by id."""

    def __init__(self) -> None:
        self.channel: RelayChannel | None = None
        self.notifications = 0
        self.notification_bytes = 0
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.lost = False
        self.lost_at: float | None = None
        """`time.perf_counter()` when the stream ended."""
        self.ended = asyncio.Event()
        self.holder: str | None = None
        """The node the bundle named (the executor's)."""
        self.target: tuple[str, str] = ("", "")
        """(registry URL, environment id) it was opened with."""

    def message_received(self, data: bytes) -> None:
        if data.startswith(NOTIFICATION_PREFIX):
            self.notifications += 1
            self.notification_bytes += len(data)
            return
        message = _decode(data)
        future = self._pending.pop(message.get("id"), None)
        if future is not None and not future.done():
            future.set_result(message.get("result"))

    def connection_lost(self) -> None:
        self.lost = True
        self.lost_at = time.perf_counter()
        self.ended.set()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError("the relay stream ended"))
        self._pending.clear()

    async def call(self, method: str, params: Any, timeout: float = 30.0) -> Any:
        assert self.channel is not None
        if self.lost:
            raise ConnectionError("the relay stream ended")
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        self.channel.send(_encode({"id": request_id, "method": method, "params": params}))
        async with asyncio.timeout(timeout):
            return await future

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()


class Harness:
    """Harness streams of this process: one Noise identity (as codex keeps one per process)
    and one HTTP pool for /connect."""

    def __init__(self, token: str) -> None:
        self._token = token
        self.http = registry_http_client()
        self.identity = NoiseIdentity.generate()

    async def open(
        self,
        registry_url: str,
        environment_id: str,
        *,
        node: str | None = None,
        timings: list[float] | None = None,
    ) -> BenchPeer:
        """A stream to the executor of `environment_id`: /connect at `registry_url`, the
        rendezvous at the bundle's URL, or on `node` (through the balancer)."""
        peer = BenchPeer()
        registry = BenchRegistry(
            registry_url, environment_id, self._token, http=self.http, timings=timings, node=node
        )
        target = RelayTarget(registry_url, environment_id, self._token)
        peer.channel = await connect_relay(target, peer, self.identity, registry=registry)
        peer.holder = registry.holder
        peer.target = (registry_url, environment_id)
        return peer

    async def aclose(self) -> None:
        await self.http.aclose()


# -- the worker process -----------------------------------------------------------------------


class Worker:
    """Commands (one JSON object per line; each answered by one JSON line):

    - `{"cmd": "start", "token": T, "placements": [[env, registry_url], ...],
      "concurrency": N}`: start executors; answers `Executors.start`'s figures.
    - `{"cmd": "open", "token": T, "streams": [[registry_url, env, node_or_null], ...]}`:
      open harness streams (kept for the commands below); answers `{"opened": n, "failed":
      [...], "holders": [[env, node id], ...]}`.
    - `{"cmd": "echo"}`: one echo round trip on every open stream; answers how many answered.
    - `{"cmd": "flood", "count": C, "size": S}`: every open stream asks its executor for C
      notifications of S bytes at once; answers messages, bytes and seconds.
    - `{"cmd": "recover"}`: wait until every open stream ends (its node is killed), open it
      again (/connect at the same registry URL, retried) until an echo answers; answers the
      seconds from each end to that answer.
    - `{"cmd": "reconnected", "since": T}`: for every executor that connected again after
      `time.monotonic()` T, the seconds from T to its first connection since.
    - `{"cmd": "close"}`: close the harness streams.
    - `{"cmd": "rss"}`: this process's VmRSS in KiB.
    - `{"cmd": "quit"}`: stop everything and exit.
    """

    def __init__(self) -> None:
        self.executors: Executors | None = None
        self.harness: Harness | None = None
        self.streams: list[BenchPeer] = []

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        name = command["cmd"]
        if name == "start":
            if self.executors is None:
                self.executors = Executors(command["token"])
            placements = [(env, url) for env, url in command["placements"]]
            return await self.executors.start(placements, int(command["concurrency"]))
        if name == "open":
            if self.harness is None:
                self.harness = Harness(command["token"])
            return await self._open(self.harness, command["streams"])
        if name == "echo":
            return await self._echo()
        if name == "flood":
            return await self._flood(int(command["count"]), int(command["size"]))
        if name == "recover":
            assert self.harness is not None, "open streams first"
            return await self._recover(self.harness)
        if name == "reconnected":
            since = float(command["since"])
            executors = self.executors.executors.values() if self.executors else []
            seconds = [
                min(at for at in executor.connected_at if at > since) - since
                for executor in executors
                if any(at > since for at in executor.connected_at)
            ]
            return {"seconds": seconds, "stuck": self.executors.stuck() if self.executors else []}
        if name == "close":
            for peer in self.streams:
                peer.close()
            self.streams.clear()
            return {"closed": True}
        if name == "rss":
            return {"rss_kib": rss_kib("self")}
        raise ValueError(f"unknown command {name!r}")

    async def _open(self, harness: Harness, streams: list[list[Any]]) -> dict[str, Any]:
        failed: list[str] = []
        holders: list[tuple[str, str | None]] = []
        gate = asyncio.Semaphore(OPEN_CONCURRENCY)

        async def one(registry_url: str, env: str, node: str | None) -> None:
            async with gate:
                try:
                    peer = await harness.open(registry_url, env, node=node)
                except Exception as exc:
                    failed.append(f"{env}: {exc!r}")
                    return
            self.streams.append(peer)
            holders.append((env, peer.holder))

        await asyncio.gather(*(one(*stream) for stream in streams))
        return {"opened": len(self.streams), "failed": failed, "holders": holders}

    async def _echo(self) -> dict[str, Any]:
        results = await asyncio.gather(
            *(peer.call("echo", {"n": 0}) for peer in self.streams), return_exceptions=True
        )
        errors = [repr(result) for result in results if isinstance(result, BaseException)]
        return {"answered": len(results) - len(errors), "errors": errors[:10]}

    async def _recover(self, harness: Harness) -> dict[str, Any]:
        seconds: list[float] = []
        attempts: list[int] = []
        errors: list[str] = []

        async def again(peer: BenchPeer) -> BenchPeer | None:
            try:
                async with asyncio.timeout(RECOVERY_TIMEOUT_S):
                    await peer.ended.wait()
                    tries = 0
                    while True:
                        tries += 1
                        try:
                            fresh = await harness.open(*peer.target)
                        except Exception:
                            await asyncio.sleep(RETRY_PAUSE_S)
                            continue
                        try:
                            await fresh.call("echo", {"n": 0}, timeout=10)
                        except Exception:
                            fresh.close()
                            await asyncio.sleep(RETRY_PAUSE_S)
                            continue
                        break
            except TimeoutError:
                errors.append(f"{peer.target[1]}: not back in {RECOVERY_TIMEOUT_S:g} s")
                return None
            assert peer.lost_at is not None
            seconds.append(time.perf_counter() - peer.lost_at)
            attempts.append(tries)
            return fresh

        fresh = await asyncio.gather(*(again(peer) for peer in self.streams))
        self.streams = [peer for peer in fresh if peer is not None]
        return {"seconds": seconds, "attempts": attempts, "errors": errors}

    async def _flood(self, count: int, size: int) -> dict[str, Any]:
        before = [(peer.notifications, peer.notification_bytes) for peer in self.streams]
        began = time.perf_counter()
        results = await asyncio.gather(
            *(
                peer.call("flood", {"count": count, "size": size}, timeout=FLOOD_TIMEOUT_S)
                for peer in self.streams
            ),
            return_exceptions=True,
        )
        seconds = time.perf_counter() - began
        errors = [repr(result) for result in results if isinstance(result, BaseException)]
        return {
            "messages": sum(
                p.notifications - b[0] for p, b in zip(self.streams, before, strict=True)
            ),
            "bytes": sum(
                p.notification_bytes - b[1] for p, b in zip(self.streams, before, strict=True)
            ),
            "seconds": seconds,
            "errors": errors[:10],
        }

    async def aclose(self) -> None:
        for peer in self.streams:
            peer.close()
        if self.executors is not None:
            await self.executors.aclose()
        if self.harness is not None:
            await self.harness.aclose()


def rss_kib(pid: int | str) -> int:
    """VmRSS of process `pid` ("self": this one) in KiB, 0 when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class CommandWorker(Protocol):
    async def handle(self, command: dict[str, Any]) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


async def serve_commands(worker: CommandWorker) -> None:
    """Answer one JSON line on stdout for each JSON command line on stdin (`worker.handle`)
    until `{"cmd": "quit"}` or the end of stdin."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            command = _decode(line)
            if command["cmd"] == "quit":
                break
            try:
                answer = await worker.handle(command)
            except Exception as exc:
                answer = {"error": repr(exc)}
            sys.stdout.buffer.write(_encode(answer) + b"\n")
            sys.stdout.flush()
    finally:
        await worker.aclose()


if __name__ == "__main__":
    asyncio.run(serve_commands(Worker()))
