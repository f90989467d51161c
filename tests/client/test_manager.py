"""EnvironmentManager: environments.toml environments, connected lazily and shared."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from execserver.client.environments import EnvironmentsError, parse_environments
from execserver.errors import ConnectError
from execserver.manager import EnvironmentManager
from tests.conftest import TIME, ServerProcess
from tests.harness.faults import CuttingProxy


def manager_for(text: str, home: Path) -> EnvironmentManager:
    return EnvironmentManager(parse_environments(text, codex_home=home))


async def test_manager_shares_one_connection_attempt(ours: ServerProcess, tmp_path: Path) -> None:
    """Concurrent get()s of a URL environment share one connection; start() connects early."""
    port = int(ours.url.rsplit(":", 1)[1])
    async with CuttingProxy(port) as proxy:
        text = f'[[environments]]\nid = "dev"\nurl = "ws://127.0.0.1:{proxy.port}"\n'
        async with manager_for(text, tmp_path) as manager:
            manager.start()
            environments = await asyncio.gather(*(manager.get("dev") for _ in range(5)))
            assert all(e is environments[0] for e in environments)
            assert proxy.connections == 1
            assert (await environments[0].process.run(["echo", "ok"])).stdout == b"ok\n"


async def test_manager_stdio_environment_starts_on_first_use(tmp_path: Path) -> None:
    """A stdio environment is spawned only when first asked for, with its env and cwd."""
    marker = tmp_path / "started"
    script = (
        f"import os, runpy, sys; open({str(marker)!r}, 'w').write(os.getcwd()); "
        "sys.argv = ['execserver', 'serve', '--listen', 'stdio']; "
        "runpy.run_module('execserver', run_name='__main__')"
    )
    (tmp_path / "work").mkdir()
    text = (
        '[[environments]]\nid = "child"\n'
        f'program = "{sys.executable}"\nargs = ["-c", "{script}"]\ncwd = "work"\n'
        'env = { FROM_TOML = "yes" }\n'
    )
    async with manager_for(text.replace("\\", "\\\\"), tmp_path) as manager:
        manager.start()
        await asyncio.sleep(0.2 * TIME)
        assert not marker.exists()
        env = await manager.get("child")
        assert marker.read_text() == str(tmp_path / "work")
        result = await env.process.run(["sh", "-c", "echo $FROM_TOML"])
        assert result.stdout == b"yes\n"


async def test_manager_local_and_default(tmp_path: Path) -> None:
    """`local` is this host and the default when nothing else is configured."""
    async with manager_for("", tmp_path) as manager:
        env = await manager.get()
        assert env is await manager.get("local")
        assert (await env.process.run(["echo", "here"])).stdout == b"here\n"


async def test_manager_unknown_and_missing_default(tmp_path: Path) -> None:
    """Unknown ids and a missing default are EnvironmentsErrors."""
    async with manager_for('default = "none"\n', tmp_path) as manager:
        with pytest.raises(EnvironmentsError, match="unknown turn environment id `nope`"):
            await manager.get("nope")
        with pytest.raises(EnvironmentsError, match="no default"):
            await manager.get()


async def test_manager_failed_connect_is_retried_on_next_get(
    ours: ServerProcess, tmp_path: Path
) -> None:
    """A connection failure is reported, not cached: a later get() connects."""
    port = int(ours.url.rsplit(":", 1)[1])
    async with CuttingProxy(port) as proxy:
        text = f'[[environments]]\nid = "dev"\nurl = "ws://127.0.0.1:{proxy.port}"\n'
        async with manager_for(text, tmp_path) as manager:
            proxy.refuse_for(60)
            with pytest.raises(ConnectError):
                await manager.get("dev")
            proxy.refuse_for(0)
            env = await manager.get("dev")
            assert (await env.process.run(["true"])).exit_code == 0


async def test_manager_sends_the_bearer_token(tmp_path: Path) -> None:
    """auth_bearer_token goes out as `Authorization: Bearer <token>` on the upgrade."""
    seen = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if not seen.done():
            seen.set_result(head)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    text = (
        f'[[environments]]\nid = "dev"\nurl = "ws://127.0.0.1:{port}"\n'
        'auth_bearer_token = "tok123"\nconnect_timeout_sec = 2\n'
    )
    async with server, manager_for(text, tmp_path) as manager:
        with pytest.raises(ConnectError):
            await manager.get("dev")
    assert b"\r\nAuthorization: Bearer tok123\r\n" in await seen
