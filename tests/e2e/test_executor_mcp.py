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
app-server's `envPolicy`), its pid and its cwd.

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
import secrets
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TIME, require_bwrap, require_reference
from tests.e2e.conftest import ENVIRONMENT_ID, EXECUTOR_CWD, Agent, private_cwd
from tests.e2e.test_discovery import requests_seen
from tests.harness.app_server import AppServer
from tests.harness.faults import CuttingProxy
from tests.harness.mock_model import Item, MockModel, ModelRequest, Reply
from tests.harness.servers import CACHE_DIR, REFERENCE_VERSION, running_server

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


@dataclass
class McpAgent(Agent):
    home: Path = Path()
    """The app-server's CODEX_HOME (kept across an app-server restart)."""
    tmp: Path = Path()

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

    async def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        """Poll the MCP server's log (written by another process) with a deadline."""
        try:
            async with asyncio.timeout(30 * TIME):
                while not condition():  # noqa: ASYNC110 - state of another process
                    await asyncio.sleep(0.02)
        except TimeoutError:
            raise AssertionError(f"timed out waiting until {what}: {self.events()}") from None

    async def add_environment(self) -> None:
        assert self.proxy is not None
        await self.app.call(
            "environment/add",
            {"environmentId": ENVIRONMENT_ID, "execServerUrl": f"ws://127.0.0.1:{self.proxy.port}"},
        )

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
        return thread_id

    async def metrics(self) -> str:
        assert self.executor is not None
        async with httpx.AsyncClient() as client:
            response = await client.get(self.executor.http_base + "/metrics")
        response.raise_for_status()
        return response.text


def app_config(model: MockModel) -> str:
    return (
        f'model = "{MODEL}"\n'
        'approval_policy = "never"\n'
        'sandbox_mode = "danger-full-access"\n'
        "mcp_optional_startup_grace_ms = 0\n" + model.provider_config()
    )


@contextlib.asynccontextmanager
async def mcp_agent(kind: str, tmp_path: Path) -> AsyncIterator[McpAgent]:
    require_reference(REFERENCE_VERSION)
    bwrap = require_bwrap()
    work = tmp_path / "work"
    work.mkdir()
    mark = secrets.token_hex(8)
    write_plugin(work / "plugin", f"Probes the executor {mark}.")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="e2e-home-", dir=CACHE_DIR))
    model = MockModel()
    await model.start()
    try:
        (home / "config.toml").write_text(app_config(model))
        env = {**os.environ, "E2E_MARK": mark}
        extra = ["--metrics"] if kind == "ours" else []
        async with (
            running_server(
                kind, tmp_path, env=env, extra=extra, wrap=private_cwd(bwrap, work)
            ) as ex,
            CuttingProxy(ex.port) as proxy,
            AppServer.start(home, tmp_path) as app,
        ):
            agent = McpAgent(kind, app, model, proxy, ex, work, mark, home=home, tmp=tmp_path)
            await agent.add_environment()
            yield agent
    finally:
        await model.close()
        with contextlib.suppress(OSError):
            shutil.rmtree(home)


@pytest.fixture(params=["ours", "reference"])
async def agent(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[McpAgent]:
    async with mcp_agent(request.param, tmp_path) as agent:
        yield agent


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: the executor reaps it.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    return False


def server_pid(output: str) -> int:
    return int(output.split(" pid=", 1)[1].split(maxsplit=1)[0])


async def test_selected_plugin_mcp_tool_runs_inside_the_executor(agent: McpAgent) -> None:
    """The plugin's skill reaches the model, its MCP tool is offered, and calling it runs in
    the executor; a thread that did not select the plugin has neither."""
    agent.thread_id = await agent.start_thread()
    turn, requests = await agent.turn([mcp_call("m1", "where")])

    assert sorted(offered_tools(requests[0])) == ["wait_for_release", "where"]
    assert f"Probes the executor {agent.mark}." in json.dumps(requests[0].body)
    output = requests[1].call_output("m1")
    # $E2E_MARK and a cwd that exist only on the executor.
    assert f"mark={agent.mark} " in output, output
    assert f"cwd={PLUGIN_DIR}" in output
    (item,) = turn.completed_items("mcpToolCall")
    assert (item["server"], item["tool"], item["status"]) == (SERVER, "where", "completed")
    assert item["environmentId"] == ENVIRONMENT_ID
    assert len(agent.requests_read("tools/call")) == 1

    agent.thread_id = await agent.start_thread(select_plugin=False)
    _turn, unselected = await agent.turn()
    assert offered_tools(unselected[0]) == []
    assert agent.mark not in json.dumps(unselected[0].body)


async def test_mcp_process_is_reused_across_turns_and_rebuilt_after_a_restart(
    agent: McpAgent,
) -> None:
    """Two turns use one MCP process; after the app-server restarts and resumes the thread, a
    new process serves it (and the old one is gone)."""
    agent.thread_id = thread_id = await agent.start_thread()
    _turn, first = await agent.turn([mcp_call("m1", "where")])
    _turn, second = await agent.turn([mcp_call("m2", "where")])
    pid = server_pid(first[1].call_output("m1"))
    assert server_pid(second[1].call_output("m2")) == pid
    starts = [e for e in agent.events() if e["event"] == "start"]
    assert [e["pid"] for e in starts] == [pid]
    assert len(agent.requests_read("initialize")) == 1

    await agent.app.close()
    await agent.wait_until(lambda: not pid_alive(pid), "the old MCP server is gone")
    async with AppServer.start(agent.home, agent.tmp) as app:
        agent.app = app
        await agent.add_environment()
        await app.call("thread/resume", {"threadId": thread_id})
        _turn, resumed = await agent.turn([mcp_call("m3", "where")])
        assert sorted(offered_tools(resumed[0])) == ["wait_for_release", "where"]
        output = resumed[1].call_output("m3")
        assert f"mark={agent.mark} " in output
        assert server_pid(output) != pid
        assert len(agent.requests_read("initialize")) == 2


async def test_mcp_answer_written_while_disconnected_reaches_the_model(agent: McpAgent) -> None:
    """The connection is cut while a tool call is open; the MCP server answers while the
    app-server cannot reconnect; once it can, it resumes the session and the answer (retained
    output) arrives. Same process, one call."""
    agent.thread_id = await agent.start_thread()
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
    agent.thread_id = await agent.start_thread()
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
    if agent.kind == "ours":
        # Every message the MCP server read came in one write, and one write came twice.
        writes = requests_seen(await agent.metrics(), "process/write")
        assert writes == len(agent.requests_read()) + 1
