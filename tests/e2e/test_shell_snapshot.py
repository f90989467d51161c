"""Shell snapshot v2 end to end: with the app-server's `shell_snapshot_v2` feature, commands
run from a snapshot of the executor user's login profile (see docs/e2e.md)."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Agent
from tests.harness.mock_model import exec_command

MARKER = "EXECUTOR-PROFILE-RAN"
BASHRC = f"""echo "{MARKER}" >&2
export SNAPVAR="from-executor-profile"
snapfunc() {{ echo "snapfunc says $1"; }}
"""
BASH_PROFILE = '[ -r "$HOME/.bashrc" ] && . "$HOME/.bashrc"\n'


@pytest.mark.e2e_setup(
    features=["shell_snapshot_v2"],
    executor_home={".bashrc": BASHRC, ".bash_profile": BASH_PROFILE},
)
async def test_shell_snapshot_replays_the_executor_profile(agent: Agent) -> None:
    """The profile lives only in the executor's HOME: its variable and function reach the
    commands while its marker (printed whenever the profile runs) does not, on the first and a
    later command; a nested login shell, which reads the profile itself, shows the marker."""
    probe = 'echo "SNAPVAR=$SNAPVAR mark=$E2E_MARK"; snapfunc hello'
    _turn, requests = await agent.turn(
        [exec_command("c1", probe)],
        [exec_command("c2", probe)],
        [exec_command("c3", "bash -lc 'echo nested=$SNAPVAR'")],
    )
    for index, call in enumerate(("c1", "c2"), start=1):
        output = requests[index].call_output(call)
        assert f"SNAPVAR=from-executor-profile mark={agent.mark}" in output
        assert "snapfunc says hello" in output
        assert MARKER not in output
    nested = requests[3].call_output("c3")
    assert MARKER in nested and "nested=from-executor-profile" in nested
