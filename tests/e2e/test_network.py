"""Managed networking end to end: with the app-server's `network_proxy` feature, a sandboxed
thread with network access runs every command with a proxy the executor starts for it (see
docs/protocol.md, Managed network)."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Agent
from tests.harness.mock_model import exec_command


def probe(executor_port: int) -> str:
    """Print the proxy variables and the executor's mark, fetch a site the policy does not
    allow, try the executor's own port directly, try a unix socket."""
    return (
        "env | grep -E '^(HTTPS_PROXY|CODEX_NETWORK_PROXY_ACTIVE|CODEX_NETWORK_ALLOW_LOCAL_"
        "BINDING)=' | sort; echo mark=$E2E_MARK;"
        " curl -sS -m 20 -o /dev/null -w 'status=%{http_code}\\n' http://example.com/ 2>&1;"
        " curl -s -m 5 --noproxy '*' -o /dev/null -w 'direct=%{http_code}\\n'"
        f" http://127.0.0.1:{executor_port}/readyz;"
        " python3 -c 'import socket; socket.socket(socket.AF_UNIX)' 2>&1 | tail -1"
    )


@pytest.mark.e2e_setup(
    features=["network_proxy"],
    config="\n[sandbox_workspace_write]\nnetwork_access = true\n",
    sandbox="workspace-write",
)
async def test_commands_run_behind_the_executor_proxy(agent: Agent) -> None:
    """The command runs on the executor (its mark) with the proxy variables of an
    executor-local proxy on loopback; a fetch the policy does not allow gets the proxy's 403
    (the app-server's default policy allows no domain), and the sandbox reaches nothing else,
    not even the executor's own port. Without the capability the app-server would refuse the
    command before it reached the executor."""
    assert agent.executor is not None
    _turn, requests = await agent.turn([exec_command("c1", probe(agent.executor.port))])
    output = requests[1].call_output("c1")
    assert f"mark={agent.mark}" in output
    assert "CODEX_NETWORK_PROXY_ACTIVE=1" in output
    assert "CODEX_NETWORK_ALLOW_LOCAL_BINDING=0" in output
    assert "HTTPS_PROXY=http://127.0.0.1:" in output
    assert "status=403" in output
    assert "direct=000" in output  # the executor's port is not reachable from the sandbox
    assert "PermissionError" in output  # no new unix sockets in the managed sandbox
