"""Shell snapshots beyond the differential cases: one capture per scope however many wait for
it, the scope's lifetime (the session), the time limit, and what the restore prefix does."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from execserver.local import shell_snapshot
from tests.harness.procfs import pids_with_marker
from tests.harness.wire import Json, WireClient, process_params
from tests.server.conftest import StartServer

BASHRC = """echo capture >> "$HOME/captures"
export SNAPVAR=from_profile
snapfunc() { echo "snapfunc $1"; }
"""


def make_home(tmp_path: Path, bashrc: str = BASHRC) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text(bashrc)
    return home


def captures(home: Path) -> int:
    try:
        return len((home / "captures").read_text().splitlines())
    except FileNotFoundError:
        return 0


def login_params(process_id: str, home: Path, scope: str = "s", **extra: Any) -> Json:
    return process_params(
        process_id,
        ["/bin/bash", "-lc", 'echo "SNAPVAR=$SNAPVAR"; snapfunc x'],
        env={"PATH": "/usr/bin:/bin", "HOME": str(home)},
        shellSnapshot={"scopeId": scope, "shell": {"name": "bash", "path": "/bin/bash"}},
        **extra,
    )


async def output_of(client: WireClient, process_id: str) -> str:
    events = await client.process_events(process_id, timeout=30)
    return b"".join(
        base64.b64decode(e["params"]["chunk"]) for e in events if e["method"] == "process/output"
    ).decode()


async def test_concurrent_first_uses_share_one_capture(
    start_server: StartServer, tmp_path: Path
) -> None:
    home = make_home(tmp_path)
    _, url = await start_server()
    async with await WireClient.connect(url) as client:
        await client.initialize()
        ids = [f"p{index}" for index in range(6)]
        for process_id in ids:  # all sent before the first capture finishes
            await client.send(
                {
                    "id": process_id,
                    "method": "process/start",
                    "params": login_params(process_id, home),
                }
            )
        for process_id in ids:
            response = await client.response(process_id, timeout=30)
            assert response["result"]["processId"] == process_id
        outputs = [await output_of(client, process_id) for process_id in ids]
    assert outputs == ["SNAPVAR=from_profile\nsnapfunc x\n"] * 6
    # The capture sources the profile twice (the login profile, then ~/.bashrc): once only.
    assert captures(home) == 1


async def test_a_scope_lives_as_long_as_its_session(
    start_server: StartServer, tmp_path: Path
) -> None:
    home = make_home(tmp_path)
    _, url = await start_server()
    client = await WireClient.connect(url)
    session_id = (await client.initialize())["result"]["sessionId"]
    await client.request("process/start", login_params("a", home))
    assert await output_of(client, "a") == "SNAPVAR=from_profile\nsnapfunc x\n"
    assert captures(home) == 1
    await client.close()
    # Resumed: the same session, the same snapshot.
    async with await WireClient.connect(url) as again:
        assert "result" in await again.initialize(resume=session_id)
        await again.request("process/start", login_params("b", home))
        assert await output_of(again, "b") == "SNAPVAR=from_profile\nsnapfunc x\n"
    assert captures(home) == 1
    # Another session captures its own.
    async with await WireClient.connect(url) as other:
        await other.initialize()
        await other.request("process/start", login_params("c", home))
        assert await output_of(other, "c") == "SNAPVAR=from_profile\nsnapfunc x\n"
    assert captures(home) == 2


async def test_a_capture_over_the_time_limit_runs_the_command_unchanged(
    start_server: StartServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shell_snapshot, "CAPTURE_TIMEOUT_S", 0.5)
    home = make_home(tmp_path, 'echo capture >> "$HOME/captures"\nexport SNAPVAR=slow\nsleep 30\n')
    (home / ".profile").write_text("export SNAPVAR=from_login\n")
    _, url = await start_server()
    async with await WireClient.connect(url) as client:
        await client.initialize()
        started = asyncio.get_running_loop().time()
        await client.request("process/start", login_params("slow", home), timeout=10)
        assert asyncio.get_running_loop().time() - started < 5
        # Unchanged: `bash -lc` reads .profile (no .bash_profile), not .bashrc.
        assert (await output_of(client, "slow")).startswith("SNAPVAR=from_login\n")
        await client.request("process/start", login_params("again", home), timeout=10)
        assert (await output_of(client, "again")).startswith("SNAPVAR=from_login\n")
    assert captures(home) == 1  # the failure is remembered


async def test_closing_the_session_kills_a_capture_in_progress(
    start_server: StartServer, tmp_path: Path
) -> None:
    marker = f"snapshot-capture-{os.getpid()}-{id(tmp_path)}"
    home = make_home(tmp_path, f'echo capture >> "$HOME/captures"\nexec -a {marker} sleep 60\n')
    server, url = await start_server()
    client = await WireClient.connect(url)
    await client.initialize()
    await client.send({"id": 1, "method": "process/start", "params": login_params("x", home)})
    for _ in range(200):
        if captures(home):
            break
        await asyncio.sleep(0.05)
    assert captures(home) == 1
    await client.close()
    await server.aclose()
    assert pids_with_marker(marker) == []


def run_restore(
    snapshot_text: bytes, script: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run `script` the way a snapshot-replaying child runs (descriptor 9 holds the text)."""
    argv = shell_snapshot.restore_argv("bash", ["/bin/bash", "-lc", script])
    fd = shell_snapshot.memfd_with(snapshot_text)
    move = f'exec 9<&{fd} {fd}<&-; exec "$@"'  # put the snapshot at 9, then become the child
    try:
        return subprocess.run(
            ["/bin/bash", "-c", move, "move", *argv],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            pass_fds=(fd,),
        )
    finally:
        os.close(fd)


def test_restore_prefix_reports_a_broken_snapshot_and_runs_the_script() -> None:
    result = run_restore(
        b"if then fi\n", "echo script-ran; ls /proc/self/fd | sort -n | tr '\\n' ' '", {}
    )
    assert "failed to restore shell snapshot" in result.stderr
    assert result.stdout.startswith("script-ran\n")
    assert " 9 " not in f" {result.stdout.splitlines()[1]} "  # the descriptor is closed


def test_rendered_snapshot_round_trips_through_bash() -> None:
    """Values with quotes, newlines, `$` and backquotes come back exactly; the command's own
    environment wins; functions and options are restored."""
    values = {
        "PLAIN": "value",
        "QUOTES": 'it\'s "quoted"',
        "NEWLINE": "line one\nline two",
        "DOLLAR": "$HOME `id` $(id) \\n",
        "EMPTY": "",
    }
    snapshot = shell_snapshot.Snapshot(
        shell="bash",
        exports={**values, "OWN": "from-snapshot"},
        functions='greet () \n{ \n    echo "hi $1"\n}\n',
        aliases=["alias ll='ls -l'"],
        options=["noglob"],
        shopts=["extglob"],
    )
    env = {"OWN": "from-command", "PATH": "/usr/bin:/bin"}
    script = (
        "for name in PLAIN QUOTES NEWLINE DOLLAR EMPTY OWN; do printf '%s=[%s]\\0' \"$name\" "
        '"$(printenv "$name")"; done; greet you; alias ll; shopt -q extglob && echo extglob; '
        "case $- in *f*) echo noglob;; esac"
    )
    result = run_restore(snapshot.render(env), script, env)
    assert result.stderr == ""
    *pairs, rest = result.stdout.split("\0")
    got = dict(pair.split("=", 1) for pair in pairs)
    assert got == {**{k: f"[{v}]" for k, v in values.items()}, "OWN": "[from-command]"}
    assert rest == "hi you\nalias ll='ls -l'\nextglob\nnoglob\n"
