"""Our relay-mode executor across restarts and registry trouble: an executor restart is a new
registration that fresh bundles reach; a relay restart with `--state-dir` is survived on the
same ticket (no new registration) and sessions resume; a registry that is down or answers
5xx is retried (our deliberate difference: codex exits), while a 401 ends the executor with
exit status 1 and a one-line error (RELAY.md §2.4, §3).
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import aiohttp
import pytest

from execserver.relay.registry_client import RegistryClient, registry_http_client
from tests.harness.ports import listen_port
from tests.harness.relay import CONNECTED, relay_flags, remote_executor
from tests.harness.relay_wire import (
    RelayHarness,
    WireStream,
    poll,
    raw_key,
    registry_proxy,
    running_executor,
)
from tests.relay.support import (
    EXECUTOR_TOKEN,
    RelayProcess,
    RelayUnderTest,
    running_relay,
    start_relay_process,
    wait_for_metric,
)
from tests.server.test_file_system import uri

ENV = "test1"
REGISTERED = 'exec_server_relay_registry_requests_total{operation="register",status="200"}'


def executors_connected(relay: RelayUnderTest) -> int:
    return relay.server.hub.gauges()["executors_connected"]


def registrations(relay: RelayUnderTest) -> int:
    return relay.server.metrics.value("registry_requests_total", operation="register", status="200")


async def start_lines(stream: WireStream, workdir: Path, go: Path) -> None:
    """A process printing `line 0..9`, then, once `go` exists, `line 10..19`."""
    script = (
        "import os, sys, time\n"
        "for n in range(20):\n"
        "    if n == 10:\n"
        f"        while not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
        "    sys.stdout.write(f'line {n}\\n'); sys.stdout.flush()\n"
    )
    await stream.call(
        "process/start",
        {
            "processId": "lines",
            "argv": [sys.executable, "-c", script],
            "cwd": uri(workdir),
            "env": {"PATH": "/usr/bin:/bin"},
            "tty": False,
        },
    )


async def read_all(stream: WireStream, process_id: str) -> bytes:
    """Every output byte of a process, by `process/read` from seq 0 until it closed."""
    output, after, closed = b"", 0, False
    while not closed:
        read = await stream.call(
            "process/read", {"processId": process_id, "afterSeq": after, "waitMs": 1000}
        )
        for chunk in read["chunks"]:
            after = chunk["seq"]
            output += base64.b64decode(chunk["chunk"])
        closed = read["closed"]
    return output


# -- executor restart -----------------------------------------------------------------------------


async def test_executor_restart_is_a_new_registration(tmp_path: Path) -> None:
    """Killing our executor and starting another with the same environment id: it registers
    anew, the old registration's bundle is refused by the rendezvous, a fresh bundle reaches
    the new executor (under its new key), and the old session is gone with the old process."""
    async with running_relay() as relay:
        harness = RelayHarness(relay.session, relay.url, ENV)
        async with remote_executor(
            "ours", relay.url, tmp_path / "first", environment_id=ENV
        ) as first:
            await poll(lambda: executors_connected(relay) == 1, 30, "the first executor")
            stream = await harness.connect()
            session_id = (await stream.initialize())["result"]["sessionId"]
            old = await harness.bundle()
            first.process.kill()
            assert await first.wait_exit(10) != 0
        await poll(lambda: executors_connected(relay) == 0, what="the relay to notice")
        await stream.wait_reset()
        await stream.close()
        async with remote_executor(
            "ours", relay.url, tmp_path / "second", environment_id=ENV
        ) as second:
            await poll(lambda: executors_connected(relay) == 1, 30, "the second executor")
            assert registrations(relay) == 2
            assert await relay.upgrade_status(old.url) == (
                410,
                "unexpected_executor_registration_id",
            )
            new = await harness.bundle()
            assert new.executor_registration_id != old.executor_registration_id
            assert new.executor_public_key != old.executor_public_key
            # Sealed to the old executor's key, msg1 does not open for the new one.
            refused = await harness.attempt(
                bundle=new, executor_key=raw_key(old.executor_public_key)
            )
            assert refused.outcome == "reset"
            await refused.close()
            fresh = await harness.connect()
            response = await fresh.initialize(resume=session_id)
            assert response["error"]["message"] == f"unknown session id {session_id}"
            await fresh.close()
            again = await harness.connect()
            assert "result" in await again.initialize()
            await again.close()
            assert second.process.returncode is None, second.stderr()


# -- relay restart --------------------------------------------------------------------------------


@pytest.mark.parametrize("keep_state", [True, False])
async def test_relay_restart_keeps_the_executor(tmp_path: Path, keep_state: bool) -> None:
    """The relay (a subprocess) restarts on the same port. With `--state-dir` our executor
    dials the same ticket URL and is accepted without registering again; without it the
    upgrade is refused (4xx) and it registers again. Either way a harness connects again and,
    the executor having kept running, resumes its session and reads all of a process's output."""
    state = ["--state-dir", str(tmp_path / "state")] if keep_state else []
    flags = ["--listen", "127.0.0.1:0", *relay_flags(tmp_path), *state]
    relay = await start_relay_process(flags, tmp_path, "relay-1")
    second: RelayProcess | None = None
    try:
        async with (
            aiohttp.ClientSession() as session,
            running_executor(relay.url, ENV) as executor,
        ):
            harness = RelayHarness(session, relay.url, ENV)
            stream = await harness.connect()
            session_id = (await stream.initialize())["result"]["sessionId"]
            go = tmp_path / "go"
            await start_lines(stream, tmp_path, go)
            assert await relay.stop() == 0, relay.stderr()
            await poll(lambda: not executor.relay.connected.is_set(), what="the socket to go")
            await stream.close()
            flags[1] = f"127.0.0.1:{relay.port}"
            second = await start_relay_process(flags, tmp_path, "relay-2")
            assert second.url == relay.url
            await executor.wait_connected(30)
            page = await wait_for_metric(second.url, EXECUTOR_TOKEN, CONNECTED)
            if keep_state:
                assert REGISTERED not in page, page
                assert executor.counter("registrations") == 1
            else:
                assert f"{REGISTERED} 1" in page.splitlines(), page
                assert executor.counter("registrations") == 2
            assert executor.counter("rendezvous_connections") == 2
            go.touch()
            resumed, response = await harness.resume(session_id)
            assert response["result"]["sessionId"] == session_id
            output = await read_all(resumed, "lines")
            assert output.decode().splitlines() == [f"line {n}" for n in range(20)]
            await resumed.close()
    finally:
        if second is not None:
            assert await second.stop() == 0, second.stderr()
        await relay.stop()


async def test_executors_share_one_registry_pool() -> None:
    """Many executors of one process may share one HTTP pool (`RegistryClient(http=…)`, as
    bench/fleet_scale.py runs thousands): each registers its own environment through it, and
    one executor ending leaves the pool open for the others (the owner closes it)."""
    http = registry_http_client()
    try:
        async with running_relay() as relay:

            def client(environment_id: str) -> RegistryClient:
                return RegistryClient(relay.url, environment_id, EXECUTOR_TOKEN, http=http)

            async with running_executor(relay.url, "shared1", registry=client("shared1")):
                async with running_executor(relay.url, "shared2", registry=client("shared2")):
                    await poll(lambda: executors_connected(relay) == 2, what="both attached")
                assert not http.is_closed
                async with running_executor(relay.url, "shared3", registry=client("shared3")):
                    await poll(lambda: executors_connected(relay) == 2, what="a third attached")
            assert registrations(relay) == 3
            assert not http.is_closed
    finally:
        await http.aclose()


# -- registry failures ----------------------------------------------------------------------------


async def test_executor_retries_an_unreachable_registry() -> None:
    """Nothing listens at the registry URL: the executor keeps retrying (codex would exit);
    once a registry answers there, it registers and connects."""
    port = listen_port()
    async with (
        running_relay() as relay,
        running_executor(f"http://127.0.0.1:{port}", ENV, connect=False) as executor,
    ):
        await poll(lambda: executor.counter("registration_retries") >= 2, what="two retries")
        assert not executor.task.done()
        async with registry_proxy(relay.url, port):
            await executor.wait_connected()
            assert executor.counter("registrations") == 1
            await poll(lambda: executors_connected(relay) == 1, what="the relay to attach it")


async def test_executor_retries_a_failing_registry(tmp_path: Path) -> None:
    """Our executor (the CLI) keeps asking a registry that answers 503, then registers once
    it answers 200, and serves a harness."""
    async with running_relay() as relay, registry_proxy(relay.url) as proxy:
        proxy.answers["register"] = 503
        async with remote_executor(
            "ours", proxy.url, tmp_path / "home", environment_id=ENV
        ) as executor:
            await poll(lambda: proxy.requests.get("register", 0) >= 2, 30, "a retried register")
            assert executor.process.returncode is None
            del proxy.answers["register"]
            await poll(lambda: executors_connected(relay) == 1, 30, "the executor to attach")
            stream = await RelayHarness(relay.session, relay.url, ENV).connect()
            assert "result" in await stream.initialize()
            await stream.close()
            assert executor.process.returncode is None, executor.stderr()


async def test_executor_exits_on_401(tmp_path: Path) -> None:
    """A registry that refuses the executor's credentials ends it: exit status 1, one line."""
    async with (
        running_relay() as relay,
        remote_executor(
            "ours", relay.url, tmp_path / "home", environment_id=ENV, token="not-a-token"
        ) as executor,
    ):
        assert await executor.wait_exit(30) == 1
        stderr = executor.stderr()
        errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1, stderr
        assert "401" in errors[0] and "not-a-token" not in stderr, stderr
        assert "Traceback" not in stderr, stderr
        assert registrations(relay) == 0
