"""End-to-end: the real codex app-server runs a selected plugin's MCP server inside the executor.

What upstream's selected-capability-root scenarios check (`app-server/tests/suite/v2/
executor_mcp.rs`), on our executor and on the reference one. `thread/start` carries
`selectedCapabilityRoots: [{id, location: {type: "environment", environmentId: "remote", path}}]`
naming a plugin directory that exists only on the executor (`/srv/execserver-e2e/plugin`, see
conftest.py). The app-server reads the plugin's manifest and `.mcp.json` there with `fs/*`,
starts the declared stdio server there with `process/start {pipeStdin: true}`, speaks MCP to it
with `process/write` (a `writeId` per write) and `process/output`, and offers its tools to the
model as the namespace `mcp__<server>`.

The MCP server is tests/harness/mcp_stdio_server.py, copied into the plugin; it logs every
request it reads to `<plugin>/events.jsonl` (which the test reads), and its `where` tool answers
with `$E2E_MARK` (only the executor has it: `env_vars` in `.mcp.json` passes it through the
app-server's `envPolicy`), its pid and its cwd. It starts a helper child marked with the mark, so
a test sees whether the server's whole process tree is gone after the thread ends or the
app-server dies. One scenario runs through our relay. docs/e2e.md lists them all.

App-server settings: the model is `mock-model` (not in the bundled catalog, so MCP tools are
offered directly instead of behind `tool_search`), and `mcp_optional_startup_grace_ms = 0`:
a plugin's MCP servers are optional, and by default a turn waits only one second for them
before sampling without their tools, which a loaded machine can miss.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import (
    ENVIRONMENT_ID,
    EXECUTOR_CWD,
    EXECUTOR_KINDS,
    Agent,
    app_config,
    app_version,
    direct_agent,
)
from tests.e2e.test_discovery import requests_seen
from tests.e2e.test_relay_turns import agent_through
from tests.harness.app_server import AppServer
from tests.harness.mock_model import Item, MockModel, ModelRequest, Reply
from tests.harness.procfs import is_alive, pids_with_marker
from tests.harness.relay import CONNECTED, EXECUTOR_TOKEN, relay_process, wait_for_metric

MODEL = "mock-model"
SERVER = "probe"
NAMESPACE = f"mcp__{SERVER}"
PLUGIN_ID = "executor-demo@1"
PLUGIN_DIR = f"{EXECUTOR_CWD}/plugin"
SERVER_SCRIPT = Path(__file__).resolve().parents[1] / "harness" / "mcp_stdio_server.py"
SKILL = "---\nname: plugin-skill\ndescription: {description}\n---\n\nUse the probe.\n"


def mcp_call(call_id: str, tool: str) -> Item:
    """The model calling tool `tool` of the probe server (a namespaced function call)."""
    return {
        "type": "function_call",
        "call_id": call_id,
        "namespace": NAMESPACE,
        "name": tool,
        "arguments": "{}",
    }


def offered_tools(request: ModelRequest) -> list[str]:
    """The probe server's tools offered in a model request."""
    return [
        tool["name"]
        for namespace in request.body.get("tools", [])
        if namespace.get("type") == "namespace" and namespace.get("name") == NAMESPACE
        for tool in namespace.get("tools", [])
    ]


def write_plugin(plugin: Path, description: str) -> None:
    """A plugin with one stdio MCP server and one skill, at `plugin` (PLUGIN_DIR inside)."""
    (plugin / ".codex-plugin").mkdir(parents=True)
    (plugin / ".codex-plugin" / "plugin.json").write_text(json.dumps({"name": "executor-demo"}))
    shutil.copy(SERVER_SCRIPT, plugin / "server.py")
    server = {
        "command": sys.executable,
        "args": [f"{PLUGIN_DIR}/server.py", PLUGIN_DIR],
        "env_vars": ["E2E_MARK"],
        "startup_timeout_sec": 30,
    }
    (plugin / ".mcp.json").write_text(json.dumps({"mcpServers": {SERVER: server}}))
    skill = plugin / "skills" / "plugin-skill" / "SKILL.md"
    skill.parent.mkdir(parents=True)
    skill.write_text(SKILL.format(description=description))


def mcp_config(model: MockModel) -> str:
    return app_config(model, MODEL, "mcp_optional_startup_grace_ms = 0\n")


@dataclass
class McpAgent(Agent):
    @classmethod
    def of(cls, agent: Agent) -> McpAgent:
        """`agent` with the plugin written at PLUGIN_DIR."""
        write_plugin(agent.work / "plugin", f"Probes the executor {agent.mark}.")
        return cls(**vars(agent))

    @property
    def plugin(self) -> Path:
        return self.work / "plugin"

    def events(self) -> list[dict[str, Any]]:
        path = self.plugin / "events.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def requests_read(self, method: str | None = None) -> list[dict[str, Any]]:
        """The messages the MCP server read (with `method`: those of that method)."""
        return [
            e for e in self.events() if e["event"] == "request" and method in (None, e["method"])
        ]

    def servers(self) -> list[int]:
        """Pids of the MCP server processes started so far."""
        return [e["pid"] for e in self.events() if e["event"] == "start"]

    def leftovers(self) -> list[int]:
        """Live processes of any MCP server this test started: servers and their helpers."""
        helpers = pids_with_marker(f"mcp-helper-{self.mark}")
        return [pid for pid in self.servers() if is_alive(pid)] + helpers

    async def wait_for_no_leftovers(self, what: str) -> None:
        await self.wait_until(lambda: not self.leftovers(), what, self.leftovers)

    async def start_thread(self, *, select_plugin: bool = True) -> str:
        params: dict[str, Any] = {
            "environments": [{"environmentId": ENVIRONMENT_ID, "cwd": EXECUTOR_CWD}],
            "approvalPolicy": "never",
            "sandbox": "danger-full-access",
        }
        if select_plugin:
            location = {"type": "environment", "environmentId": ENVIRONMENT_ID, "path": PLUGIN_DIR}
            params["selectedCapabilityRoots"] = [{"id": PLUGIN_ID, "location": location}]
        result = await self.app.call("thread/start", params)
        thread_id: str = result["thread"]["id"]
        self.thread_id = thread_id
        return thread_id


@contextlib.asynccontextmanager
async def mcp_agent(
    executor_kind: str, tmp_path: Path, extra: Sequence[str] = ()
) -> AsyncIterator[McpAgent]:
    """A directly reached agent (conftest.py) whose executor has the plugin at PLUGIN_DIR; ours
    runs with `--metrics` and `extra`."""
    options = ["--metrics", *extra] if executor_kind.startswith("ours") else []
    async with direct_agent(executor_kind, tmp_path, config=mcp_config, extra=options) as agent:
        yield McpAgent.of(agent)


@pytest.fixture(params=EXECUTOR_KINDS)
async def agent(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[McpAgent]:
    async with mcp_agent(request.param, tmp_path) as agent:
        yield agent


def server_pid(output: str) -> int:
    return int(output.split(" pid=", 1)[1].split(maxsplit=1)[0])


async def test_selected_plugin_mcp_tool_runs_inside_the_executor(agent: McpAgent) -> None:
    """The plugin's skill reaches the model, its MCP tool is offered, and calling it runs in
    the executor; a thread that did not select the plugin has neither."""
    await agent.start_thread()
    turn, requests = await agent.turn([mcp_call("m1", "where")])

    assert sorted(offered_tools(requests[0])) == ["wait_for_release", "where"]
    assert f"Probes the executor {agent.mark}." in json.dumps(requests[0].body)
    output = requests[1].call_output("m1")
    # $E2E_MARK and a cwd that exist only on the executor.
    assert f"mark={agent.mark} " in output, output
    assert f"cwd={PLUGIN_DIR}" in output
    (item,) = turn.completed_items("mcpToolCall")
    assert (item["server"], item["tool"], item["status"]) == (SERVER, "where", "completed")
    assert item.get("environmentId", ENVIRONMENT_ID) == ENVIRONMENT_ID  # 0.169.0: no such member
    assert len(agent.requests_read("tools/call")) == 1

    await agent.start_thread(select_plugin=False)
    _turn, unselected = await agent.turn()
    assert offered_tools(unselected[0]) == []
    assert agent.mark not in json.dumps(unselected[0].body)


async def test_mcp_process_is_reused_across_turns_and_rebuilt_after_a_restart(
    agent: McpAgent,
) -> None:
    """Two turns use one MCP process; after the app-server restarts and resumes the thread, a
    new process serves it (and the old one is gone with its child)."""
    thread_id = await agent.start_thread()
    _turn, first = await agent.turn([mcp_call("m1", "where")])
    _turn, second = await agent.turn([mcp_call("m2", "where")])
    pid = server_pid(first[1].call_output("m1"))
    assert server_pid(second[1].call_output("m2")) == pid
    assert agent.servers() == [pid]
    assert len(agent.requests_read("initialize")) == 1

    await agent.app.close()
    await agent.wait_for_no_leftovers("the old MCP server and its helper are gone")
    async with AppServer.start(
        agent.home, agent.work.parent, version=app_version(agent.kind)
    ) as app:
        agent.app = app
        await agent.add_environment()
        await app.call("thread/resume", {"threadId": thread_id})
        _turn, resumed = await agent.turn([mcp_call("m3", "where")])
        assert sorted(offered_tools(resumed[0])) == ["wait_for_release", "where"]
        output = resumed[1].call_output("m3")
        assert f"mark={agent.mark} " in output
        assert agent.servers() == [pid, server_pid(output)]
        assert len(agent.requests_read("initialize")) == 2


async def test_mcp_answer_written_while_disconnected_reaches_the_model(agent: McpAgent) -> None:
    """The connection is cut while a tool call is open; the MCP server answers while the
    app-server cannot reconnect; once it can, it resumes the session and the answer (retained
    output) arrives. Same process, one call."""
    await agent.start_thread()
    assert agent.proxy is not None
    mark = len(agent.app.notifications)
    running = asyncio.create_task(agent.turn([mcp_call("m1", "wait_for_release")]))
    try:
        await agent.wait_until(
            lambda: bool(agent.requests_read("tools/call")), "the MCP server has the call"
        )
        connections = agent.proxy.connections
        agent.proxy.refuse_for(3600)
        assert agent.proxy.cut()
        (agent.plugin / "release").write_text("")
        await agent.wait_until(
            lambda: any(e["event"] == "answered" for e in agent.events()), "the answer is written"
        )
        agent.proxy.refuse_for(0)
        _turn, requests = await running
    finally:
        if not running.done():
            running.cancel()
    assert agent.proxy.connections > connections
    output = requests[1].call_output("m1")
    assert f"released mark={agent.mark} " in output, output
    assert len({e["pid"] for e in agent.events()}) == 1
    assert len(agent.requests_read("tools/call")) == 1
    assert not [
        n
        for n in agent.app.notifications[mark:]
        if n["method"] == "mcpServer/startupStatus/updated" and n["params"]["status"] == "failed"
    ]


async def test_mcp_write_whose_ack_is_lost_is_applied_once(agent: McpAgent) -> None:
    """The connection is cut just after the executor accepted the write carrying `tools/call`
    and before the app-server heard so. The app-server resumes the session and sends the write
    again with the same writeId; the executor must not write it twice."""
    await agent.start_thread()
    assert agent.proxy is not None
    proxy = agent.proxy

    def call_and_arm(_request: ModelRequest) -> list[Item]:
        # The next `accepted` the executor sends answers the write of this tool call.
        proxy.cut_before_reply(b'"status":"accepted"')
        return [mcp_call("m1", "where")]

    replies: list[Reply] = [call_and_arm]
    _turn, requests = await agent.turn(*replies)
    assert proxy.cuts == 1
    assert proxy.connections >= 2
    assert f"mark={agent.mark} " in requests[1].call_output("m1")
    assert len(agent.requests_read("tools/call")) == 1
    if agent.kind.startswith("ours"):
        # Every message the MCP server read came in one write, and one write came twice.
        writes = requests_seen(await agent.metrics(), "process/write")
        assert writes == len(agent.requests_read()) + 1


async def test_mcp_server_tree_is_gone_when_the_thread_is_archived(agent: McpAgent) -> None:
    """Archiving the thread shuts its MCP servers down: the app-server terminates the process
    on the executor, which takes the server's whole process tree (its helper child) with it."""
    await agent.start_thread()
    await agent.turn([mcp_call("m1", "where")])
    (start,) = [e for e in agent.events() if e["event"] == "start"]
    assert is_alive(start["pid"]) and is_alive(start["helper"])
    await agent.app.call("thread/archive", {"threadId": agent.thread_id})
    await agent.wait_for_no_leftovers("the MCP server and its helper are gone")
    # Terminated, not told to stop: its stdin never ended.
    assert not [e for e in agent.events() if e["event"] == "eof"]
    if agent.kind.startswith("ours"):
        assert requests_seen(await agent.metrics(), "process/terminate") >= 1


SESSION_TTL_S = 1.0


async def test_mcp_server_tree_is_gone_once_a_dead_app_servers_session_expires(
    tmp_path: Path,
) -> None:
    """The app-server is killed (SIGKILL: it cannot stop anything); our executor detaches the
    session, keeps the MCP server for a resume, and kills its tree when the session expires
    (`--session-ttl`). The executor itself carries on."""
    async with mcp_agent("ours", tmp_path, extra=["--session-ttl", str(SESSION_TTL_S)]) as agent:
        await agent.start_thread()
        await agent.turn([mcp_call("m1", "where")])
        assert len(agent.leftovers()) == 2
        os.killpg(agent.app.process.pid, signal.SIGKILL)
        await agent.wait_for_no_leftovers("the expired session's MCP server tree is gone")
        assert agent.executor is not None
        assert agent.executor.process.returncode is None
        assert not [e for e in agent.events() if e["event"] == "eof"]


@pytest.mark.reference
@pytest.mark.parametrize("executor_kind", ["ours", "reference"])
async def test_mcp_tool_runs_on_an_executor_behind_the_relay(
    executor_kind: str, tmp_path: Path
) -> None:
    """The same MCP path through our relay: the executor only dials out, and the plugin's
    server still runs there and answers the model."""
    async with relay_process(tmp_path) as relay:

        async def attached() -> object:
            return await wait_for_metric(relay.url, EXECUTOR_TOKEN, CONNECTED)

        async with agent_through(
            executor_kind, tmp_path, relay.url, attached, mcp_config
        ) as relayed:
            agent = McpAgent.of(relayed)
            await agent.start_thread()
            turn, requests = await agent.turn([mcp_call("m1", "where")])
            assert sorted(offered_tools(requests[0])) == ["wait_for_release", "where"]
            output = requests[1].call_output("m1")
            assert f"mark={agent.mark} pid={agent.servers()[0]} cwd={PLUGIN_DIR}" in output
            (item,) = turn.completed_items("mcpToolCall")
            assert item["status"] == "completed"
            await agent.app.call("thread/archive", {"threadId": agent.thread_id})
            await agent.wait_for_no_leftovers("the MCP server and its helper are gone")
