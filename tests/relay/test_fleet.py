"""The relay as a fleet: three `execserver relay --nats …` nodes on a three-server NATS cluster
behind a TCP balancer, with our executor and client and the real codex binaries.

Streams between a harness on one node and its executor on another; failover when the node
holding the executor is killed (SIGKILL) or a NATS server dies, with a command printing a
counter throughout: every line arrives exactly once, then its exit code; a registration race
across nodes has one winner; an authorization is used once across nodes. The time each
failover took is printed (`-s`) and recorded in docs/SCALING.md; the tests assert what must
happen, not how fast.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from execserver.client.client import ExecServerClient
from execserver.relay import api
from execserver.relay.harness import RelayTarget
from execserver.remote import remote_environment
from tests.conftest import TIME
from tests.harness.failover import failover
from tests.harness.fleet import Fleet, relay_fleet
from tests.harness.metrics import prometheus_values
from tests.harness.relay import ENVIRONMENT_ID, EXECUTOR_TOKEN, HARNESS_TOKEN, remote_executor
from tests.harness.relay_wire import RelayHarness, WireStream
from tests.harness.servers import PREVIOUS_VERSIONS, REFERENCE_VERSION
from tests.relay.support import fake_key
from tests.server.test_file_system import uri


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    async with relay_fleet(tmp_path / "fleet") as running:
        yield running


async def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60 * TIME))


def on_node(url: str, fleet: Fleet, index: int) -> str:
    """`url` (a rendezvous URL) pointed at node `index` instead."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://127.0.0.1:{fleet.ports[index]}/{rest.split('/', 1)[1]}"


async def read_all(stream: WireStream, process_id: str) -> bytes:
    output, after, closed = b"", 0, False
    while not closed:
        read = await stream.call(
            "process/read",
            {"processId": process_id, "afterSeq": after, "waitMs": 1000},
            timeout=30,
        )
        for chunk in read["chunks"]:
            after = chunk["seq"]
            output += base64.b64decode(chunk["chunk"])
        closed = read["closed"]
    return output


# --- the data plane ---------------------------------------------------------------------------


async def test_fleet_harness_on_another_node_reaches_the_executor(
    fleet: Fleet, tmp_path: Path
) -> None:
    """A harness socket on a node that does not hold the executor: its frames cross NATS both
    ways unchanged (handshake, 300 KB of output, a 400 KB file each way); /connect on any node
    hands out the holder's own URL."""
    async with remote_executor("ours", fleet.url, tmp_path / "executor"):
        holder = await fleet.holder()
        other = (holder + 1) % 3
        async with await _session() as session:
            harness = RelayHarness(session, fleet.node_url(other), ENVIRONMENT_ID)
            bundle = await harness.bundle()
            assert bundle.url.startswith(f"ws://127.0.0.1:{fleet.ports[holder]}/relay/harness")
            crossing = api.ConnectResponse(
                **{**_fields(bundle), "url": on_node(bundle.url, fleet, other)}
            )
            stream = await harness.connect(bundle=crossing)
            await stream.initialize()
            assert await fleet.gauge(other, "fleet_remote_executors") == 1
            assert await fleet.gauge(holder, "fleet_remote_harnesses") == 1
            # The frames cross on each node's data connection; its control connection (state,
            # heartbeats, probes) carries none, so a flood cannot queue the heartbeats.
            node = fleet.node_id(holder)
            control = fleet.nats.subjects_of(f"execserver-relay-{node}")
            data = fleet.nats.subjects_of(f"execserver-relay-{node}-data")
            assert data is not None and control is not None, (data, control)
            assert f"relay.node.{node}" in data and f"relay.probe.{node}" not in data, data
            assert f"relay.probe.{node}" in control and f"relay.node.{node}" not in control
            await stream.call(
                "process/start",
                {
                    "processId": "big",
                    "argv": [sys.executable, "-c", "import sys; sys.stdout.write('x' * 300_000)"],
                    "cwd": uri(tmp_path),
                    "env": {"PATH": "/usr/bin:/bin"},
                    "tty": False,
                },
            )
            assert await read_all(stream, "big") == b"x" * 300_000
            data = os.urandom(400_000)
            path = tmp_path / "crossing.bin"
            await stream.call(
                "fs/writeFile",
                {"path": uri(path), "dataBase64": base64.b64encode(data).decode()},
                timeout=30,
            )
            assert path.read_bytes() == data
            read = await stream.call("fs/readFile", {"path": uri(path)}, timeout=30)
            assert base64.b64decode(read["dataBase64"]) == data
            await stream.close()
            assert 'fleet_messages_received_total{kind="open"} 1' in await fleet.metrics(holder)
            assert 'fleet_messages_received_total{kind="to_harness"}' in await fleet.metrics(other)
            # The harness's node tells the holder its socket is gone; both forget the route.
            await _until(lambda: _gauge_is(fleet, holder, "fleet_remote_harnesses", 0))
            await _until(lambda: _gauge_is(fleet, other, "fleet_remote_executors", 0))


def _fields(bundle: api.ConnectResponse) -> dict[str, object]:
    return {name: getattr(bundle, name) for name in bundle.__struct_fields__}


async def _gauge_is(fleet: Fleet, index: int, name: str, value: int) -> bool:
    return await fleet.gauge(index, name) == value


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout * TIME):
        while True:
            if await check():
                return
            await asyncio.sleep(0.05)  # a poll with a deadline


async def test_fleet_frames_for_an_executor_on_no_live_node_reset_the_stream(
    fleet: Fleet, tmp_path: Path
) -> None:
    """A harness bound across nodes whose executor's node dies gets its stream reset and its
    socket closed (never a silent stall)."""
    async with remote_executor("ours", fleet.url, tmp_path / "executor"):
        holder = await fleet.holder()
        other = (holder + 1) % 3
        async with await _session() as session:
            harness = RelayHarness(session, fleet.node_url(other), ENVIRONMENT_ID)
            bundle = await harness.bundle()
            crossing = api.ConnectResponse(
                **{**_fields(bundle), "url": on_node(bundle.url, fleet, other)}
            )
            stream = await harness.connect(bundle=crossing)
            await stream.initialize()
            await fleet.kill_node(holder)
            reason = await stream.wait_reset(timeout=15 * TIME)
            assert reason in ("executor_disconnected", "relay_node_lost"), reason
            await stream.close()


# --- failover ---------------------------------------------------------------------------------


async def test_fleet_failover_node_killed_ours(fleet: Fleet, tmp_path: Path) -> None:
    """SIGKILL of the node holding our executor: it reconnects through the balancer with its
    ticket (no new registration), our client reconnects with a fresh /connect and resumes;
    every counter line exactly once, then exit 7."""
    await failover(fleet, tmp_path, "ours", "node")
    assert await fleet.gauge(fleet.live()[0], "executors_registered") == 1


@pytest.mark.reference
@pytest.mark.parametrize("version", [REFERENCE_VERSION, *PREVIOUS_VERSIONS])
async def test_fleet_failover_node_killed_real_executor(
    fleet: Fleet, tmp_path: Path, version: str
) -> None:
    """The same with the real codex executor (it reconnects with its own backoff)."""
    await failover(fleet, tmp_path, "reference", "node", version=version)


async def test_fleet_failover_nats_server_killed(tmp_path: Path) -> None:
    """A stream crossing NATS (harness on one node, executor on another); SIGKILL of the NATS
    server the harness's node is connected to: the node reconnects to another server, resets
    the streams it routed through NATS (so does the executor's node when told), the client
    resumes; every counter line exactly once."""
    async with relay_fleet(tmp_path / "fleet", advertise=False) as fleet:
        await failover(fleet, tmp_path, "ours", "nats")
        # Each node holds two NATS connections (control and data), so a node whose server died
        # counts one reconnect per connection that was on it.
        pages = [prometheus_values(await fleet.metrics(i)) for i in fleet.live()]
        reconnects = [page[("exec_server_relay_nats_reconnects_total", ())] for page in pages]
        assert any(count >= 1 for count in reconnects), reconnects


# --- shared state across nodes ----------------------------------------------------------------


async def _post(
    session: aiohttp.ClientSession, url: str, environment_id: str, operation: str, body: object
) -> tuple[int, bytes]:
    token = HARNESS_TOKEN if operation == api.CONNECT else EXECUTOR_TOKEN
    async with session.post(
        api.registry_url(url, environment_id, operation),
        data=api.encode(body),
        headers={"Content-Type": "application/json", **api.bearer(token)},
    ) as response:
        return response.status, await response.read()


async def _post_until_answered(
    session: aiohttp.ClientSession, url: str, environment_id: str, operation: str, body: object
) -> tuple[int, bytes]:
    """`_post`, again while the registry answers 503 ("cannot answer now"), as executors do: a
    replicated write that times out under load (NATS, 2 s) has no answer either way."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30 * TIME
    delay = 0.05
    while True:
        status, answer = await _post(session, url, environment_id, operation, body)
        if status != 503 or loop.time() > deadline:
            return status, answer
        await asyncio.sleep(delay)  # a client's backoff, as after a Retry-After
        delay = min(delay * 2, 1.0)


async def test_fleet_registration_race_has_one_winner(fleet: Fleet, tmp_path: Path) -> None:
    """Two of our executors claim one environment id through different nodes at once: one
    ends up serving it, the other is refused with 409 and says why, and stops."""
    async with (
        remote_executor("ours", fleet.node_url(0), tmp_path / "a") as first,
        remote_executor("ours", fleet.node_url(1), tmp_path / "b") as second,
    ):
        done, _ = await asyncio.wait(
            [
                asyncio.ensure_future(first.process.wait()),
                asyncio.ensure_future(second.process.wait()),
            ],
            timeout=60 * TIME,
            return_when=asyncio.FIRST_COMPLETED,
        )
        assert len(done) == 1, "neither executor was refused"
        loser, winner = (first, second) if first.process.returncode is not None else (second, first)
        assert loser.process.returncode != 0
        assert "409" in loser.stderr() and "environment `test1`" in loser.stderr(), loser.stderr()
        assert winner.process.returncode is None
        await fleet.holder()
        target = RelayTarget(fleet.url, ENVIRONMENT_ID, HARNESS_TOKEN)
        client = await ExecServerClient.connect_relay(target)
        try:
            process = await remote_environment(client).process.start(["true"], cwd=str(tmp_path))
            assert await process.wait() == 0
        finally:
            await client.aclose()


async def test_fleet_concurrent_registrations_have_one_winner(fleet: Fleet) -> None:
    """Registry requests for one fresh environment id sent to three nodes at the same moment
    with three keys: whatever commits first wins; every later one either replaced it
    (sequential) or got 409 registration_conflict (concurrent); the registration stored is
    one of the answered ones."""
    async with await _session() as session:
        for round_ in range(10):
            environment_id = f"race-{round_}"
            answers = await asyncio.gather(
                *(
                    _post_until_answered(
                        session,
                        fleet.node_url(i),
                        environment_id,
                        api.REGISTER,
                        api.RegisterRequest(api.SECURITY_PROFILE, fake_key()),
                    )
                    for i in range(3)
                )
            )
            ok = [body for status, body in answers if status == 200]
            refused = [body for status, body in answers if status == 409]
            assert len(ok) + len(refused) == 3, answers
            assert ok, answers
            for body in refused:
                assert b"registration_conflict" in body, body


async def test_fleet_authorization_is_used_once_across_nodes(fleet: Fleet, tmp_path: Path) -> None:
    """An authorization issued by /connect on one node validates once, whichever node is
    asked (three at the same moment: one `valid: true`); a replay on another node is refused."""
    async with remote_executor("ours", fleet.url, tmp_path / "executor"):
        await fleet.holder()
        async with await _session() as session:
            for _ in range(5):
                harness_key = fake_key()
                status, body = await _post(
                    session, fleet.node_url(0), ENVIRONMENT_ID, api.CONNECT,
                    api.ConnectRequest(harness_key),
                )  # fmt: skip
                assert status == 200, body
                bundle = api.decode(body, api.ConnectResponse)
                request = api.ValidateRequest(
                    bundle.executor_registration_id, harness_key, bundle.harness_key_authorization
                )
                answers = await asyncio.gather(
                    *(
                        _post(session, fleet.node_url(i), ENVIRONMENT_ID, api.VALIDATE, request)
                        for i in range(3)
                    )
                )
                valid = [api.decode(b, api.ValidateResponse).valid for _, b in answers]
                assert valid.count(True) == 1, valid
                status, body = await _post(
                    session, fleet.node_url(2), ENVIRONMENT_ID, api.VALIDATE, request
                )
                assert api.decode(body, api.ValidateResponse).valid is False
            assert hashlib.sha256(bundle.harness_key_authorization.encode()).hexdigest() not in (
                fleet.stderr()
            )
