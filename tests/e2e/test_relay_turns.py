"""Whole Codex agent turns through a relay: the real `codex app-server` as the harness, OUR
relay (registry + rendezvous), and an executor in `--remote` mode — ours, or the real codex
executor — that only dials out. Proven as in the direct scenarios (conftest): the command sees
a directory and an environment variable that only the executor has."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import EXECUTOR_CWD, Agent, app_config, private_cwd, scenario_setup
from tests.harness.app_server import AppServer
from tests.harness.fleet import Fleet, relay_fleet
from tests.harness.mock_model import MockModel, exec_command
from tests.harness.relay import (
    CONNECTED,
    EXECUTOR_TOKEN,
    noise_env,
    relay_process,
    remote_executor,
    wait_for_metric,
)

pytestmark = pytest.mark.reference

RELAY_ENVIRONMENT = "remote"
"""The one environment a codex front end configured by the Noise variables has."""


@contextlib.asynccontextmanager
async def agent_through(
    executor_kind: str,
    tmp_path: Path,
    registry_url: str,
    attached: Callable[[], Awaitable[object]],
    config: Callable[[MockModel], str] = app_config,
) -> AsyncIterator[Agent]:
    """An app-server whose `remote` environment is reached through the registry at
    `registry_url` (one relay, or a fleet's balancer), and an executor registered there;
    `attached()` returns once the relay holds the executor's socket; `config(model)` is the
    app-server's config.toml."""
    async with scenario_setup(executor_kind, tmp_path, "e2e-relay-") as setup:
        (setup.home / "app").mkdir()
        (setup.home / "app" / "config.toml").write_text(config(setup.model))
        async with remote_executor(
            setup.server_kind,
            registry_url,
            setup.home / "executor",
            env={**os.environ, "E2E_MARK": setup.mark},
            wrap=private_cwd(setup.bwrap, setup.work),
        ) as executor:
            await attached()
            async with AppServer.start(
                setup.home / "app", tmp_path, noise_env(registry_url), version=setup.version
            ) as app:
                model, work, mark = setup.model, setup.work, setup.mark
                yield Agent(executor_kind, app, model, None, None, work, mark, setup.home / "app")
            assert executor.process.returncode is None, executor.stderr()


@pytest.fixture
async def relay_agent(executor_kind: str, tmp_path: Path) -> AsyncIterator[Agent]:
    async with relay_process(tmp_path) as relay:

        async def attached() -> object:
            return await wait_for_metric(relay.url, EXECUTOR_TOKEN, CONNECTED)

        async with agent_through(executor_kind, tmp_path, relay.url, attached) as agent:
            yield agent


async def test_relay_environment_is_ready(relay_agent: Agent) -> None:
    """The Noise environment reaches `ready` through our relay."""
    status = await relay_agent.app.call("environment/status", {"environmentId": RELAY_ENVIRONMENT})
    assert status == {"status": "ready"}


async def test_relay_command_runs_on_the_executor(relay_agent: Agent) -> None:
    """A command of the agent runs on the executor behind the relay: output, exit code, cwd."""
    turn, requests = await relay_agent.turn(
        [exec_command("c1", 'echo "out $E2E_MARK $PWD"; head -c 300000 /dev/zero | wc -c; exit 3')]
    )
    output = requests[1].call_output("c1")
    assert f"out {relay_agent.mark} {EXECUTOR_CWD}\n" in output
    assert "300000" in output
    assert "Process exited with code 3" in output
    (item,) = turn.completed_items("commandExecution")
    assert item["exitCode"] == 3
    assert item["cwd"] == EXECUTOR_CWD


# --- through a fleet --------------------------------------------------------------------------


@pytest.fixture
async def fleet_agent(executor_kind: str, tmp_path: Path) -> AsyncIterator[tuple[Agent, Fleet]]:
    """An agent whose executor and app-server reach each other through a three-node fleet."""
    async with (
        relay_fleet(tmp_path / "fleet") as fleet,
        agent_through(executor_kind, tmp_path, fleet.url, fleet.holder) as agent,
    ):
        yield agent, fleet


async def test_fleet_turns_survive_the_loss_of_the_executors_node(
    fleet_agent: tuple[Agent, Fleet],
) -> None:
    """A turn through a fleet; SIGKILL of the node holding the executor; the next turn runs
    (the executor reconnects through the balancer with its ticket, the app-server with a
    fresh /connect). The time from the kill to the end of the second turn is printed."""
    agent, fleet = fleet_agent
    await agent.turn([exec_command("c1", 'echo "before $E2E_MARK"')])
    killed_at = time.monotonic()
    await fleet.kill_node(await fleet.holder())
    _, requests = await agent.turn([exec_command("c2", 'echo "after $E2E_MARK"; exit 4')])
    took = time.monotonic() - killed_at
    output = requests[1].call_output("c2")
    assert f"after {agent.mark}\n" in output
    assert "Process exited with code 4" in output
    print(f"\nfleet: {agent.kind} turn ran {took:.2f} s after its executor's node was killed")
