"""One exit-code scheme for every client command (cli/exit_codes.py, docs/cli.md), and one-line
messages that say which side and which path, driven through the real CLI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from execserver.cli.exit_codes import MEANINGS, ExitCode
from tests.cli.support import cli_env, no_traceback, run_cli
from tests.conftest import ServerProcess
from tests.harness.servers import REPO_ROOT


def test_docs_list_every_exit_code() -> None:
    """docs/cli.md has a row for each code of the table, and no other."""
    text = (REPO_ROOT / "docs/cli.md").read_text()
    table = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(code) for code in re.findall(r"^\| (\d+)\S* \|", table, re.M)}
    assert documented == {int(code) for code in MEANINGS}


async def test_start_failures_exit_like_a_shell(any_server: ServerProcess, tmp_path: Path) -> None:
    """127 not found, 126 not executable (and a missing #! interpreter), 125 a missing -C
    directory; each a single line naming the remote path, against both executors."""
    script = tmp_path / "bad-interpreter.sh"
    script.write_text("#!/nonexistent/interpreter\n")
    script.chmod(0o755)
    cases = [
        (["--", "no-such-command-xyz"], 127, "remote command not found: no-such-command-xyz"),
        (["--", "/etc/passwd"], 126, "remote command /etc/passwd cannot be executed"),
        (["--", str(script)], 126, f"remote command {script}: its interpreter (the #! line)"),
        (["-C", f"{tmp_path}/nope", "--", "true"], 125, f"remote directory {tmp_path}/nope (-C)"),
    ]
    for args, code, message in cases:
        got, _, stderr = await run_cli("run", any_server.url, *args)
        assert got == code, stderr
        assert stderr.startswith(f"execserver: {message}".encode()) and stderr.count(b"\n") == 1


@pytest.mark.parametrize("command", ["run", "info", "cp"])
async def test_unreachable_executor_is_255_for_every_command(command: str, tmp_path: Path) -> None:
    args = {
        "run": ["run", "ws://127.0.0.1:1", "--", "true"],
        "info": ["info", "ws://127.0.0.1:1"],
        "cp": ["cp", "ws://127.0.0.1:1:/etc/hostname", str(tmp_path / "x")],
    }[command]
    code, _, stderr = await run_cli(*args)
    assert (code, stderr) == (
        ExitCode.CONNECTION,
        b"execserver: could not connect to ws://127.0.0.1:1: Connection refused\n",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("run http://devbox:8765 -- true", "`http://devbox:8765`: unsupported scheme `http://`"),
        ("info https://devbox", "`https://devbox`: unsupported scheme `https://`"),
        (
            "cp ws://127.0.0.1:8765/tmp/x .",
            "`ws://127.0.0.1:8765/tmp/x` names an executor but no path: put `:`",
        ),
        ("cp /etc/hostname wss://devbox/tmp/", "`wss://devbox/tmp/` names an executor but no path"),
        ("cp ftp://x:/y .", "`ftp://x:/y`: unsupported scheme `ftp://`"),
        ("run nope -- true", "unknown turn environment id `nope`: `nope` is not a URL"),
        (
            "run -- true",
            "no TARGET given and there is no {home}/environments.toml to name a default",
        ),
        ("info", "no TARGET given and there is no {home}/environments.toml"),
        (
            "run --token 12345678901234567890 --token-file x ws://127.0.0.1:1 -- true",
            "give either --token or --token-file",
        ),
    ],
)
async def test_usage_errors_are_2_with_what_was_meant(
    args: str, message: str, tmp_path: Path
) -> None:
    code, _, stderr = await run_cli(*args.split(), env=cli_env(CODEX_HOME=str(tmp_path)))
    assert code == ExitCode.USAGE
    assert stderr.decode().startswith("execserver: " + message.replace("{home}", str(tmp_path)))
    assert stderr.count(b"\n") == 1


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--log-level", "nope"], {}, "argument --log-level: invalid choice: 'nope'"),
        ([], {"EXECSERVER_LOG": "loud"}, "argument --log-level: invalid choice: 'loud'"),
        ([], {"EXECSERVER_LOG_FORMAT": "xml"}, "argument --log-format: invalid choice: 'xml'"),
    ],
)
async def test_bad_log_settings_are_usage_errors(
    args: list[str], env: dict[str, str], message: str
) -> None:
    """A log level or format the logger cannot take, from a flag or the environment, is a
    usage error (2, one line after the usage), not a traceback."""
    code, _, stderr = await run_cli(*args, "token", "new", env=cli_env(**env))
    assert code == ExitCode.USAGE
    assert stderr.decode().splitlines()[-1].startswith(f"execserver: error: {message}")
    assert b"Traceback" not in stderr


async def test_no_target_needs_a_stated_default(ours: ServerProcess, tmp_path: Path) -> None:
    """Without a TARGET nothing runs here unless environments.toml says so: a file without
    `default` is refused; `default = "local"` (or the explicit TARGET `local`) runs here."""
    env = cli_env(CODEX_HOME=str(tmp_path))
    toml = tmp_path / "environments.toml"
    toml.write_text(f'[[environments]]\nid = "devbox"\nurl = "{ours.url}"\n')
    code, stdout, stderr = await run_cli("run", "--", "echo", "where", env=env)
    assert code == 2 and stdout == b""
    assert f"no TARGET given and {toml} names no default".encode() in stderr
    code, stdout, _ = await run_cli("run", "local", "--", "echo", "here", env=env)
    assert (code, stdout) == (0, b"here\n")
    toml.write_text('default = "local"\n')
    code, stdout, _ = await run_cli("run", "--", "echo", "stated", env=env)
    assert (code, stdout) == (0, b"stated\n")


async def test_every_command_has_version_and_serve_help_shows_defaults() -> None:
    commands = [[], ["serve"], ["run"], ["ps"], ["attach"], ["kill"], ["info"], ["cp"]]
    commands += [["relay"], ["token"], ["token", "new"]]
    for command in commands:
        code, stdout, _ = await run_cli(*command, "--version")
        assert code == 0 and stdout.startswith(b"execserver 0."), command
    code, stdout, _ = await run_cli("serve", "--help")
    text = b" ".join(stdout.split())
    assert code == 0
    for shown in (b"(default: ws://127.0.0.1:0)", b"(default: 80.0)", b"(default 256)"):
        assert shown in text, shown
    no_traceback(stdout)


async def test_huge_argv_is_a_clear_error_and_the_connection_survives(
    ours: ServerProcess,
) -> None:
    """A 20 MB argv from the Python client: `MessageTooLarge` before anything is sent (the
    server would drop the connection for a frame over 16 MiB); the same environment runs the
    next command."""
    from execserver.errors import MessageTooLarge
    from execserver.remote import connect_environment

    async with await connect_environment(ours.url) as env:
        with pytest.raises(MessageTooLarge, match=r"process/start request is 19\.1 MiB"):
            await env.process.run(["echo", "x" * 20_000_000])
        assert (await env.process.run(["echo", "after"])).stdout == b"after\n"
