"""`execserver relay` as a process: the URL line, clean shutdown, refusals, restarts."""

from __future__ import annotations

import argparse
import asyncio
import re
import resource
import secrets
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from execserver.cli import build_parser
from execserver.cli.relay import (
    FleetSettings,
    RelayConfigError,
    build_config,
    build_fleet,
    parse_listen,
    parse_public_url,
)
from execserver.relay import api
from execserver.relay.service.defaults import FIRST_CONNECT_TIMEOUT_S, NATS_CLOSE_FLUSH_S
from execserver.relay.service.nats_state import atomic_replicated_cas
from tests.conftest import TIME
from tests.harness.nats import nats_cluster
from tests.relay.support import (
    EXECUTOR_TOKEN,
    HARNESS_TOKEN,
    RelayProcess,
    fake_key,
    relay_metrics,
    start_relay_process,
    wait_for_metric,
)


def token_files(tmp_path: Path) -> list[str]:
    (tmp_path / "executor.tokens").write_text(f"# executors\n{EXECUTOR_TOKEN}\n")
    (tmp_path / "harness.tokens").write_text(f"{HARNESS_TOKEN}\n")
    return [
        "--executor-token-file",
        str(tmp_path / "executor.tokens"),
        "--harness-token-file",
        str(tmp_path / "harness.tokens"),
    ]


def relay_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["relay", *argv])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("0.0.0.0:18090", ("0.0.0.0", 18090)),
        ("[::1]:8080", ("::1", 8080)),
        ("http://127.0.0.1:9", ("127.0.0.1", 9)),
    ],
)
def test_cli_relay_parses_listen(value: str, expected: tuple[str, int]) -> None:
    """--listen is IP:PORT or [IPv6]:PORT."""
    assert parse_listen(value) == expected


@pytest.mark.parametrize("value", ["localhost:1", "127.0.0.1", "::1:80", "1.2.3.4:70000", ":80"])
def test_cli_relay_refuses_bad_listen(value: str) -> None:
    """Host names, missing ports, unbracketed IPv6 and big ports are refused."""
    with pytest.raises(RelayConfigError):
        parse_listen(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://relay.example:8080/", "ws://relay.example:8080"),
        ("https://relay.example/prefix", "wss://relay.example/prefix"),
        ("wss://relay.example", "wss://relay.example"),
    ],
)
def test_cli_relay_parses_public_url(value: str, expected: str) -> None:
    """--public-url becomes the ws(s) base of rendezvous URLs."""
    assert parse_public_url(value) == expected


@pytest.mark.parametrize("value", ["relay.example", "ftp://x", "http://x/?q=1", "ws://"])
def test_cli_relay_refuses_bad_public_url(value: str) -> None:
    with pytest.raises(RelayConfigError):
        parse_public_url(value)


def test_cli_relay_needs_tokens_off_loopback(tmp_path: Path) -> None:
    """A non-loopback listener needs both token files, or --allow-unauthenticated."""
    with pytest.raises(RelayConfigError, match="--allow-unauthenticated"):
        build_config(relay_args("--listen", "0.0.0.0:0"))
    executor_only = ["--executor-token-file", token_files(tmp_path)[1]]
    with pytest.raises(RelayConfigError, match="--harness-token-file"):
        build_config(relay_args("--listen", "0.0.0.0:0", *executor_only))
    build_config(relay_args("--listen", "0.0.0.0:0", "--allow-unauthenticated"))
    build_config(relay_args("--listen", "0.0.0.0:0", *token_files(tmp_path)))
    build_config(relay_args("--listen", "127.0.0.1:0"))


def test_cli_relay_refusals_exit_1(tmp_path: Path) -> None:
    """Configuration errors print `Error: …` and exit 1 without listening."""
    cases = [
        ["--listen", "0.0.0.0:0"],
        ["--listen", "nonsense"],
        ["--executor-token-file", str(tmp_path / "missing")],
        ["--ticket-secret-file", str(tmp_path / "missing")],
    ]
    for args in cases:
        result = subprocess.run(
            [sys.executable, "-m", "execserver", "relay", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1, (args, result)
        assert result.stdout == ""
        assert result.stderr.startswith("Error: "), result.stderr


def test_cli_relay_fleet_flags(tmp_path: Path) -> None:
    """--nats makes a fleet node: it needs a shared ticket secret, takes no --state-dir, and
    checks its URLs and node id; replicas default to 3 with three servers."""
    secret = tmp_path / "secret"
    secret.write_text("s" * 64 + "\n")
    three = "nats://127.0.0.1:4222, nats://127.0.0.1:4223,nats://127.0.0.1:4224"
    fleet = build_fleet(relay_args("--nats", three, "--ticket-secret-file", str(secret)))
    assert fleet is not None
    assert fleet.servers == [f"nats://127.0.0.1:{port}" for port in (4222, 4223, 4224)]
    assert fleet.replicas == 3
    one = relay_args(*one_args(secret))
    assert build_fleet(one) == FleetSettings(["nats://n1:4222"], 1, FIRST_CONNECT_TIMEOUT_S)
    patient = build_fleet(relay_args(*one_args(secret), "--nats-connect-timeout", "90"))
    assert patient is not None and patient.connect_timeout_s == 90.0
    assert build_fleet(relay_args()) is None
    refusals = {
        "pass --ticket-secret-file": ["--nats", "nats://n1:4222"],
        "--state-dir is for a single relay": [
            "--nats", "nats://n1:4222", "--ticket-secret-file", str(secret),
            "--state-dir", str(tmp_path),
        ],
        "invalid --nats URL `http://n1`": [
            "--nats", "http://n1", "--ticket-secret-file", str(secret),
        ],
        "--nats needs at least one": ["--nats", " , ", "--ticket-secret-file", str(secret)],
        "--nats-replicas needs --nats": ["--nats-replicas", "3"],
        "--nats-connect-timeout needs --nats": ["--nats-connect-timeout", "5"],
    }  # fmt: skip
    for message, argv in refusals.items():
        with pytest.raises(RelayConfigError, match=re.escape(message.split("`")[0])):
            build_fleet(relay_args(*argv))
    config = build_config(
        relay_args("--node-id", "relay-a_1", "--advertise-url", "http://10.0.0.5:8080/")
    )[2]
    assert (config.node_id, config.advertise_url) == ("relay-a_1", "ws://10.0.0.5:8080")
    with pytest.raises(RelayConfigError, match="invalid --node-id"):
        build_config(relay_args("--node-id", "a.b"))


def one_args(secret: Path) -> list[str]:
    return ["--nats", "nats://n1:4222", "--ticket-secret-file", str(secret)]


def test_cli_relay_fleet_refusals_exit_1(tmp_path: Path) -> None:
    """A fleet node that cannot reach NATS within --nats-connect-timeout says so on one line
    and exits 1; a timeout that is not a positive number is a usage error."""
    secret = tmp_path / "secret"
    secret.write_text("s" * 64 + "\n")
    command = [sys.executable, "-m", "execserver", "relay", "--nats", "nats://127.0.0.1:1"]
    for bad in ("0", "-1", "soon"):
        refused = subprocess.run(
            [*command, "--ticket-secret-file", str(secret), "--nats-connect-timeout", bad],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode == 2, refused
        assert "argument --nats-connect-timeout" in refused.stderr.splitlines()[-1], refused
    result = subprocess.run(
        [*command, "--ticket-secret-file", str(secret), "--nats-connect-timeout", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result
    assert result.stdout == ""
    assert result.stderr.startswith("Error: cannot reach NATS at nats://127.0.0.1:1"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_nats_server_versions_with_atomic_replicated_cas() -> None:
    """Replicated relay state needs nats-server >= 2.9.21 (nats-io/nats-server#4320)."""
    assert not atomic_replicated_cas("2.9.10")
    assert not atomic_replicated_cas("2.9.20")
    assert atomic_replicated_cas("2.9.21")
    assert atomic_replicated_cas("2.10.0-beta.3")
    assert atomic_replicated_cas("2.15.1")
    assert not atomic_replicated_cas("garbage")


async def test_cli_relay_prints_its_url_and_stops_on_sigterm(tmp_path: Path) -> None:
    """The first stdout line is http://IP:PORT (the real port); SIGTERM exits 0."""
    relay = await start_relay_process(["--listen", "127.0.0.1:0", *token_files(tmp_path)], tmp_path)
    try:
        assert relay.url.startswith("http://127.0.0.1:")
        assert relay.port > 0
        async with aiohttp.ClientSession() as session, session.get(relay.url + "/readyz") as r:
            assert r.status == 200
    finally:
        assert await relay.stop() == 0


async def test_cli_relay_state_dir_keeps_tickets_and_registrations(tmp_path: Path) -> None:
    """With --state-dir, an executor URL issued before a restart still attaches after it."""
    state = tmp_path / "state"
    args = [*token_files(tmp_path), "--state-dir", str(state), "--metrics"]
    relay = await start_relay_process(["--listen", "127.0.0.1:0", *args], tmp_path)
    port = relay.port
    async with aiohttp.ClientSession() as session:
        try:
            async with session.post(
                api.registry_url(relay.url, "test1", api.REGISTER),
                data=api.encode(api.RegisterRequest(api.SECURITY_PROFILE, fake_key())),
                headers=api.bearer(EXECUTOR_TOKEN),
            ) as response:
                assert response.status == 200
                registration = api.decode(await response.read(), api.RegisterResponse)
        finally:
            assert await relay.stop() == 0
        assert (state / "ticket-secret").stat().st_mode & 0o077 == 0
        assert registration.executor_registration_id in (state / "registrations.json").read_text()
        relay = await start_relay_process(["--listen", f"127.0.0.1:{port}", *args], tmp_path)
        try:
            ws = await session.ws_connect(registration.url)
            page = await wait_for_metric(
                relay.url, EXECUTOR_TOKEN, "exec_server_relay_executors_connected 1"
            )
            assert "registry_requests_total" not in page  # no new registration was needed
            await ws.close()
        finally:
            assert await relay.stop() == 0
        # Without the state dir the same URL is refused with a 4xx (the executor re-registers).
        relay = await start_relay_process(
            ["--listen", f"127.0.0.1:{port}", *token_files(tmp_path)], tmp_path
        )
        try:
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await session.ws_connect(registration.url)
            assert info.value.status == 401
            assert info.value.headers is not None
            assert info.value.headers[api.REJECTION_REASON_HEADER] == "invalid_signature"
        finally:
            assert await relay.stop() == 0


async def test_cli_relay_sigterm_closes_sockets_with_1001(tmp_path: Path) -> None:
    """Shutdown closes attached sockets with 1001 (an executor retries the same URL)."""
    relay = await start_relay_process(["--listen", "127.0.0.1:0"], tmp_path)
    async with aiohttp.ClientSession() as session:
        try:
            async with session.post(
                api.registry_url(relay.url, "test1", api.REGISTER),
                data=api.encode(api.RegisterRequest(api.SECURITY_PROFILE, fake_key())),
            ) as response:
                registration = api.decode(await response.read(), api.RegisterResponse)
            ws = await session.ws_connect(registration.url)
        except BaseException:
            await relay.stop()
            raise
        stopping = asyncio.ensure_future(relay.stop())
        try:
            message = await ws.receive(timeout=10 * TIME)
            assert message.type is aiohttp.WSMsgType.CLOSE
            assert message.data == 1001
            await ws.close()
        finally:
            assert await stopping == 0


async def test_cli_relay_completes_connections_while_paused(tmp_path: Path) -> None:
    """A paused relay (SIGSTOP here; a full garbage collection or a busy CPU in a fleet whose
    node died and whose executors all reconnect at once) still has the kernel complete the
    TCP handshakes of 600 new connections (its listen backlog is not aiohttp's 128, which
    would leave the rest retransmitting SYNs); resumed, it serves them."""
    count = 600
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 200:
        wanted = min(hard, count + 400) if hard != resource.RLIM_INFINITY else count + 400
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    relay = await start_relay_process(["--listen", "127.0.0.1:0", *token_files(tmp_path)], tmp_path)
    sockets: list[socket.socket] = []
    try:
        relay.process.send_signal(signal.SIGSTOP)
        try:
            for _ in range(count):
                sock = socket.socket()
                sockets.append(sock)
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", relay.port))
            poller = select.poll()
            for sock in sockets:
                poller.register(sock, select.POLLOUT)
            pending = {sock.fileno() for sock in sockets}
            deadline = time.monotonic() + 10 * TIME
            while pending and time.monotonic() < deadline:
                for fd, _events in poller.poll(100):
                    pending.discard(fd)
                    poller.unregister(fd)
            assert not pending, f"{len(pending)} of {count} handshakes not completed"
            assert all(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 for sock in sockets)
        finally:
            relay.process.send_signal(signal.SIGCONT)
        last = sockets[-1]
        last.setblocking(True)
        last.settimeout(10 * TIME)
        last.sendall(b"GET /readyz HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
        assert last.recv(64).startswith(b"HTTP/1.1 200")
    finally:
        for sock in sockets:
            sock.close()
        assert await relay.stop() == 0


@pytest.mark.parametrize("freeze", [True, False])
async def test_cli_relay_freezes_long_lived_objects(tmp_path: Path, freeze: bool) -> None:
    """By default the relay process keeps its long-lived objects out of the collector's walks
    (`gc.freeze()`, reported on /metrics); `--no-gc-freeze` leaves the collector alone."""
    args = ["--listen", "127.0.0.1:0", *token_files(tmp_path), "--metrics"]
    relay = await start_relay_process(args + ([] if freeze else ["--no-gc-freeze"]), tmp_path)
    frozen = -1
    try:
        async with asyncio.timeout(30 * TIME):
            while frozen <= 0:
                page = await relay_metrics(relay.url, EXECUTOR_TOKEN)
                found = re.search(r"^exec_server_relay_gc_objects_frozen (\d+)$", page, re.M)
                assert found is not None, page
                frozen = int(found.group(1))
                if not freeze:
                    break
                await asyncio.sleep(0.05)  # a poll with a deadline
        assert (frozen > 1000) if freeze else (frozen == 0), page
        assert "exec_server_relay_gc_longest_pause_ms " in page
    finally:
        assert await relay.stop() == 0


async def start_fleet_node(tmp_path: Path, nats_url: str) -> RelayProcess:
    """One relay fleet node on the NATS server at `nats_url`."""
    secret = tmp_path / "ticket-secret"
    secret.write_text(secrets.token_hex(32) + "\n")
    secret.chmod(0o600)
    args = ["--listen", "127.0.0.1:0", "--nats", nats_url, "--ticket-secret-file", str(secret)]
    return await start_relay_process([*args, *token_files(tmp_path)], tmp_path)


async def test_cli_relay_fleet_node_stop_is_quiet(tmp_path: Path) -> None:
    """A fleet node's orderly stop closes its two NATS connections and says so at info (it
    used to log each of its own closes as a loss, at warning)."""
    async with nats_cluster(tmp_path / "nats", size=1) as cluster:
        relay = await start_fleet_node(tmp_path, cluster.urls[0])
        assert await relay.stop() == 0, relay.stderr()
    stderr = relay.stderr()
    assert stderr.count("NATS connection closed") == 2, stderr
    assert "NATS connection lost" not in stderr, stderr


async def test_cli_relay_fleet_node_stops_while_nats_is_frozen(tmp_path: Path) -> None:
    """SIGTERM while the node's NATS server does not answer (SIGSTOP): each connection waits
    at most NATS_CLOSE_FLUSH_S for its publishes to be confirmed, says so, and the node
    still exits 0 (nats-py's drain, used before, held the exit for 27 s here)."""
    async with nats_cluster(tmp_path / "nats", size=1) as cluster:
        server = cluster.servers[0].process
        assert server is not None
        relay = await start_fleet_node(tmp_path, cluster.urls[0])
        server.send_signal(signal.SIGSTOP)
        try:
            began = time.monotonic()
            code = await relay.stop(timeout=40)
            took = time.monotonic() - began
        finally:
            server.send_signal(signal.SIGCONT)
        assert code == 0, relay.stderr()
        assert relay.stderr().count("publishes not confirmed") == 2, relay.stderr()
        # Two connections flushed one after the other, plus the shutdown's other bounded
        # steps (the node key's delete, 2 s): about 12 s.
        assert took < 4 * NATS_CLOSE_FLUSH_S * TIME, (took, relay.stderr())
