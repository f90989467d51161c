"""`execserver run -t` terminal size, `run --detach`, `ps`, `attach` (replay, follow, stdin,
Ctrl-C detaches, Ctrl-\\ kills) and `kill`, through real terminals against our server."""

from __future__ import annotations

import hashlib
import json
import random
import sys

from tests.cli.test_client_commands import CLI, cli_env, run_cli
from tests.conftest import ServerProcess
from tests.harness.terminal import Terminal
from tests.server.test_terminal_size import SIZE_REPORTER

# Prints "ready", echoes stdin lines as "got:<line>", exits 5 at EOF.
ECHO = (
    "import sys\n"
    "print('ready', flush=True)\n"
    "for line in sys.stdin: print('got:' + line.strip(), flush=True)\n"
    "sys.exit(5)\n"
)


async def detach(server: ServerProcess, *argv: str) -> str:
    code, stdout, stderr = await run_cli("run", "--detach", server.url, "--", *argv)
    assert code == 0, stderr
    handle = stdout.decode().strip()
    assert len(handle) == 8 and stderr == b""
    return handle


async def listed(server: ServerProcess) -> dict[str, dict[str, object]]:
    code, stdout, stderr = await run_cli("ps", "--json", server.url)
    assert code == 0, stderr
    return {p["handle"]: p for p in json.loads(stdout)}


async def test_run_tty_starts_with_the_local_size_and_follows_it(ours: ServerProcess) -> None:
    """`run -t` gives the remote terminal the local size and resizes it on SIGWINCH."""
    argv = [*CLI, "run", "-t", ours.url, "--", sys.executable, "-c", SIZE_REPORTER]
    async with Terminal.spawn(argv, cli_env(), size=(31, 97)) as term:
        await term.expect(b"size=31x97")
        term.resize(52, 141)
        await term.expect(b"size=52x141")
        term.send(b"\x04")
        await term.wait()


async def test_detach_ps_attach_to_the_end(ours: ServerProcess) -> None:
    """`run --detach` prints a handle and returns; `ps` lists it; `attach` replays from the
    start, forwards stdin to EOF and exits with the process's exit code."""
    handle = await detach(ours, sys.executable, "-c", ECHO)
    info = (await listed(ours))[handle]
    assert info["state"] == "running" and info["detached"] is True
    code, stdout, _ = await run_cli("ps", ours.url)
    assert handle in stdout.decode() and "HANDLE" in stdout.decode()
    code, stdout, stderr = await run_cli("attach", ours.url, handle, stdin=b"one\ntwo\n")
    assert (code, stdout) == (5, b"ready\ngot:one\ngot:two\n"), stderr
    assert (await listed(ours))[handle]["exitCode"] == 5
    code, stdout, _ = await run_cli("attach", ours.url, handle, "--tail", "8")
    assert (code, stdout) == (5, b"got:two\n")


async def test_attach_ctrl_c_detaches_and_kill_ends(ours: ServerProcess) -> None:
    """Ctrl-C detaches the viewer (the process runs on); `kill` ends it."""
    handle = await detach(ours, "sh", "-c", "echo ready; exec sleep 60")
    async with Terminal.spawn([*CLI, "attach", ours.url, handle], cli_env()) as term:
        await term.expect(b"ready")
        term.send(b"\x03")
        assert await term.wait() == 0
        assert b"detached" in term.output
    assert (await listed(ours))[handle]["state"] == "running"
    code, _, stderr = await run_cli("kill", ours.url, handle)
    assert code == 0, stderr
    code, _, stderr = await run_cli("attach", ours.url, handle)
    assert code == 137, stderr


async def test_attach_tty_ctrl_backslash_kills(ours: ServerProcess) -> None:
    """With -t, keys go to the process; Ctrl-\\ kills it and attach exits with its code."""
    code, stdout, stderr = await run_cli(
        "run",
        "--detach",
        "-t",
        ours.url,
        "--",
        "sh",
        "-c",
        "echo ready; read x; echo got-$x; sleep 60",
    )
    assert code == 0, stderr
    handle = stdout.decode().strip()
    async with Terminal.spawn([*CLI, "attach", "-t", ours.url, handle], cli_env()) as term:
        await term.expect(b"ready")  # replayed once the local terminal is raw
        term.send(b"hi\r")
        await term.expect(b"got-hi")
        term.send(b"\x1c")
        assert await term.wait() == 137


async def test_attach_and_kill_unknown_handle(ours: ServerProcess) -> None:
    """An unknown handle is one line naming the executor, and exit 1 (docs/cli.md)."""
    for command in ("attach", "kill"):
        code, stdout, stderr = await run_cli(command, ours.url, "deadbeef")
        assert (code, stdout) == (1, b"")
        assert stderr == f"execserver: {ours.url}: unknown process handle deadbeef\n".encode()


async def test_attach_pipes_binary_stdin_byte_for_byte(ours: ServerProcess) -> None:
    """A non-tty `attach` forwards a piped 1 MiB of binary stdin, in order and whole, then its
    EOF; it exits with the process's exit code."""
    digest = "import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())"
    handle = await detach(ours, sys.executable, "-c", digest + "; sys.exit(3)")
    data = random.Random(19).randbytes(1024 * 1024)
    code, stdout, stderr = await run_cli("attach", ours.url, handle, stdin=data)
    assert (code, stdout.decode()) == (3, hashlib.sha256(data).hexdigest() + "\n"), stderr
