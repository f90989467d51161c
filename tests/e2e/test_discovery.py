"""End-to-end: the real codex app-server uses OUR executor's discovery capabilities.

Set up like the other scenarios (conftest.py: private executor cwd, mock model, cutting
proxy), but only on our server, which runs with `--metrics` so the test can read which
methods the app-server called, and with a `CODEX_HOME` of its own (outside the temp dir).

* `fsWatchMissing`: at thread start the app-server registers the missing project paths
  (`<cwd>/.agents/skills`, `.git` up the tree) with `fs/watchMissing` and then trusts its
  cache: with the flag true it does not look again at the next turn unless the executor
  reports `fs/missingChanged`. A skill created after thread start reaching the model therefore
  shows the notification path worked.
* `capabilityDiscoveryV2`: with the app-server feature `executor_capability_discovery_v2`
  it asks `capabilities/discoverV2` at thread start and offers the skills found in the
  executor's `CODEX_HOME` to the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import TIME
from tests.e2e.conftest import ENVIRONMENT_ID, EXECUTOR_CWD, Agent, app_config, direct_agent
from tests.harness.procfs import loopback_queued_bytes
from tests.harness.servers import CACHE_DIR

SKILL = "---\nname: {name}\ndescription: {description}\n---\n\nSay hello.\n"


def requests_seen(metrics: str, method: str) -> int:
    """`exec_server_requests_total` for `method`, all outcomes."""
    pattern = re.compile(
        r'^exec_server_requests_total\{[^}]*method="' + re.escape(method) + r'"[^}]*\} (\S+)$',
        re.MULTILINE,
    )
    return sum(int(float(value)) for value in pattern.findall(metrics))


def inotify_instances(pid: int) -> int:
    """inotify instances open in `pid` and its descendants (the server runs under bwrap)."""
    count = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{current}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{current}/fd/{fd}") == "anon_inode:inotify":
                        count += 1
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    pending.extend(int(child) for child in children.read().split())
    return count


@dataclass
class DiscoveryAgent(Agent):
    executor_home: Path = Path()
    """The executor's CODEX_HOME."""


@contextlib.asynccontextmanager
async def discovery_agent(tmp_path: Path, extra_config: str = "") -> AsyncIterator[DiscoveryAgent]:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    executor_home = Path(tempfile.mkdtemp(prefix="e2e-executor-home-", dir=CACHE_DIR))
    try:
        async with direct_agent(
            "ours",
            tmp_path,
            config=lambda model: app_config(model) + extra_config,
            executor_env={"CODEX_HOME": str(executor_home)},
            extra=["--metrics"],
        ) as agent:
            yield DiscoveryAgent(**vars(agent), executor_home=executor_home)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(executor_home)


async def test_skill_created_mid_thread_arrives_through_fs_missing_changed(
    tmp_path: Path,
) -> None:
    """The app-server registers its missing paths once; our fs/missingChanged makes it look
    again, so a skill created after thread start is offered at the next turn."""
    async with discovery_agent(tmp_path) as agent:
        assert agent.executor is not None
        server_pid = agent.executor.pid
        agent.thread_id = await agent.app.start_thread(ENVIRONMENT_ID, EXECUTOR_CWD)
        await agent.wait_until(lambda: inotify_instances(server_pid) == 1, "the watch is armed")
        metrics = await agent.metrics()
        assert requests_seen(metrics, "fs/watchMissing") >= 1, metrics
        walks_before = requests_seen(metrics, "fs/walk")

        _turn, first = await agent.turn()
        assert "hello-from-the-executor" not in json.dumps(first[0].body)

        description = f"Greets from the executor skill directory {agent.mark}."
        skill = agent.work / ".agents" / "skills" / "hello-from-the-executor" / "SKILL.md"
        proxy = agent.proxy
        assert proxy is not None
        notified = proxy.replied(b"fs/missingChanged")
        skill.parent.mkdir(parents=True)
        skill.write_text(SKILL.format(name="hello-from-the-executor", description=description))
        # The watch fires (its inotify instance goes) and fs/missingChanged reaches the
        # app-server, which reads it before the next turn starts (it only marks its cache stale:
        # nothing else shows it handled the notification).
        await agent.wait_until(lambda: inotify_instances(server_pid) == 0, "the watch fired")
        async with asyncio.timeout(20 * TIME):
            await notified.wait()
        await agent.wait_until(
            lambda: loopback_queued_bytes(proxy.port) == 0, "the app-server read it"
        )

        _turn, second = await agent.turn()
        assert description in json.dumps(second[0].body)
        metrics = await agent.metrics()
        # The new skill was found by walking the skills directory on our executor.
        assert requests_seen(metrics, "fs/walk") > walks_before, metrics


@pytest.mark.parametrize(
    ("feature", "asked", "offered"),
    [(True, True, True), (False, False, False)],
    ids=["feature-on", "feature-off"],
)
async def test_executor_codex_home_skill_reaches_the_model_through_discover_v2(
    tmp_path: Path, feature: bool, asked: bool, offered: bool
) -> None:
    """With the feature, a skill in the executor's CODEX_HOME reaches the model through
    capabilities/discoverV2; without it the app-server never asks and the skill stays unknown."""
    config = f"\n[features]\nexecutor_capability_discovery_v2 = {str(feature).lower()}\n"
    async with discovery_agent(tmp_path, config) as agent:
        description = f"Lives in the CODEX_HOME of the executor {agent.mark}."
        skill = agent.executor_home / "skills" / "exec-home-skill" / "SKILL.md"
        skill.parent.mkdir(parents=True)
        skill.write_text(SKILL.format(name="exec-home-skill", description=description))

        _turn, requests = await agent.turn()
        metrics = await agent.metrics()
        assert (requests_seen(metrics, "capabilities/discoverV2") >= 1) is asked, metrics
        assert (description in json.dumps(requests[0].body)) is offered
