"""The stdio transport of the client: closing kills the server's group; losing it is final."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid

import pytest

from execserver import event_loop
from execserver.client.client import ClientState, ExecServerClient
from execserver.environment import ProcessFailed
from execserver.errors import ConnectError, RecoveryFailed
from execserver.remote import remote_environment
from tests.conftest import TIME
from tests.harness.procfs import sleeper, wait_all_dead, wait_for_marked

SERVE_STDIO = ["-m", "execserver", "serve", "--listen", "stdio"]


async def test_stdio_close_ends_the_server_and_its_processes() -> None:
    """Closing a stdio client stops the server it spawned, and with it every process tree."""
    marker = f"stdio-{uuid.uuid4().hex}"
    client = await ExecServerClient.spawn(sys.executable, SERVE_STDIO)
    env = remote_environment(client)
    await env.process.start(sleeper(marker))
    pids = await wait_for_marked(marker, 1)
    assert len(pids) == 1
    await env.aclose()
    assert await wait_all_dead(pids, 10 * TIME)


def test_stdio_client_on_uvloop() -> None:
    """The client spawns a stdio server and runs a command on a uvloop loop too (uvloop's
    transports are not asyncio's classes: an isinstance check once failed every spawn)."""

    async def run() -> None:
        client = await ExecServerClient.spawn(sys.executable, SERVE_STDIO)
        async with remote_environment(client) as env:
            result = await env.process.run(["sh", "-c", "echo on-uvloop"])
            assert result.stdout == b"on-uvloop\n"

    event_loop.run(run(), event_loop.loop_factory("uvloop"))


async def test_stdio_loss_is_final() -> None:
    """A stdio server that dies cannot be resumed: the client fails, its processes too."""
    marker = f"stdio-lost-{uuid.uuid4().hex}"
    client = await ExecServerClient.spawn(sys.executable, SERVE_STDIO)
    async with remote_environment(client) as env:
        process = await env.process.start(sleeper(marker))
        orphans = await wait_for_marked(marker, 1)
        server_pid = client._conn.channel.pid  # type: ignore[union-attr]
        os.kill(server_pid, signal.SIGKILL)
        state = await asyncio.wait_for(client.wait_for_state(ClientState.FAILED), 10 * TIME)
        assert state is ClientState.FAILED
        with pytest.raises(ProcessFailed):
            await process.wait()
        with pytest.raises(RecoveryFailed):
            await env.process.run(["true"])
    for pid in orphans:  # the killed server could not take its children with it
        os.kill(pid, signal.SIGKILL)


async def test_stdio_program_that_cannot_start() -> None:
    """A missing program is a ConnectError naming it."""
    with pytest.raises(ConnectError, match="/nonexistent/server"):
        await ExecServerClient.spawn("/nonexistent/server")
