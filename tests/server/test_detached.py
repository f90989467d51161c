"""Processes that outlive their sessions: detach, list, attach (replay, tail, several viewers),
kill by handle, principals, limits, retention, and the output journal behind the replay."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from execserver.environment.process import ExecProcess, ExitedEvent, OutputGap
from execserver.errors import InvalidRequest
from execserver.protocol.process import ProcessOutputChunk
from execserver.remote import connect_environment
from execserver.server.app import ExecServer
from execserver.server.auth import AuthFailure
from tests.conftest import TIME
from tests.harness.polling import poll, poll_async
from tests.harness.procfs import wait_all_dead
from tests.harness.wire import WireClient, process_params
from tests.server.conftest import StartServer

MiB = 1024 * 1024

# Echoes each stdin line as "<n>:<line>", after printing "ready"; exits 7 at EOF.
ECHO = (
    "import sys\n"
    "print('ready', flush=True)\n"
    "for n, line in enumerate(sys.stdin, 1):\n"
    "    print(f'{n}:{line.strip()}', flush=True)\n"
    "sys.exit(7)\n"
)


class BearerIsPrincipal:
    """Test authenticator: the bearer token names the principal."""

    def authenticate(self, authorization: str | None) -> str:
        if not authorization or not authorization.startswith("Bearer "):
            raise AuthFailure("missing websocket bearer token")
        return authorization.removeprefix("Bearer ")


async def output_until(process: ExecProcess, text: bytes) -> bytes:
    """Iterate `process` (once) until its output contains `text`; returns the output."""
    seen = b""
    async with asyncio.timeout(20 * TIME):
        async for event in process:
            if isinstance(event, ProcessOutputChunk):
                seen += event.chunk
                if text in seen:
                    return seen
    raise AssertionError(f"{text!r} never came; output {seen!r}")


async def drain(process: ExecProcess) -> tuple[bytes, int, list[OutputGap]]:
    """Everything until the close: output, exit code, gaps."""
    data = []
    code = -1
    gaps = []
    async with asyncio.timeout(60 * TIME):
        async for event in process:
            if isinstance(event, ProcessOutputChunk):
                data.append(event.chunk)
            elif isinstance(event, ExitedEvent):
                code = event.exit_code
            elif isinstance(event, OutputGap):
                gaps.append(event)
    return b"".join(data), code, gaps


async def sessions_gone(server: ExecServer) -> None:
    await poll(lambda: not len(server.registry), what="the sessions to expire")


async def start_detached(url: str, argv: list[str], **kwargs: object) -> str:
    """Start `argv` detached from a client that then goes away; returns the handle."""
    async with await connect_environment(url, **kwargs) as env:  # type: ignore[arg-type]
        process = await env.process.start(argv, detach=True, pipe_stdin=True)
        assert process.handle
        return process.handle


async def test_detached_process_outlives_its_session(start_server: StartServer) -> None:
    """A detached process survives its client and session; another client lists it, attaches
    (replay from the start), writes to it and sees it end."""
    server, url = await start_server(session_ttl_s=0.1)
    handle = await start_detached(url, [sys.executable, "-c", ECHO])
    await sessions_gone(server)
    async with await connect_environment(url) as env:
        (info,) = await env.process.list_processes()
        assert (info.handle, info.state, info.detached, info.tty) == (
            handle,
            "running",
            True,
            False,
        )
        assert info.argv == [sys.executable, "-c", ECHO]
        attached = await env.process.attach(handle)
        assert attached.handle == handle
        assert (await output_until(attached, b"ready")).startswith(b"ready")
        assert await attached.write(b"hello\n") == "accepted"
        await attached.close_stdin()
        assert await attached.wait() == 7
        (info,) = await env.process.list_processes()
        assert info.state in ("exited", "closed") and info.exit_code == 7
        assert info.output_bytes == len(b"ready\n1:hello\n")


async def test_two_attachers_see_identical_output_and_both_write(
    start_server: StartServer,
) -> None:
    """Two viewers see the same bytes; each one's writes are applied exactly once."""
    _, url = await start_server()
    handle = await start_detached(url, [sys.executable, "-c", ECHO])
    async with (
        await connect_environment(url) as first_env,
        await connect_environment(url) as second_env,
    ):
        first = await first_env.process.attach(handle)
        second = await second_env.process.attach(handle)
        outputs = [asyncio.ensure_future(drain(first)), asyncio.ensure_future(drain(second))]
        for index in range(20):
            viewer = first if index % 2 else second
            assert await viewer.write(b"line%d\n" % index) == "accepted"
            await asyncio.sleep(0)
        await first.close_stdin()
        (data1, code1, _), (data2, code2, _) = await asyncio.gather(*outputs)
        assert data1 == data2
        assert code1 == code2 == 7
        lines = data1.decode().split()
        assert lines[0] == "ready"
        assert sorted(line.split(":")[1] for line in lines[1:]) == sorted(
            f"line{i}" for i in range(20)
        )


async def test_attach_from_seq_and_tail(start_server: StartServer) -> None:
    """`after_seq` replays from a seq; `tail_bytes` replays exactly the last N bytes."""
    _, url = await start_server()
    # Two halves, the second once the first was read: the output is at least two chunks (a
    # burst can be read as one), so a replay after the first chunk has something to replay.
    code = (
        "import sys\n"
        "for i in range(100): print(f'{i:04d}', flush=True)\n"
        "sys.stdin.readline()\n"
        "for i in range(100, 200): print(f'{i:04d}', flush=True)\n"
        "sys.stdin.read()"
    )
    handle = await start_detached(url, [sys.executable, "-c", code])
    async with await connect_environment(url) as env:
        first_half = await env.process.attach(handle)
        await output_until(first_half, b"0099\n")
        await first_half.write(b"go\n")
        full = await output_until(await env.process.attach(handle), b"0199\n")
        assert full == b"".join(b"%04d\n" % i for i in range(200))
        tail = await env.process.attach(handle, tail_bytes=12)
        assert await output_until(tail, b"0199\n") == full[-12:]
        reader = await env.process.attach(handle)
        first = await reader.read(0, max_bytes=1)
        after = first.chunks[0].seq
        rest = await output_until(await env.process.attach(handle, after_seq=after), b"0199\n")
        assert first.chunks[0].chunk + rest == full
        await reader.detach()
        assert await env.process.kill(handle) is True


async def test_handles_belong_to_their_principal(start_server: StartServer) -> None:
    """Another principal cannot list, attach or kill a process: its handle does not exist."""
    _, url = await start_server(authenticator=BearerIsPrincipal())
    handle = await start_detached(url, ["sleep", "30"], bearer_token="alice")
    async with await connect_environment(url, bearer_token="bob") as bob:
        assert await bob.process.list_processes() == []
        with pytest.raises(InvalidRequest, match=f"unknown process handle {handle}"):
            await bob.process.attach(handle)
        with pytest.raises(InvalidRequest, match=f"unknown process handle {handle}"):
            await bob.process.kill(handle)
    async with await connect_environment(url, bearer_token="alice") as alice:
        (info,) = await alice.process.list_processes()
        assert info.handle == handle
        assert await alice.process.kill(handle) is True


async def test_detached_limits(start_server: StartServer) -> None:
    """Detached processes per principal and attachers per process are capped, with clear
    errors; a failed detached start starts nothing."""
    _, url = await start_server(max_detached_per_principal=2, max_attachers=1)
    handles = [await start_detached(url, ["sleep", "30"]) for _ in range(2)]
    async with await connect_environment(url) as env:
        with pytest.raises(InvalidRequest, match=r"too many detached processes \(limit 2"):
            await env.process.start(["sleep", "30"], detach=True)
        assert len(await env.process.list_processes()) == 2
        await env.process.attach(handles[0])
        async with await connect_environment(url) as other:
            with pytest.raises(InvalidRequest, match=r"too many attachers .* \(limit 1\)"):
                await other.process.attach(handles[0])
        for handle in handles:
            await env.process.kill(handle)


async def test_detached_retention_then_gone(start_server: StartServer) -> None:
    """A finished detached process stays listable for the retention, then leaves the server."""
    server, url = await start_server(detached_retention_s=0.3 * TIME, session_ttl_s=0.1)
    handle = await start_detached(url, ["sh", "-c", "echo done"])
    async with await connect_environment(url) as env:

        async def closed() -> bool:
            return (await env.process.list_processes())[0].state == "closed"

        async def gone() -> bool:
            return not await env.process.list_processes()

        await poll_async(closed, what="the process to close")
        await poll_async(gone, what="the retention to end")
        with pytest.raises(InvalidRequest, match="unknown process handle"):
            await env.process.attach(handle)
    assert len(server.host.directory) == 0


async def test_session_processes_are_listed_and_die_with_their_session(
    start_server: StartServer,
) -> None:
    """A process started without `detach` is listed too, and dies with its session; a client
    attached to it sees it end."""
    _, url = await start_server(session_ttl_s=0.2)
    owner = await connect_environment(url)
    process = await owner.process.start(["sleep", "30"])
    async with await connect_environment(url) as env:
        (info,) = await env.process.list_processes()
        assert info.detached is False
        viewer = await env.process.attach(info.handle)
        await owner.aclose()  # without terminating: the session expires and kills it
        _, code, _ = await drain(viewer)
        assert code == 128 + 9
    assert await wait_all_dead([info.pid])
    assert process.handle is None


async def test_detach_after_start_keeps_the_process(start_server: StartServer) -> None:
    """`detach()` of a process this session started lets it outlive the session."""
    server, url = await start_server(session_ttl_s=0.1)
    async with await connect_environment(url) as env:
        process = await env.process.start([sys.executable, "-c", ECHO], pipe_stdin=True)
        await output_until(process, b"ready")
        await process.detach()
        (info,) = await env.process.list_processes()
        assert info.detached
    await sessions_gone(server)
    async with await connect_environment(url) as env:
        (info,) = await env.process.list_processes()
        assert info.state == "running"
        assert await env.process.kill(info.handle) is True


async def test_shutdown_kills_detached_processes(start_server: StartServer) -> None:
    """Server shutdown still kills every process, detached ones included."""
    server, url = await start_server()
    await start_detached(url, ["sleep", "30"])
    (process,) = server.host.directory.processes()
    await server.aclose()
    assert await wait_all_dead([process.pid])


@pytest.fixture
async def journaled(
    start_server: StartServer, tmp_path: Path
) -> AsyncIterator[tuple[ExecServer, str]]:
    yield await start_server(state_dir=str(tmp_path), session_ttl_s=0.1)


BURST = (
    "import random, sys\n"
    "data = random.Random(19).randbytes(20 * 1024 * 1024)\n"
    "sys.stdout.buffer.write(data)\n"
    "sys.stdout.flush()\n"
    "sys.stdin.read()\n"
)


async def test_burst_while_nobody_attached_is_replayed_byte_for_byte(
    journaled: tuple[ExecServer, str], tmp_path: Path
) -> None:
    """20 MiB written while no client is attached come back whole from the journal."""
    server, url = journaled
    handle = await start_detached(url, [sys.executable, "-c", BURST])
    (process,) = server.host.directory.processes()
    await poll(lambda: process.log.total_bytes >= 20 * MiB, 60, "the burst")
    assert process.log.retained_bytes <= MiB
    assert any(Path(tmp_path).rglob("*.seg"))
    async with await connect_environment(url) as env:
        attached = await env.process.attach(handle)
        await attached.close_stdin()
        data, code, gaps = await drain(attached)
    expected = random.Random(19).randbytes(20 * MiB)
    assert gaps == []
    assert len(data) == len(expected)
    assert hashlib.sha256(data).digest() == hashlib.sha256(expected).digest()
    assert code == 0


async def test_old_after_seq_is_served_from_the_journal(journaled: tuple[ExecServer, str]) -> None:
    """A raw `process/read` with an old afterSeq gets journaled chunks, in bounded answers."""
    _, url = journaled
    async with await WireClient.connect(url) as client:
        await client.initialize()
        code = "import sys\nfor i in range(400000): sys.stdout.write('%09d\\n' % i)"
        await client.request("process/start", process_params("big", [sys.executable, "-c", code]))
        await client.process_events("big", timeout=60)
        data = b""
        after = 0
        while True:
            read = await client.request("process/read", {"processId": "big", "afterSeq": after})
            result = read["result"]
            if not result["chunks"]:
                break
            data += b"".join(base64.b64decode(c["chunk"]) for c in result["chunks"])
            after = result["nextSeq"] - 1
        assert data == b"".join(b"%09d\n" % i for i in range(400000))
        assert result["closed"] is True and "gaps" not in result


async def test_journal_cap_reports_a_gap(start_server: StartServer, tmp_path: Path) -> None:
    """Past the per-process journal cap the middle is dropped; a replay shows head, an explicit
    gap, and tail."""
    server, url = await start_server(state_dir=str(tmp_path), journal_max_bytes=256 * 1024)
    code = "import sys\nfor i in range(300000): sys.stdout.write('%09d\\n' % i)\nsys.stdin.read()"
    handle = await start_detached(url, [sys.executable, "-c", code])
    (process,) = server.host.directory.processes()
    await poll(lambda: process.log.total_bytes >= 3_000_000, 30, "the output")
    async with await connect_environment(url) as env:
        attached = await env.process.attach(handle)
        await attached.close_stdin()
        data, code_, gaps = await drain(attached)
    assert len(gaps) == 1
    assert data.startswith(b"000000000\n") and data.endswith(b"000299999\n")
    assert 0 < gaps[0].size == 3_000_000 - len(data)
    assert code_ == 0
