"""Whole Codex agent turns executed on the exec-server (see conftest for how each is proven)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from tests.conftest import TIME
from tests.e2e.conftest import EXECUTOR_CWD, Agent
from tests.harness.mock_model import Item, ModelRequest, apply_patch, exec_command, write_stdin


async def test_command_output_and_exit_code_reach_the_model(agent: Agent) -> None:
    turn, requests = await agent.turn(
        [exec_command("c1", 'echo "out $E2E_MARK $PWD"; echo err-line >&2; exit 3')]
    )
    output = requests[1].call_output("c1")
    assert f"out {agent.mark} {EXECUTOR_CWD}\n" in output
    assert "err-line\n" in output
    assert "Process exited with code 3" in output
    (item,) = turn.completed_items("commandExecution")
    assert item["exitCode"] == 3
    assert item["cwd"] == EXECUTOR_CWD


def session_id(output: str) -> int:
    match = re.search(r"Process running with session ID (\d+)", output)
    assert match, output
    return int(match.group(1))


async def test_long_running_command_yields_and_is_polled(agent: Agent) -> None:
    # The command waits for a file the test creates only once the model has seen the first
    # output, so it is still running at the first yield however slow the machine is.
    go = agent.work / "go"

    def poll(request: ModelRequest) -> list[Item]:
        sid = session_id(request.call_output("c1"))
        go.write_text("")
        return [write_stdin("c2", sid, "", yield_time_ms=10000)]

    script = 'echo "ready $E2E_MARK"; while [ ! -e go ]; do sleep 0.05; done; echo finished'
    _turn, requests = await agent.turn([exec_command("c1", script, yield_time_ms=1000)], poll)
    first = requests[1].call_output("c1")
    assert f"ready {agent.mark}" in first
    assert "finished" not in first
    last = requests[2].call_output("c2")
    assert "finished" in last
    assert "Process exited with code 0" in last


async def test_pty_command_is_a_terminal_and_takes_stdin(agent: Agent) -> None:
    script = (
        '[ -t 0 ] && [ -t 1 ] && echo "terminal $E2E_MARK"; read -r line; echo "got:$line"; exit 4'
    )

    def write(request: ModelRequest) -> list[Item]:
        sid = session_id(request.call_output("c1"))
        return [write_stdin("c2", sid, "hello executor\n", yield_time_ms=5000)]

    _turn, requests = await agent.turn(
        # The shell waits for stdin, so the whole yield window passes: long enough for a loaded
        # machine to start it and print, short enough to keep the test quick.
        [exec_command("c1", script, tty=True, yield_time_ms=int(1500 * TIME))],
        write,
    )
    assert f"terminal {agent.mark}" in requests[1].call_output("c1")
    answer = requests[2].call_output("c2")
    assert "got:hello executor" in answer
    assert "Process exited with code 4" in answer


PATCH = """*** Begin Patch
*** Add File: added/new.txt
+created by the agent
*** Update File: update.txt
@@
 keep
-old line
+new line
*** Update File: move-me.txt
*** Move to: moved/there.txt
@@
-before move
+after move
*** Delete File: delete-me.txt
*** End Patch
"""


async def test_apply_patch_adds_updates_moves_and_deletes(agent: Agent) -> None:
    (agent.work / "update.txt").write_text("keep\nold line\n")
    (agent.work / "move-me.txt").write_text("before move\n")
    (agent.work / "delete-me.txt").write_text("doomed\n")
    turn, requests = await agent.turn([apply_patch("p1", PATCH)])
    output = requests[1].call_output("p1")
    assert (agent.work / "added/new.txt").read_text() == "created by the agent\n", output
    assert (agent.work / "update.txt").read_text() == "keep\nnew line\n"
    assert not (agent.work / "move-me.txt").exists()
    assert (agent.work / "moved/there.txt").read_text() == "after move\n"
    assert not (agent.work / "delete-me.txt").exists()
    (change,) = turn.completed_items("fileChange")
    assert change["status"] == "completed", change
    # Only the executor could have written there: the app-server's view has no such path.
    assert not Path(EXECUTOR_CWD).exists()


async def test_agents_md_in_the_remote_cwd_is_picked_up(agent: Agent) -> None:
    rule = f"Always greet the executor {agent.mark}."
    (agent.work / "AGENTS.md").write_text(f"# Rules\n\n{rule}\n")
    _, requests = await agent.turn()
    assert any(rule in text for text in requests[0].texts("user")), requests[0].texts("user")


async def test_parallel_tool_calls_run_at_the_same_time(agent: Agent) -> None:
    # Each command waits (up to 5 s) until all three have started: run one after another,
    # each would see only its predecessors.
    def rendezvous(i: int) -> str:
        return (
            f"mkdir -p rv && touch rv/{i}; "
            "for n in $(seq 100); do [ $(ls rv | wc -l) -ge 3 ] && break; sleep 0.05; done; "
            f'echo "p{i} saw $(ls rv | wc -l) $E2E_MARK"'
        )

    calls = [exec_command(f"c{i}", rendezvous(i), yield_time_ms=10000) for i in range(3)]
    turn, requests = await agent.turn(calls)
    for i in range(3):
        assert f"p{i} saw 3 {agent.mark}" in requests[1].call_output(f"c{i}")
    assert len(turn.completed_items("commandExecution")) == 3


async def test_turn_completes_when_the_executor_connection_is_cut(agent: Agent) -> None:
    script = 'echo "before $E2E_MARK"; sleep 1.5; echo "after cut $E2E_MARK"'
    mark = len(agent.app.notifications)
    running = asyncio.create_task(agent.turn([exec_command("c1", script, yield_time_ms=20000)]))
    try:
        await agent.app.wait_notification("item/started", start=mark, timeout=60)
        assert agent.proxy is not None
        connections = agent.proxy.connections
        agent.proxy.cut()
        _turn, requests = await running
    finally:
        if not running.done():
            running.cancel()
    assert agent.proxy.cuts == 1
    assert agent.proxy.connections > connections  # the app-server came back...
    output = requests[1].call_output("c1")  # ...and got the output produced while it was away
    assert f"before {agent.mark}" in output
    assert f"after cut {agent.mark}" in output
    assert "Process exited with code 0" in output


async def test_non_zero_exit_and_signal_death_are_reported(agent: Agent) -> None:
    turn, requests = await agent.turn(
        [
            exec_command("c1", "echo failing; exit 7"),
            exec_command("c2", "echo dying; kill -KILL $$"),
        ]
    )
    failing = requests[1].call_output("c1")
    assert "failing\n" in failing
    assert "Process exited with code 7" in failing
    killed = requests[1].call_output("c2")
    assert "dying\n" in killed
    assert "Process exited with code 137" in killed  # 128 + SIGKILL, as a shell reports it
    items = {item["id"]: item for item in turn.completed_items("commandExecution")}
    assert (items["c1"]["exitCode"], items["c1"]["status"]) == (7, "failed")
    assert (items["c2"]["exitCode"], items["c2"]["status"]) == (137, "failed")


async def test_environment_info_and_status_come_from_the_executor(agent: Agent) -> None:
    info = await agent.app.call("environment/info", {"environmentId": "remote"})
    assert info["cwd"] == "file://" + EXECUTOR_CWD
    assert info["shell"]["name"] == "bash"
    status = await agent.app.call("environment/status", {"environmentId": "remote"})
    assert status == {"status": "ready"}
