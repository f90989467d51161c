"""Tokens: where the CLI takes them from (every command alike), what it says when the server
refuses one, the rules for token files (client and server), and `execserver token`."""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.cli.support import cli_env, run_cli
from tests.conftest import TIME, require_reference
from tests.harness.servers import RunningServer, ours_command, running_server

TOKEN = "cli-token-0123456789abcdef"


@contextlib.asynccontextmanager
async def token_server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    token_file = tmp_path / "server-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    flags = ["--ws-auth", "capability-token", "--ws-token-file", str(token_file)]
    async with running_server("ours", tmp_path, extra=flags) as server:
        yield server


def _client_token_file(tmp_path: Path, token: str = TOKEN, mode: int = 0o600) -> Path:
    path = tmp_path / f"client-token-{mode:o}"
    path.write_text(token + "\n")
    path.chmod(mode)
    return path


async def test_every_command_takes_the_token_from_each_source(tmp_path: Path) -> None:
    """--token-file, `--token-file -` (stdin), $EXECSERVER_TOKEN_FILE and $EXECSERVER_TOKEN
    work for run, info and cp alike (cp used to ignore $EXECSERVER_TOKEN)."""
    (tmp_path / "file.txt").write_text("payload\n")
    async with token_server(tmp_path) as server:
        token_file = str(_client_token_file(tmp_path))
        remote = f"{server.url}:{tmp_path}/file.txt"
        commands = [
            ["run", server.url],  # `-- echo ok` follows the options
            ["info", server.url],
            ["cp", remote, str(tmp_path / "copy.txt")],
        ]
        for command in commands:
            tail = ["--", "echo", "ok"] if command[0] == "run" else []
            for env, extra, stdin in (
                (cli_env(), ["--token-file", token_file], b""),
                (cli_env(), ["--token-file", "-"], TOKEN.encode() + b"\n"),
                (cli_env(EXECSERVER_TOKEN_FILE=token_file), [], b""),
                (cli_env(EXECSERVER_TOKEN=TOKEN), [], b""),
            ):
                code, _, stderr = await run_cli(*command, *extra, *tail, stdin=stdin, env=env)
                assert code == 0, (command, extra, stderr)
        assert (tmp_path / "copy.txt").read_text() == "payload\n"
        # The token line is consumed; the rest of stdin still goes to the command.
        code, stdout, _ = await run_cli(
            "run", server.url, "--token-file", "-", "--", "cat", stdin=f"{TOKEN}\nrest\n".encode()
        )
        assert (code, stdout) == (0, b"rest\n")


async def test_a_refused_token_shows_the_reason_and_a_hint(tmp_path: Path) -> None:
    async with token_server(tmp_path) as server:
        code, _, stderr = await run_cli("info", server.url)
        assert code == 255
        assert stderr.decode() == (
            f"execserver: {server.url} refused the connection (HTTP 401: missing websocket "
            "bearer token); this server needs a token: pass --token-file FILE (or "
            "$EXECSERVER_TOKEN)\n"
        )
        wrong = _client_token_file(tmp_path, "x" * 20)
        code, _, stderr = await run_cli(
            "cp", f"{server.url}:/etc/hostname", ".", "--token-file", str(wrong)
        )
        assert code == 255
        assert b"(HTTP 401: invalid websocket bearer token); the token was not accepted" in stderr


async def test_client_token_file_rules(tmp_path: Path) -> None:
    """Writable by others: refused. Readable by everyone: a warning, then used. Too short,
    empty or two words: refused. Each a one-line usage error (2) before connecting."""
    async with token_server(tmp_path) as server:
        readable = _client_token_file(tmp_path, mode=0o644)
        code, stdout, stderr = await run_cli(
            "run", server.url, "--token-file", str(readable), "--", "echo", "ok"
        )
        assert (code, stdout) == (0, b"ok\n")
        assert stderr.decode() == (
            f"execserver: warning: {readable} is readable by every user (mode 0644); "
            f"run `chmod 600 {readable}`\n"
        )
    writable = _client_token_file(tmp_path, mode=0o620)
    short = _client_token_file(tmp_path, "short")
    two = tmp_path / "two-words"
    two.write_text("one-long-token-part two-long-token-part\n")
    two.chmod(0o600)
    for path, message in (
        (writable, f"{writable} is writable by other users (mode 0620)"),
        (short, f"the token in {short} is 5 bytes; at least 16 are needed"),
        (two, f"the token in {two} must be one word of printable ASCII"),
        (tmp_path / "missing", f"cannot read token file {tmp_path}/missing: No such file"),
    ):
        code, _, stderr = await run_cli("info", "ws://127.0.0.1:1", "--token-file", str(path))
        assert code == 2 and stderr.decode().startswith(f"execserver: {message}"), stderr


async def test_no_token_over_plain_ws_to_another_host() -> None:
    code, _, stderr = await run_cli(
        "run", "ws://192.0.2.1:8765", "--", "true", env=cli_env(EXECSERVER_TOKEN=TOKEN)
    )
    assert code == 2
    assert stderr.startswith(
        b"execserver: refusing to send a token over plain ws:// to 192.0.2.1: use wss://"
    )


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [
        ("short-token", 0o600, "the token in {path} is 11 bytes; at least 16 are needed"),
        (TOKEN, 0o660, "{path} is writable by other users (mode 0660)"),
    ],
)
def test_server_refuses_weak_token_files(
    tmp_path: Path, content: str, mode: int, message: str
) -> None:
    """Deliberate difference `weak_token_files_refused`: codex starts with either file."""
    path = tmp_path / "token"
    path.write_text(content)
    path.chmod(mode)
    command = ours_command(extra=["--ws-auth", "capability-token", "--ws-token-file", str(path)])
    result = subprocess.run(
        command, capture_output=True, timeout=30 * TIME, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 1
    assert result.stderr.decode().startswith("Error: " + message.format(path=path))
    assert result.stderr.count(b"\n") == 1


@pytest.mark.reference
async def test_server_refuses_weak_token_files_reference(tmp_path: Path) -> None:
    """The reference starts with a 5-byte token in a group-writable file."""
    require_reference()
    path = tmp_path / "token"
    path.write_text("short")
    path.chmod(0o660)
    flags = ["--ws-auth", "capability-token", "--ws-token-file", str(path)]
    async with running_server("reference", tmp_path, extra=flags) as server:
        assert server.url.startswith("ws://")


async def test_server_warns_about_a_world_readable_token_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN)
    path.chmod(0o644)
    flags = ["--ws-auth", "capability-token", "--ws-token-file", str(path)]
    async with running_server("ours", tmp_path, extra=flags) as server:
        code, _, _ = await run_cli("info", server.url, env=cli_env(EXECSERVER_TOKEN=TOKEN))
        assert code == 0
        assert f"Warning: {path} is readable by every user (mode 0644)" in server.stderr()


async def test_token_new_and_sha256(tmp_path: Path) -> None:
    """`token new` prints a fresh 43-character token; `--out` writes it 0600 (refusing to
    overwrite without --force) and prints its digest, which `token sha256` and a server with
    --ws-token-sha256 agree on."""
    code, first, _ = await run_cli("token", "new")
    code2, second, _ = await run_cli("token", "new")
    assert code == code2 == 0 and first != second and len(first.strip()) == 43
    out = tmp_path / "token"
    code, stdout, _ = await run_cli("token", "new", "--out", str(out))
    token = out.read_text().strip()
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert (code, stdout) == (0, f"sha256:{digest}\n".encode())
    assert out.stat().st_mode & 0o777 == 0o600
    code, _, stderr = await run_cli("token", "new", "--out", str(out))
    assert (code, stderr) == (1, f"execserver: {out} exists (--force replaces it)\n".encode())
    code, _, _ = await run_cli("token", "new", "--out", str(out), "--force")
    assert code == 0 and out.read_text().strip() != token
    code, stdout, _ = await run_cli("token", "sha256", str(out))
    digest = stdout.decode().strip()
    assert digest == hashlib.sha256(out.read_text().strip().encode()).hexdigest()
    async with running_server(
        "ours", tmp_path, extra=["--ws-auth", "capability-token", "--ws-token-sha256", digest]
    ) as server:
        code, _, stderr = await run_cli("info", server.url, "--token-file", str(out))
        assert code == 0, stderr
