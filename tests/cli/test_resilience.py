"""The CLI under stress, through real terminals and pipes: sessions released after each call,
a lost executor (status line, resume, give up), Ctrl-C anywhere and a closed stdout without a
traceback."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from pathlib import Path

from tests.cli.support import CLI, cli_env, no_traceback, run_cli
from tests.conftest import TIME, ServerProcess
from tests.harness.faults import CuttingProxy
from tests.harness.servers import running_server, start_server
from tests.harness.terminal import Terminal


async def test_each_call_releases_its_session(tmp_path: Path) -> None:
    """With room for 3 sessions, 12 `run`s, an `info` and a `cp` in a row all succeed: every
    call closes its session (session/close) instead of leaving it detached for 80 s."""
    (tmp_path / "file").write_text("x\n")
    async with running_server("ours", tmp_path, extra=["--max-sessions", "3"]) as server:
        for index in range(12):
            code, stdout, stderr = await run_cli("run", server.url, "--", "echo", str(index))
            assert (code, stdout) == (0, f"{index}\n".encode()), stderr
        code, _, stderr = await run_cli("info", server.url)
        assert code == 0, stderr
        code, _, stderr = await run_cli(
            "cp", f"{server.url}:{tmp_path}/file", f"{server.url}:{tmp_path}/copy"
        )
        assert code == 0, stderr


async def test_lost_connection_is_announced_resumed_and_no_key_is_lost(
    ours: ServerProcess,
) -> None:
    """`run -t` through a link that breaks and refuses reconnects for a while: a status line
    at once, keys typed meanwhile reach the remote shell after the resume, and the session
    goes on to a normal exit."""
    port = int(ours.url.rsplit(":", 1)[1])
    async with CuttingProxy(port) as proxy:
        url = f"ws://127.0.0.1:{proxy.port}"
        argv = [*CLI, "run", "-t", "-e", "PS1=remote> ", url, "--", "sh"]
        async with Terminal.spawn(argv, cli_env()) as term:
            await term.expect(b"remote> ")
            proxy.refuse_for(1.0 * TIME)
            assert proxy.cut()
            await term.expect(f"execserver: lost the connection to {url}; reconnecting".encode())
            term.send(b"echo typed-$((20 + 22))\r")
            await term.expect(f"execserver: reconnected to {url}\r\n".encode())
            await term.expect(b"typed-42")
            term.send(b"exit 5\r")
            assert await term.wait() == 5


async def test_executor_gone_for_good_restores_the_terminal_first(tmp_path: Path) -> None:
    """The server stops while `run -t` runs: the status line comes at once, and after
    --reconnect-timeout the final message is printed on a cooked terminal (its newline is
    translated to CR LF), exit 255, and `stty` shows the terminal sane."""
    server = await start_server("ours", tmp_path)
    cli = " ".join(CLI)
    script = (
        f"{cli} run -t --reconnect-timeout 1 {server.url} -- sh -c 'echo ready; exec sleep 60';"
        " echo CLI-EXIT=$?; stty -a"
    )
    try:
        async with Terminal.spawn(["sh", "-c", script], cli_env()) as term:
            await term.expect(b"ready")
            await server.stop()
            await term.expect(b"reconnecting for up to 1 s")
            await term.expect(b"CLI-EXIT=255")
            assert await term.wait() == 0
            output = bytes(term.output)
            final = re.search(rb"execserver: ([^\r\n]*could not reconnect[^\r\n]*)(\r?\n)", output)
            assert final is not None, output
            assert final.group(2) == b"\r\n"  # printed after the terminal left raw mode
            settings = output.split(b"CLI-EXIT=255", 1)[1]
            assert b" icanon" in settings and b" echo" in settings and b"-icanon" not in settings
            no_traceback(output)
    finally:
        await server.stop()


async def test_pipes_report_the_loss_too(tmp_path: Path) -> None:
    """Without a terminal: the same status line, then one line and 255."""
    server = await start_server("ours", tmp_path)
    process = await asyncio.create_subprocess_exec(
        *CLI, "run", "--reconnect-timeout", "0", server.url, "--", "sh", "-c",
        "echo ready; exec sleep 60",
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env(),
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    try:
        assert await asyncio.wait_for(process.stdout.readline(), 30 * TIME) == b"ready\n"
        await server.stop()
        stderr = await asyncio.wait_for(process.stderr.read(), 30 * TIME)
        assert await process.wait() == 255
        lines = stderr.decode().splitlines()
        assert lines[0] == f"execserver: lost the connection to {server.url}"
        assert len(lines) == 2 and lines[1].startswith(f"execserver: {server.url}: ")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await server.stop()


async def test_ctrl_c_while_connecting_exits_130_quietly() -> None:
    """An executor that accepts but never answers: Ctrl-C in the terminal ends `info` with
    130 and not a word of traceback."""
    accepted = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        accepted.set()

    silent = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        async with Terminal.spawn([*CLI, "info", f"ws://127.0.0.1:{port}"], cli_env()) as term:
            await asyncio.wait_for(accepted.wait(), 30 * TIME)
            term.send(b"\x03")
            assert await term.wait() == 130
            no_traceback(bytes(term.output))
    finally:
        for writer in held:
            writer.close()
        silent.close()
        await silent.wait_closed()


async def test_closed_stdout_is_141_without_a_traceback(ours: ServerProcess) -> None:
    """`execserver info URL | head -3`, made deterministic: stdout is a pipe whose reader is
    already gone. Also `run` with endless output into `head -1`, through a real shell pipe."""
    for args in (["info", ours.url], ["run", ours.url, "--", "echo", "hi"], ["token", "new"]):
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            process = await asyncio.create_subprocess_exec(
                *CLI, *args, stdout=write_end, stderr=subprocess.PIPE, env=cli_env()
            )
        finally:
            os.close(write_end)
        _, stderr = await asyncio.wait_for(process.communicate(), 30 * TIME)
        assert process.returncode == 141, (args, stderr)
        assert stderr == b"", stderr
    cli = " ".join(CLI)
    script = f"{cli} run {ours.url} -- yes | head -1; echo status=${{PIPESTATUS[0]}}"
    shell = await asyncio.create_subprocess_exec(
        "bash", "-c", script, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env()
    )
    stdout, stderr = await asyncio.wait_for(shell.communicate(), 60 * TIME)
    assert (stdout, stderr) == (b"y\nstatus=141\n", b"")
