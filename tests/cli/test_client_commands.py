"""`execserver run / info / cp` driven through a real terminal or real pipes, against our
server and the pinned codex."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from tests.cli.support import CLI, cli_env, run_cli
from tests.conftest import ServerProcess
from tests.harness.servers import REFERENCE_VERSION
from tests.harness.terminal import Terminal


async def test_run_exits_with_the_remote_exit_code(any_server: ServerProcess) -> None:
    """`run` prints stdout and stderr apart and exits with the remote code (in a terminal)."""
    argv = [*CLI, "run", any_server.url, "--", "sh", "-c", "echo to-out; echo to-err >&2; exit 7"]
    async with Terminal.spawn(argv, cli_env()) as term:
        assert await term.wait() == 7
        assert b"to-out" in term.output and b"to-err" in term.output
    code, stdout, stderr = await run_cli(
        "run", any_server.url, "--", "sh", "-c", "echo to-out; echo to-err >&2; exit 7"
    )
    assert (code, stdout, stderr) == (7, b"to-out\n", b"to-err\n")


async def test_run_forwards_piped_stdin_to_eof(ours: ServerProcess) -> None:
    """Piped stdin reaches the command, and its end is the command's EOF."""
    data = os.urandom(300_000)
    code, stdout, _ = await run_cli("run", ours.url, "--", "sha256sum", stdin=data)
    assert code == 0
    assert stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()


async def test_run_forwards_typed_lines_and_ctrl_d(ours: ServerProcess) -> None:
    """Lines typed in the terminal reach the command; Ctrl-D ends its input."""
    async with Terminal.spawn([*CLI, "run", ours.url, "--", "cat"], cli_env()) as term:
        term.send(b"hello there\n")
        await term.expect(b"hello there\r\nhello there")  # the local echo, then cat's copy
        term.send(b"\x04")
        assert await term.wait() == 0


async def test_run_without_close_stdin_still_forwards(reference: ServerProcess) -> None:
    """On an executor that cannot close stdin, input still flows and EOF is reported."""
    code, stdout, stderr = await run_cli(
        "run", reference.url, "--", "sh", "-c", 'read a; echo "$a"; sleep 3', stdin=b"first\n"
    )
    assert (code, stdout) == (0, b"first\n")
    assert b"cannot close the command's stdin" in stderr


async def test_run_ctrl_c_interrupts_the_remote_command(any_server: ServerProcess) -> None:
    """Ctrl-C in the terminal interrupts the remote command (exit 130)."""
    argv = [*CLI, "run", any_server.url, "--", "sh", "-c", "echo ready; exec sleep 30"]
    async with Terminal.spawn(argv, cli_env()) as term:
        await term.expect(b"ready")
        term.send(b"\x03")
        assert await term.wait() == 130


async def test_run_tty_is_interactive_and_restores_the_terminal(any_server: ServerProcess) -> None:
    """--tty gives an interactive remote shell; afterwards the local terminal is cooked again."""
    cli = " ".join(CLI)
    script = f"{cli} run -t -e 'PS1=remote> ' {any_server.url} -- sh; echo CLI-EXIT=$?; stty -a"
    async with Terminal.spawn(["sh", "-c", script], cli_env()) as term:
        await term.expect(b"remote> ")
        term.send(b"echo $((6 * 7)); tty\r")
        await term.expect(b"42")
        await term.expect(b"/dev/pts/")
        term.send(b"exit 3\r")
        await term.expect(b"CLI-EXIT=3")
        assert await term.wait() == 0
        settings = bytes(term.output).split(b"CLI-EXIT=3", 1)[1]
        assert b" icanon" in settings and b" echo" in settings and b"-icanon" not in settings


async def test_info_prints_the_executor_description(any_server: ServerProcess) -> None:
    """`info` prints the environment info as JSON."""
    code, stdout, _ = await run_cli("info", any_server.url)
    assert code == 0
    info = json.loads(stdout)
    assert info["platformOs"] == "linux"
    assert info["executorVersion"] == REFERENCE_VERSION


async def test_cp_round_trips_a_large_file(any_server: ServerProcess, tmp_path: Path) -> None:
    """`cp` uploads and downloads through block reads and writes, byte for byte, with progress."""
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(9 * 1024 * 1024 + 7))
    remote = f"{any_server.url}:{tmp_path}/remote.bin"
    code, _, stderr = await run_cli("cp", str(source), remote, "--progress")
    assert code == 0, stderr
    assert b"100.0%" in stderr
    (tmp_path / "back").mkdir()
    code, _, stderr = await run_cli("cp", remote, str(tmp_path / "back"))
    assert code == 0, stderr
    assert (tmp_path / "back" / "remote.bin").read_bytes() == source.read_bytes()


async def test_cp_reports_a_missing_source(ours: ServerProcess, tmp_path: Path) -> None:
    """A missing source is one line naming the side and the path, and exit code 1."""
    remote = f"{ours.url}:{tmp_path}/nope"
    code, _, stderr = await run_cli("cp", remote, str(tmp_path / "x"))
    missing = "No such file or directory"
    assert (code, stderr.decode()) == (1, f"execserver: remote source {remote}: {missing}\n")
    code, _, stderr = await run_cli("cp", str(tmp_path / "nope"), f"{ours.url}:{tmp_path}/x")
    assert (code, stderr.decode()) == (1, f"execserver: local source {tmp_path}/nope: {missing}\n")


async def test_env_name_selects_from_environments_toml(ours: ServerProcess, tmp_path: Path) -> None:
    """--env NAME (and the default) come from $CODEX_HOME/environments.toml."""
    (tmp_path / "environments.toml").write_text(
        f'default = "devbox"\n[[environments]]\nid = "devbox"\nurl = "{ours.url}"\n'
    )
    env = cli_env(CODEX_HOME=str(tmp_path))
    code, stdout, _ = await run_cli("run", "--env", "devbox", "--", "echo", "named", env=env)
    assert (code, stdout) == (0, b"named\n")
    code, stdout, _ = await run_cli("run", "--", "echo", "default", env=env)
    assert (code, stdout) == (0, b"default\n")
    code, _, stderr = await run_cli("run", "--env", "nope", "--", "true", env=env)
    assert code == 2
    assert stderr.startswith(b"execserver: unknown turn environment id `nope`: ")
    assert b"(ids: local, devbox)" in stderr


@pytest.mark.parametrize("args", [["run", "ws://127.0.0.1:1", "--", "true"], ["run", "local"]])
async def test_run_usage_errors(args: list[str], tmp_path: Path) -> None:
    """A missing command or an unreachable executor is a clear error."""
    code, _, stderr = await run_cli(*args, env=cli_env(CODEX_HOME=str(tmp_path)))
    assert code != 0
    assert stderr
