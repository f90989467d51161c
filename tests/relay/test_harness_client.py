"""Our client and CLI as the harness: through OUR relay to OUR executor and to the real codex
executor (`--remote` mode), with multi-record traffic and concurrent streams (issue 16, 2 and 4).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from execserver.client.environments import RelayEnvironment, load_environments
from execserver.errors import AuthenticationFailed
from execserver.relay.harness import RelayTarget, parse_relay_url, relay_target_from_env
from execserver.remote import connect_environment, connect_relay_environment
from tests.conftest import TIME
from tests.harness.relay import (
    CONNECTED,
    ENVIRONMENT_ID,
    EXECUTOR_TOKEN,
    HARNESS_TOKEN,
    relay_process,
    remote_executor,
    wait_for_metric,
)

MiB = 1024 * 1024


@dataclass
class RelayedExecutor:
    url: str
    """The relay's base URL."""
    kind: str

    @property
    def target(self) -> RelayTarget:
        return RelayTarget(self.url, ENVIRONMENT_ID, HARNESS_TOKEN)

    @property
    def relay_url(self) -> str:
        return f"relay+{self.url}/{ENVIRONMENT_ID}"


@pytest.fixture(params=["ours", "reference"])
async def relayed(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RelayedExecutor]:
    kind: str = request.param
    async with (
        relay_process(tmp_path) as relay,
        remote_executor(kind, relay.url, tmp_path / "executor-home"),
    ):
        await wait_for_metric(relay.url, EXECUTOR_TOKEN, CONNECTED)
        yield RelayedExecutor(relay.url, kind)


async def test_relay_client_moves_large_output_and_files(
    relayed: RelayedExecutor, tmp_path: Path
) -> None:
    """2 MiB of process output and a 1.5 MiB file each way arrive byte-exact (many records)."""
    async with await connect_relay_environment(relayed.target) as env:
        script = (
            "import sys, hashlib; sys.stdout.buffer.write(hashlib.sha256(b'x').digest() * 70000)"
        )
        result = await env.process.run([sys.executable, "-c", script])
        assert result.exit_code == 0
        assert result.stdout == hashlib.sha256(b"x").digest() * 70000  # 2.24 MB
        data = os.urandom(3 * MiB // 2)
        await env.fs.write_file(tmp_path / "up.bin", data)
        assert (tmp_path / "up.bin").read_bytes() == data
        assert await env.fs.read_file(tmp_path / "up.bin") == data


@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
async def test_relay_serves_on_each_event_loop(tmp_path: Path, event_loop: str) -> None:
    """`execserver relay --event-loop uvloop|asyncio`: the relay says which loop it runs on,
    and multi-record traffic through it (output, a file both ways) arrives byte-exact."""
    async with (
        relay_process(tmp_path, ["--event-loop", event_loop]) as relay,
        remote_executor("ours", relay.url, tmp_path / "executor-home"),
    ):
        await wait_for_metric(relay.url, EXECUTOR_TOKEN, CONNECTED)
        assert f"event_loop={event_loop}" in relay.stderr(), relay.stderr()
        target = RelayTarget(relay.url, ENVIRONMENT_ID, HARNESS_TOKEN)
        async with await connect_relay_environment(target) as env:
            result = await env.process.run(["head", "-c", str(MiB), "/dev/zero"])
            assert result.exit_code == 0
            assert result.stdout == bytes(MiB)
            data = os.urandom(MiB)
            await env.fs.write_file(tmp_path / "up.bin", data)
            assert await env.fs.read_file(tmp_path / "up.bin") == data


async def test_relay_three_concurrent_streams_on_one_executor(relayed: RelayedExecutor) -> None:
    """Three harness connections at once, each its own stream and session, interleaved."""
    envs = [await connect_relay_environment(relayed.target) for _ in range(3)]
    try:
        runs = [
            env.process.run(["sh", "-c", f"for i in 1 2 3 4 5; do echo s{n}-$i; done"])
            for n, env in enumerate(envs)
        ]
        results = await asyncio.gather(*runs)
        for n, result in enumerate(results):
            assert result.stdout == "".join(f"s{n}-{i}\n" for i in range(1, 6)).encode()
    finally:
        for env in envs:
            await env.aclose()


async def test_relay_wrong_harness_token_is_refused(relayed: RelayedExecutor) -> None:
    """A wrong harness token is an authentication failure with the registry's reason."""
    with pytest.raises(AuthenticationFailed, match="401"):
        await connect_relay_environment(RelayTarget(relayed.url, ENVIRONMENT_ID, "wrong"))


def cli(*args: str, token: str | None = HARNESS_TOKEN) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "EXECSERVER_TOKEN"}
    if token is not None:
        env["EXECSERVER_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "execserver", *args],
        capture_output=True,
        env=env,
        timeout=60 * TIME,
        check=False,
    )


async def test_relay_cli_run_info_cp(relayed: RelayedExecutor, tmp_path: Path) -> None:
    """`execserver run/info/cp` take a relay+http:// TARGET; a wrong token exits non-zero."""
    target = relayed.relay_url
    run = await asyncio.to_thread(cli, "run", target, "--", "sh", "-c", "echo relayed; exit 7")
    assert (run.returncode, run.stdout) == (7, b"relayed\n"), run.stderr
    info = await asyncio.to_thread(cli, "info", target)
    assert info.returncode == 0 and b'"platformOs"' in info.stdout, info.stderr
    (tmp_path / "src.bin").write_bytes(os.urandom(MiB + 17))
    copy = await asyncio.to_thread(
        cli, "cp", str(tmp_path / "src.bin"), f"{target}:{tmp_path}/dst.bin"
    )
    assert copy.returncode == 0, copy.stderr
    assert (tmp_path / "dst.bin").read_bytes() == (tmp_path / "src.bin").read_bytes()
    refused = await asyncio.to_thread(cli, "run", target, "--", "true", token="wrong")
    assert refused.returncode != 0
    assert b"401" in refused.stderr and b"Traceback" not in refused.stderr
    missing = await asyncio.to_thread(cli, "run", target, "--", "true", token=None)
    assert missing.returncode != 0
    assert b"harness token" in missing.stderr and b"Traceback" not in missing.stderr


async def test_relay_environments_toml_and_noise_variables(
    relayed: RelayedExecutor, tmp_path: Path
) -> None:
    """An environments.toml relay entry and the CODEX_EXEC_SERVER_NOISE_* variables both
    reach the executor; the variables win over the file, as in codex."""
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "environments.toml").write_text(
        'default = "nat"\n[[environments]]\nid = "nat"\n'
        f'url = "{relayed.relay_url}"\nauth_bearer_token = "{HARNESS_TOKEN}"\n'
    )
    config = load_environments(home, environ={})
    (spec,) = config.environments
    assert isinstance(spec, RelayEnvironment) and spec.target == relayed.target
    noise = {
        "CODEX_EXEC_SERVER_NOISE_REGISTRY_URL": relayed.url,
        "CODEX_EXEC_SERVER_NOISE_ENVIRONMENT_ID": ENVIRONMENT_ID,
        "CODEX_EXEC_SERVER_NOISE_AUTH_TOKEN": HARNESS_TOKEN,
    }
    from_env = load_environments(home, environ=noise)
    assert from_env.ids == ("remote",) and from_env.default == "remote"
    async with await connect_environment(relayed.relay_url, bearer_token=HARNESS_TOKEN) as env:
        assert (await env.process.run(["echo", "ok"])).stdout == b"ok\n"


def test_relay_url_and_variables_parse() -> None:
    """relay+ URLs and the Noise variables parse; partial or malformed ones are refused."""
    assert parse_relay_url("relay+https://relay.example/base/env-1", "t") == RelayTarget(
        "https://relay.example/base", "env-1", "t"
    )
    for bad in ("relay+http://host:1", "relay+http://host:1/", "ws://x/y"):
        with pytest.raises(ValueError):
            parse_relay_url(bad, "t")
    with pytest.raises(ValueError, match="harness token"):
        parse_relay_url("relay+http://host:1/env", None)
    assert relay_target_from_env({}) is None
    with pytest.raises(ValueError, match="CODEX_EXEC_SERVER_NOISE_AUTH_TOKEN"):
        relay_target_from_env(
            {
                "CODEX_EXEC_SERVER_NOISE_REGISTRY_URL": "http://h",
                "CODEX_EXEC_SERVER_NOISE_ENVIRONMENT_ID": "e",
            }
        )
