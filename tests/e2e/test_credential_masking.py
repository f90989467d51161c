"""Credential masking end to end: with the app-server's `network_proxy` and `credential_masking`
features, a sandboxed thread with network access asks the executor to broker secrets
(`networkProxy.proxy.credentialMasking`). A non-login command (`login: false`, run as
`bash -c`, the form the reference masks too) sees a dummy for the executor's GH_TOKEN and the
CA bundle, and the app-server does not warn that it runs with unmasked credentials (which it
does for an executor whose `credentialMasking` capability is false, and for login shells on
any executor)."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import Agent
from tests.harness.mock_model import exec_command

SECRET = "ghp_E2eSecret0123456789abcdefghijklmnopq"


@pytest.mark.e2e_setup(
    features=["network_proxy", "credential_masking"],
    config="\n[sandbox_workspace_write]\nnetwork_access = true\n",
    sandbox="workspace-write",
    executor_env={"GH_TOKEN": SECRET},
)
async def test_commands_run_with_masked_credentials(agent: Agent) -> None:
    """The command runs on the executor (its mark) with a dummy of the reference's shape."""
    probe = 'echo "token=$GH_TOKEN mark=$E2E_MARK"; echo "ca=${SSL_CERT_FILE##*/}"'
    turn, requests = await agent.turn([exec_command("c1", probe, login=False)])
    output = requests[1].call_output("c1")
    assert f"mark={agent.mark}" in output
    assert "ca=ca-bundle-" in output
    warnings = [n for n in turn.notifications if "unmasked credentials" in json.dumps(n)]
    assert warnings == [], warnings
    assert SECRET not in output
    dummy = output.split("token=", 1)[1].split()[0]
    assert dummy.startswith("ghp_masked") and len(dummy) == len(SECRET)
