"""`environmentInfo.prependPathDirs` end to end: what the app-server does with the directories an
executor reports (docs/protocol.md, "prependPathDirs").

The reference reports its package's `codex-path` directory (holding a bundled `rg`). With the
app-server's experimental `login_shell_package_path` feature, a command run through a POSIX
login shell gets those directories put back at the front of `PATH` after the login profile ran,
so `rg` is found even when the profile resets `PATH`; without the feature the profile's `PATH`
stands. We ship no helper tools and report none: the app-server then leaves the command alone
and `PATH` is whatever the profile made it, feature or not.
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Agent
from tests.harness.mock_model import exec_command
from tests.harness.wire import WireClient

# The executor user's login profile resets PATH, as many real profiles do.
PROFILE_PATH = "/usr/bin:/bin"
PROFILE = {".bash_profile": f"export PATH={PROFILE_PATH}\n"}
PROBE = 'printf "path=%s\\n" "$PATH"; printf "rg=%s\\n" "$(command -v rg || echo none)"'


async def _reported_and_seen(agent: Agent) -> tuple[list[str], dict[str, str]]:
    """The executor's prependPathDirs (as paths) and what a command saw: its PATH and `rg`."""
    assert agent.executor is not None
    async with await WireClient.connect(f"ws://127.0.0.1:{agent.executor.port}") as client:
        info = (await client.initialize())["result"]["environmentInfo"]
    dirs = [uri.removeprefix("file://") for uri in info["prependPathDirs"]]
    _turn, requests = await agent.turn([exec_command("c1", PROBE)])
    output = requests[1].call_output("c1")
    seen = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    return dirs, seen


@pytest.mark.e2e_setup(features=["login_shell_package_path"], executor_home=PROFILE)
async def test_login_shell_gets_the_reported_path_dirs_back(agent: Agent) -> None:
    """Feature on. Reference: `PATH` = its `codex-path` directory + the profile's PATH, and
    `rg` is the bundled one. Ours (nothing reported): `PATH` is exactly the profile's."""
    dirs, seen = await _reported_and_seen(agent)
    if agent.kind == "reference":
        assert len(dirs) == 1 and dirs[0].endswith("/codex-path"), dirs
        assert seen["path"] == f"{dirs[0]}:{PROFILE_PATH}", seen
        assert seen["rg"] == f"{dirs[0]}/rg", seen
    else:
        assert dirs == []
        assert seen["path"] == PROFILE_PATH, seen


@pytest.mark.e2e_setup(executor_home=PROFILE)
async def test_without_the_feature_the_profile_path_stands(agent: Agent) -> None:
    """Feature off (the default): the reported directories are not used, on either executor;
    the reference's own PATH carries `codex-path` to the shell, and the profile drops it."""
    dirs, seen = await _reported_and_seen(agent)
    assert len(dirs) == (1 if agent.kind == "reference" else 0), dirs
    assert seen["path"] == PROFILE_PATH, seen
