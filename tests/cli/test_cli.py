"""The command line: listen URL validation, the printed URL, signals, stdin close, reaping."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from execserver.cli.serve import ListenAddress, ListenError, parse_listen_url
from tests.conftest import TIME, require_reference
from tests.harness.procfs import (
    is_alive,
    sleeper,
    stat_fields,
    wait_all_dead,
    wait_for_marked,
    zombies_of,
)
from tests.harness.servers import ours_command, reference_command, start_server
from tests.harness.wire import WireClient

BAD_URLS = [
    "ws://localhost:1",
    "ws://127.0.0.1",
    "http://x",
    "stdio://x",
    "ws://127.0.0.1:99999",
    "ws://1.2.3.4:5/path",
    "ws://127.0.0.1:0?x",
    "",
    "WS://127.0.0.1:0",
    "ws://127.0.0.1:abc",
    "ws://127.0.0.1:0/",
    "ws://[::1]",
]


def test_cli_parse_listen_url_accepts() -> None:
    """Literal IPv4/IPv6 with a port, and stdio, are accepted."""
    assert parse_listen_url("ws://127.0.0.1:0") == ListenAddress("127.0.0.1", 0)
    assert parse_listen_url("ws://[::1]:8765") == ListenAddress("::1", 8765)
    assert parse_listen_url("ws://0.0.0.0:1") == ListenAddress("0.0.0.0", 1)
    assert parse_listen_url("stdio").is_stdio
    assert parse_listen_url("stdio://").is_stdio
    assert parse_listen_url("wss://127.0.0.1:8443") == ListenAddress("127.0.0.1", 8443, tls=True)
    with pytest.raises(ListenError, match="expected `wss://IP:PORT`"):
        parse_listen_url("wss://localhost:1")


@pytest.mark.parametrize("url", BAD_URLS)
def test_cli_parse_listen_url_rejects(url: str) -> None:
    """Everything else is rejected with one of the reference's two messages."""
    with pytest.raises(ListenError) as info:
        parse_listen_url(url)
    assert str(info.value) in (
        f"invalid websocket --listen URL `{url}`; expected `ws://IP:PORT`",
        f"unsupported --listen URL `{url}`; expected `ws://IP:PORT` or `stdio`",
    )


def _first_stderr_line(command: list[str]) -> tuple[int, str]:
    result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=20)
    return result.returncode, result.stderr.decode().splitlines()[0] if result.stderr else ""


@pytest.mark.reference
@pytest.mark.parametrize("url", BAD_URLS)
def test_cli_bad_listen_url_matches_reference(url: str) -> None:
    """Exit status and first stderr line equal the reference's for every bad --listen URL."""
    require_reference()
    assert _first_stderr_line(ours_command(url)) == _first_stderr_line(reference_command(url))


def test_cli_rejects_zero_concurrent_requests() -> None:
    """--concurrent-requests must be at least 1 (usage error, status 2)."""
    result = subprocess.run(
        [*ours_command(), "--concurrent-requests", "0"], capture_output=True, timeout=20
    )
    assert result.returncode == 2
    assert b"number would be zero for non-zero type" in result.stderr


TCP_UPSTREAM_ERRORS = [
    ("foo", "missing port"),
    ("h:0", "TCP upstream proxy port must be nonzero"),
    ("h:99999", "parse port as u16"),
    ("h:x", "parse port as u16"),
]


@pytest.mark.parametrize(("value", "message"), TCP_UPSTREAM_ERRORS)
def test_cli_rejects_bad_tcp_upstream_proxy(value: str, message: str) -> None:
    """--tcp-upstream-proxy HOST:PORT: a usage error (status 2) in the reference's words."""
    command = ours_command(extra=["--tcp-upstream-proxy", value])
    result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=20)
    assert result.returncode == 2
    [line] = result.stderr.decode().splitlines()[-1:]
    assert f"invalid value {value!r}: {message}" in line, line


@pytest.mark.reference
@pytest.mark.parametrize(("value", "message"), TCP_UPSTREAM_ERRORS)
def test_cli_rejects_bad_tcp_upstream_proxy_reference(value: str, message: str) -> None:
    require_reference()
    command = reference_command(extra=["--tcp-upstream-proxy", value])
    result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=20)
    assert result.returncode == 2
    assert message in result.stderr.decode()


@pytest.mark.parametrize("kind", ["ours", "reference"])
async def test_cli_accepts_the_0171_network_flags(kind: str, tmp_path: Path) -> None:
    """`--linux-sandbox-transparent-tcp` and a valid `--tcp-upstream-proxy` start the server."""
    if kind == "reference":
        require_reference()
    extra = ["--linux-sandbox-transparent-tcp", "--tcp-upstream-proxy", "[::1]:3128"]
    server = await start_server(kind, tmp_path, extra=extra)
    try:
        assert server.url.startswith("ws://127.0.0.1:")
    finally:
        await server.stop()


def test_cli_rejects_bad_exit_on_stdin_close_env() -> None:
    """CODEX_EXEC_SERVER_EXIT_ON_STDIN_CLOSE must be true or false."""
    env = {**os.environ, "CODEX_EXEC_SERVER_EXIT_ON_STDIN_CLOSE": "yes"}
    result = subprocess.run(ours_command(), capture_output=True, timeout=20, env=env)
    assert result.returncode == 2
    assert b"invalid value 'yes'" in result.stderr


async def test_cli_prints_exactly_the_url(tmp_path: object) -> None:
    """stdout carries one line, the bound URL with the real port, and nothing else."""
    process = await asyncio.create_subprocess_exec(
        *ours_command(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    assert process.stdout is not None
    line = (await process.stdout.readline()).decode()
    assert line.startswith("ws://127.0.0.1:") and line.endswith("\n")
    assert int(line.strip().rsplit(":", 1)[1]) > 0
    async with await WireClient.connect(line.strip()) as client:
        await client.initialize()
    process.send_signal(signal.SIGTERM)
    rest = await process.stdout.read()
    assert await process.wait() == 0
    assert rest == b""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_cli_signal_kills_all_trees_and_exits_zero(tmp_path: object, sig: int) -> None:
    """SIGTERM/SIGINT: exit 0, every managed tree (even a setsid grandchild) is gone."""
    from pathlib import Path

    server = await start_server("ours", Path(str(tmp_path)))
    marker = f"sig-{uuid.uuid4().hex}"
    inner = " ".join(f"'{arg}'" for arg in sleeper(marker))
    client = await WireClient.connect(server.url)
    await client.initialize()
    for index, argv in enumerate(
        [sleeper(marker), ["sh", "-c", f"setsid {inner} & wait"], ["sh", "-c", f"{inner} & wait"]]
    ):
        params = {
            "processId": f"p{index}",
            "argv": argv,
            "cwd": "file:///tmp",
            "env": {"PATH": "/usr/bin:/bin"},
            "tty": index == 2,
        }
        assert "result" in await client.request("process/start", params)
    pids = await wait_for_marked(marker, 5)
    assert len(pids) == 5
    assert await server.stop(sig) == 0
    assert await wait_all_dead(pids, timeout=5)
    assert await client.wait_closed() == 1006
    await client.close()


async def test_cli_exit_on_stdin_close() -> None:
    """With --exit-on-stdin-close the server exits 0 when its stdin reaches EOF."""
    process = await asyncio.create_subprocess_exec(
        *ours_command(extra=["--exit-on-stdin-close"]),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdin is not None and process.stdout is not None
    await process.stdout.readline()
    process.stdin.close()
    assert await asyncio.wait_for(process.wait(), 10) == 0


@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
async def test_cli_reaps_orphaned_grandchildren(tmp_path: Path, event_loop: str) -> None:
    """Descendants orphaned by their parent are re-parented to the server and reaped as soon
    as they exit, on either event loop (uvloop keeps SIGCHLD for itself: local/reaper.py)."""
    server = await start_server("ours", tmp_path, extra=["--event-loop", event_loop])
    pid_file, go = tmp_path / "grandchild.pid", tmp_path / "go"
    async with await WireClient.connect(server.url) as client:
        await client.initialize()
        params = {
            "processId": "orphaner",
            "argv": [
                "sh",
                "-c",
                f"(while [ ! -e {go} ]; do sleep 0.01; done; exit 3) > /dev/null 2>&1 & "
                f"echo $! > {pid_file}",
            ],
            "cwd": "file:///tmp",
            "env": {"PATH": "/usr/bin:/bin"},
            "tty": False,
        }
        await client.request("process/start", params)
        await client.process_events("orphaner")  # the shell has exited
        grandchild = int(pid_file.read_text())
        await until(lambda: parent_of(grandchild) == server.pid)  # orphaned, re-parented to us
        go.touch()
        await until(lambda: not os.path.exists(f"/proc/{grandchild}"))  # exited and reaped
        assert zombies_of(server.pid) == []
        assert is_alive(server.pid)
    assert await server.stop() == 0


def parent_of(pid: int) -> int | None:
    fields = stat_fields(pid)
    return None if fields is None else int(fields[1])


async def until(condition: Callable[[], bool]) -> None:
    """Wait for `condition` (checked every 10 ms) with a deadline."""
    deadline = asyncio.get_running_loop().time() + 10 * TIME
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.01)


def test_cli_serve_event_loop_uvloop_missing(tmp_path: Path) -> None:
    """`--event-loop uvloop` without uvloop is one line and exit 1; `auto` falls back to the
    standard loop and serves."""
    blocker = tmp_path / "blocked"
    blocker.mkdir()
    (blocker / "uvloop.py").write_text("raise ImportError('uvloop blocked by the test')\n")
    env = {**os.environ, "PYTHONPATH": f"{blocker}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    refused = subprocess.run(
        ours_command(extra=["--event-loop", "uvloop"]), env=env, capture_output=True, timeout=30
    )
    assert refused.returncode == 1
    assert refused.stderr.decode().splitlines() == [
        "Error: uvloop is not installed (use --event-loop asyncio)"
    ]
    with subprocess.Popen(
        ours_command(extra=["--event-loop", "auto"]),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as server:
        try:
            assert server.stdout is not None
            assert server.stdout.readline().startswith(b"ws://127.0.0.1:")
        finally:
            server.terminate()
            server.wait(timeout=30)


def test_cli_python_module_entry_point() -> None:
    """`python -m execserver --help` works."""
    result = subprocess.run(
        [sys.executable, "-m", "execserver", "serve", "--help"], capture_output=True, timeout=20
    )
    assert result.returncode == 0 and b"--listen" in result.stdout
