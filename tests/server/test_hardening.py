"""What an adversarial client, a hostile file or a crash could do to the server (issue 22).

Each case is bounded: seconds of time, and memory capped by the server's own `--max-memory`
(peak RSS of the server process is read from /proc and compared with the budget). With
`EXECSERVER_SOAK=1` each case runs many times (`ROUNDS`).

* special files: a FIFO without a reader is ENXIO at once (fs/open, like the reference;
  fs/writeFile, fs/copy); a FIFO whose reader never reads makes the request wait on the event
  loop, not on a blocking thread, so a dozen of them leave every other client served, and the
  wait ends with a clear error after --fs-wait-timeout;
* memory: fs/readFile of /proc/self/pagemap (claims 0 bytes, never ends), stdin for processes
  that never read, and an endless buffered http/request body each stop at their share of the
  budget with an error naming the way around it;
* a 60 MiB `[0,0,...]` message is refused with the reference's text, and the server answers
  other clients right after;
* sessions: thousands of connect/initialize/drop rounds leave the server accepting;
* processes the executor started cannot use its loopback listener, sandboxed or not;
* a symlink planted by an earlier sandboxed run cannot redirect a later writable grant;
* fs/copy into itself through a bind-mount alias is refused (device and inode).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI, SOAK, TIME, ServerProcess, require_bwrap, require_reference
from tests.harness.httpserver import Exchange, RecordedRequest, http_test_server
from tests.harness.rawws import RawWebSocket
from tests.harness.servers import RunningServer, running_server
from tests.harness.wire import Json, WireClient, process_params
from tests.server.conftest import StartServer

MiB = 1024 * 1024
ROUNDS = 20 if SOAK else 1
BUDGET = 256 * MiB  # --max-memory of the servers measured here: a quarter of it per kind
SHARE = BUDGET // 4


def uri(path: Path | str) -> str:
    return f"file://{path}"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def rss(pid: int) -> tuple[int, int]:
    """(current, peak) resident set size of `pid`, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.split()
    return int(fields["VmRSS"][0]) * 1024, int(fields["VmHWM"][0]) * 1024


@pytest.fixture
async def budgeted(tmp_path: Path) -> AsyncIterator[RunningServer]:
    """Our server as a process of its own, with a small memory budget."""
    async with running_server("ours", tmp_path, extra=["--max-memory", str(BUDGET)]) as server:
        yield server


async def assert_served(url: str) -> None:
    """A new client gets an answer to an ordinary file read."""
    async with await WireClient.connect(url) as other:
        await other.initialize()
        response = await other.request(
            "fs/readFile", {"path": uri("/etc/hostname")}, timeout=10 * TIME
        )
        assert "result" in response, response


# -- special files ------------------------------------------------------------------------------


@pytest.mark.reference
async def test_fs_open_fifo_without_reader_matches_reference(
    ours: ServerProcess, reference: ServerProcess, tmp_path: Path
) -> None:
    require_reference()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    answers = []
    for server in (ours, reference):
        async with await WireClient.connect(server.url) as client:
            await client.initialize()
            params = {"handleId": "h", "path": uri(fifo), "mode": "replace"}
            answers.append(await client.request("fs/open", params, timeout=10 * TIME))
    assert answers[0] == answers[1]
    assert answers[0]["error"]["message"] == "No such device or address (os error 6)"


async def test_fifo_without_reader_fails_at_once(start_server: StartServer, tmp_path: Path) -> None:
    _, url = await start_server()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    source = tmp_path / "source"
    source.write_bytes(b"data")
    async with await WireClient.connect(url) as client:
        await client.initialize()
        for _ in range(ROUNDS):
            write = await client.request(
                "fs/writeFile", {"path": uri(fifo), "dataBase64": b64(b"x")}, timeout=10 * TIME
            )
            copy = await client.request(
                "fs/copy",
                {"sourcePath": uri(source), "destinationPath": uri(fifo), "recursive": False},
                timeout=10 * TIME,
            )
            for answer in (write, copy):
                assert answer["error"] == {
                    "code": -32603,
                    "message": "No such device or address (os error 6)",
                }, answer
    assert stat.S_ISFIFO(fifo.stat().st_mode)


async def test_fifo_writes_that_hang_leave_others_served(
    start_server: StartServer, tmp_path: Path
) -> None:
    """More hung writes than blocking threads (8), each on its own connection: they wait on
    the event loop, every other client is served, and each ends after --fs-wait-timeout."""
    wait_s = 5.0 * TIME
    _, url = await start_server(fs_wait_timeout_s=wait_s)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader that never reads
    writers: list[WireClient] = []
    try:
        for index in range(12 * ROUNDS):
            client = await WireClient.connect(url)
            writers.append(client)
            await client.initialize()
            await client.send(
                {
                    "id": index,
                    "method": "fs/writeFile",
                    # more than a pipe holds, so the write must wait for the reader
                    "params": {"path": uri(fifo), "dataBase64": b64(b"x" * (1 * MiB))},
                }
            )
        await assert_served(url)
        assert not any(w.messages[1:] for w in writers), "others were served only after"
        for index, client in enumerate(writers):
            answer = await client.response(index, timeout=30 * TIME)
            assert answer["error"]["code"] == -32603, answer
            assert answer["error"]["message"].startswith(
                f"timed out after {wait_s:g} s waiting for `{fifo}` to become writable"
            ), answer
        await assert_served(url)
    finally:
        os.close(reader)
        for client in writers:
            await client.close()


async def test_sandboxed_fifo_writes_that_hang_leave_others_served(
    start_server: StartServer, tmp_path: Path
) -> None:
    """The same through the sandbox helper: the server waits for the helper on the event loop,
    so helpers stuck on a FIFO hold no blocking thread either (and die with the request)."""
    require_bwrap()
    _, url = await start_server(fs_wait_timeout_s=600)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    writers: list[WireClient] = []
    try:
        for index in range(12):
            client = await WireClient.connect(url)
            writers.append(client)
            await client.initialize()
            params = {
                "path": uri(fifo),
                "dataBase64": b64(b"x" * MiB),
                "sandbox": _write_policy(tmp_path),
            }
            await client.send({"id": index, "method": "fs/writeFile", "params": params})
        await assert_served(url)
        assert not any(w.messages[1:] for w in writers), "others were served only after"
    finally:
        os.close(reader)
        for client in writers:
            await client.close()
    # leaving cancelled the writes: their helpers are killed, not left waiting
    deadline = asyncio.get_running_loop().time() + 30 * TIME
    while helpers := _our_fs_helpers():
        assert asyncio.get_running_loop().time() < deadline, f"helpers left: {helpers}"
        await asyncio.sleep(0.05)


def _our_fs_helpers() -> list[int]:
    from execserver.local.peer import descendants

    found = []
    for pid in descendants(os.getpid()):
        try:
            if b"fs_helper" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


# -- memory ---------------------------------------------------------------------------------------


async def test_read_file_of_an_endless_file_stops_at_the_budget(
    budgeted: RunningServer,
) -> None:
    _, before = rss(budgeted.pid)
    async with await WireClient.connect(budgeted.url) as client:
        await client.initialize()
        for _ in range(ROUNDS):
            answer = await client.request(
                "fs/readFile", {"path": uri("/proc/self/pagemap")}, timeout=60 * TIME
            )
            error = answer["error"]
            assert error["code"] == -32600, answer
            assert error["message"].startswith("fs/readFile of `/proc/self/pagemap` needs more")
            assert "fs/open and fs/readBlock" in error["message"]
        # the way around it: blocks
        await client.request("fs/open", {"handleId": "h", "path": uri("/proc/self/pagemap")})
        block = await client.request("fs/readBlock", {"handleId": "h", "offset": 0, "len": 4096})
        assert len(base64.b64decode(block["result"]["chunk"])) == 4096
    _, peak = rss(budgeted.pid)
    assert peak - before < BUDGET, f"peak RSS grew by {(peak - before) // MiB} MiB"
    await assert_served(budgeted.url)


STDIN_HOLDERS = 24


async def test_pending_stdin_stops_at_the_budget(budgeted: RunningServer) -> None:
    """24 processes that never read their stdin: writes are refused once their pending bytes
    fill the server's share, the server stays within its budget, and a process that reads
    gets its input."""
    _, before = rss(budgeted.pid)
    chunk = b64(os.urandom(4 * MiB))
    async with await WireClient.connect(budgeted.url) as client:
        await client.initialize()
        for index in range(STDIN_HOLDERS):
            started = await client.request(
                "process/start", process_params(f"s{index}", ["sleep", "600"], pipeStdin=True)
            )
            assert "result" in started, started
        accepted = 0
        refused: Json | None = None
        for write in range(2 * SHARE // (4 * MiB) * ROUNDS):
            index = write % STDIN_HOLDERS
            answer = await client.request(
                "process/write",
                {"processId": f"s{index}", "chunk": chunk, "writeId": f"w{write}"},
                timeout=30 * TIME,
            )
            if "result" in answer:
                accepted += 4 * MiB
            else:
                refused = answer
        assert refused is not None and refused["error"]["code"] == -32603
        assert "budget for pending stdin" in refused["error"]["message"], refused
        assert accepted <= SHARE
        _, peak = rss(budgeted.pid)
        assert peak - before < BUDGET, f"peak RSS grew by {(peak - before) // MiB} MiB"
        # a process that reads still gets its input (once the others are gone)
        for index in range(STDIN_HOLDERS):
            await client.request("process/terminate", {"processId": f"s{index}"})
            await client.process_events(f"s{index}", timeout=30 * TIME)
        await client.request(
            "process/start",
            process_params(
                "reader", ["sh", "-c", "head -c 8 >/dev/null; echo got"], pipeStdin=True
            ),
        )
        answer = await client.request(
            "process/write", {"processId": "reader", "chunk": chunk, "writeId": "r"}
        )
        assert answer["result"]["status"] == "accepted", answer
        events = await client.process_events("reader", timeout=30 * TIME)
        output = b"".join(
            base64.b64decode(e["params"]["chunk"])
            for e in events
            if e["method"] == "process/output"
        )
        assert output == b"got\n"


async def _endless(request: RecordedRequest, exchange: Exchange) -> None:
    await exchange.send_head(200, [("transfer-encoding", "chunked")])
    part = b"z" * 65536
    frame = f"{len(part):x}\r\n".encode() + part + b"\r\n"
    try:
        while True:
            await exchange.write(frame)
    except ConnectionError:
        pass


async def test_buffered_http_body_stops_at_the_budget(budgeted: RunningServer) -> None:
    _, before = rss(budgeted.pid)
    async with (
        http_test_server({"/endless": _endless}) as http,
        await WireClient.connect(budgeted.url) as client,
    ):
        if True:
            await client.initialize()
            for index in range(ROUNDS):
                answer = await client.request(
                    "http/request",
                    {"method": "GET", "url": http.url("/endless"), "requestId": f"r{index}"},
                    timeout=60 * TIME,
                )
                error = answer["error"]
                assert error["code"] == -32603, answer
                assert "streamResponse: true" in error["message"], answer
            # streamed, the same body flows (and stops when we stop reading it)
            answer = await client.request(
                "http/request",
                {
                    "method": "GET",
                    "url": http.url("/endless"),
                    "requestId": "streamed",
                    "streamResponse": True,
                },
            )
            assert answer["result"]["status"] == 200
            await client.wait_for(lambda m: m.get("method") == "http/request/bodyDelta")
    _, peak = rss(budgeted.pid)
    assert peak - before < BUDGET, f"peak RSS grew by {(peak - before) // MiB} MiB"


@pytest.mark.reference
async def test_huge_value_list_is_refused_like_the_reference(
    ours: ServerProcess, reference: ServerProcess
) -> None:
    """A 60 MiB `[0,0,...]` (30 M values): the reference's error, then business as usual."""
    require_reference()
    values = 30 * 1024 * 1024
    message = b'{"id":1,"method":"fs/readFile","params":[' + b"0," * (values - 1) + b"0]}"
    answers = []
    _, ours_before = rss(ours.pid)
    _, ours_before = rss(ours.pid)
    for server in (ours, reference):
        async with await WireClient.connect(server.url) as client:
            await client.initialize()
            for _ in range(ROUNDS):
                # one message in 4 MiB fragments (a frame may not exceed 16 MiB)
                text = message.decode()
                await client.ws.send([text[i : i + 4 * MiB] for i in range(0, len(text), 4 * MiB)])
                answer = await client.response(-1, timeout=60 * TIME)
                answer["error"]["message"] = re.sub(
                    r"127\.0\.0\.1:\d+", "PEER", answer["error"]["message"]
                )
                answers.append(answer)
            status = await client.request("environment/status", {})
            assert status["result"] == {"status": "ready"}
    assert all(answer == answers[0] for answer in answers), answers
    # the message itself, not 30 M decoded values (~1 GiB of Python objects)
    _, ours_peak = rss(ours.pid)
    assert ours_peak - ours_before < 8 * len(message), (ours_peak - ours_before) // MiB
    assert "exceeds the limit of 262144 JSON values" in answers[0]["error"]["message"]


# -- sessions -------------------------------------------------------------------------------------


async def test_connect_initialize_drop_loop_leaves_the_server_accepting(
    start_server: StartServer,
) -> None:
    # 3,000 rounds in the soak; 600 here cycle the (lowered) cap many times over.
    server, url = await start_server(session_ttl_s=300, max_sessions=64)
    rounds = 3000 if SOAK else 600
    initialize = json.dumps({"id": 1, "method": "initialize", "params": {"clientName": "loop"}})
    refused = 0
    for _ in range(rounds):
        ws = await RawWebSocket.connect(url)
        await ws.send_text(initialize)
        answer = json.loads(await ws.recv_text() or "{}")
        refused += "error" in answer
        await ws.aclose()
    # Each new session takes the place of an idle detached one: nobody is locked out.
    assert refused == 0
    async with await WireClient.connect(url) as client:
        assert "result" in await client.initialize()
    assert len(server.registry) <= server.registry.max_sessions


async def test_busy_detached_sessions_of_one_principal_cannot_lock_out_another(
    start_server: StartServer,
) -> None:
    """With authentication: one principal's detached sessions with running processes are
    capped per principal, so another principal still gets a session."""
    from execserver.server.auth import CapabilityToken

    class TwoTokens(CapabilityToken):
        def authenticate(self, authorization: str | None) -> str:
            return f"principal-{authorization}"

    server, url = await start_server(
        max_sessions=8,
        max_sessions_per_principal=4,
        session_ttl_s=300,
        authenticator=TwoTokens(b""),
    )

    async def session(who: str, busy: bool) -> str:
        headers = {"Authorization": who}
        async with await WireClient.connect(url, additional_headers=headers) as client:
            answer = await client.initialize()
            assert "result" in answer, answer
            if busy:
                await client.request("process/start", process_params("p", ["sleep", "600"]))
        session_id = str(answer["result"]["sessionId"])
        # wait (with a deadline) for the server to notice the drop
        deadline = asyncio.get_running_loop().time() + 10 * TIME
        while not server.registry.is_detached(session_id):
            assert asyncio.get_running_loop().time() < deadline, "session never detached"
            await asyncio.sleep(0.01)
        return session_id

    mallory = [await session("mallory", busy=True) for _ in range(6 * ROUNDS)]
    assert len(set(mallory)) == len(mallory)
    for _ in range(4):
        await session("alice", busy=False)


# -- processes the executor started ------------------------------------------------------------

_CONNECT_BACK = """
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection((host, port))
s.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: Upgrade\\r\\nUpgrade: websocket\\r\\n"
          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n")
print(s.recv(65536).split(b"\\r\\n")[0].decode(), flush=True)
"""


async def _connect_back(client: WireClient, url: str, process_id: str, **extra: Any) -> str:
    host, port = url.removeprefix("ws://").rsplit(":", 1)
    argv = [sys.executable, "-c", _CONNECT_BACK, host, port]
    started = await client.request("process/start", process_params(process_id, argv, **extra))
    assert "result" in started, started
    events = await client.process_events(process_id, timeout=30 * TIME)
    return b"".join(
        base64.b64decode(e["params"]["chunk"]) for e in events if e["method"] == "process/output"
    ).decode()


async def test_processes_we_started_cannot_connect_back(
    start_server: StartServer, tmp_path: Path
) -> None:
    # A server process of its own (an in-process server would share its pid with the one
    # that starts the "foreign" process below).
    async with running_server("ours", tmp_path) as server:
        async with await WireClient.connect(server.url) as client:
            await client.initialize()
            for index in range(ROUNDS):
                assert "403 Forbidden" in await _connect_back(client, server.url, f"c{index}")
        # another server's process is not ours; and the opt-out lets our own in
        _, open_url = await start_server(refuse_child_connections=False)
        async with await WireClient.connect(open_url) as other:
            await other.initialize()
            assert "101 Switching" in await _connect_back(other, server.url, "foreign")
            assert "101 Switching" in await _connect_back(other, open_url, "open")


async def test_sandboxed_process_with_network_cannot_connect_back(
    tmp_path: Path, start_server: StartServer
) -> None:
    require_bwrap()
    _, url = await start_server()
    policy = {
        "permissions": {
            "type": "managed",
            "file_system": {
                "type": "restricted",
                "entries": [
                    {"path": {"type": "special", "value": {"kind": "root"}}, "access": "read"},
                    {"path": {"type": "path", "path": uri(tmp_path)}, "access": "write"},
                ],
            },
            "network": "enabled",
        },
        "windowsSandboxLevel": "disabled",
    }
    async with await WireClient.connect(url) as client:
        await client.initialize()
        output = await _connect_back(client, url, "boxed", sandbox=policy, cwd=uri(tmp_path))
        assert "403 Forbidden" in output, output


# -- sandbox grants -----------------------------------------------------------------------------


def _write_policy(*writable: Path) -> Json:
    entries: list[Json] = [
        {"path": {"type": "special", "value": {"kind": "root"}}, "access": "read"},
    ]
    entries += [{"path": {"type": "path", "path": uri(p)}, "access": "write"} for p in writable]
    return {
        "permissions": {
            "type": "managed",
            "file_system": {"type": "restricted", "entries": entries},
            "network": "restricted",
        },
        "windowsSandboxLevel": "disabled",
    }


async def test_symlink_planted_by_a_sandboxed_run_cannot_redirect_a_later_grant(
    start_server: StartServer, tmp_path: Path
) -> None:
    require_bwrap()
    _, url = await start_server()
    work, outside = tmp_path / "work", tmp_path / "outside"
    work.mkdir()
    outside.mkdir()
    async with await WireClient.connect(url) as client:
        await client.initialize()
        # run 1 may write `work`, and plants work/build -> outside
        params = process_params(
            "plant",
            ["ln", "-s", str(outside), str(work / "build")],
            sandbox=_write_policy(work),
            cwd=uri(work),
        )
        assert "result" in await client.request("process/start", params)
        await client.process_events("plant", timeout=30 * TIME)
        assert (work / "build").is_symlink()
        # run 2 is granted `work/build`: refused, not redirected to `outside`
        params = process_params(
            "use",
            ["sh", "-c", "echo pwned > build/x"],
            sandbox=_write_policy(work / "build"),
            cwd=uri(work),
        )
        answer = await client.request("process/start", params)
        assert answer["error"]["code"] == -32602, answer
        assert "passes through the symlink" in answer["error"]["message"], answer
        fs_answer = await client.request(
            "fs/writeFile",
            {
                "path": uri(work / "build" / "x"),
                "dataBase64": b64(b"pwned"),
                "sandbox": _write_policy(work / "build"),
            },
        )
        assert "passes through the symlink" in fs_answer["error"]["message"], fs_answer
    assert list(outside.iterdir()) == []


# -- copy into itself -----------------------------------------------------------------------------


def _nest(base: Path, levels: int) -> Path:
    path = base
    for _ in range(levels):
        path = path / "d"
        path.mkdir()  # one level at a time: makedirs recurses per level
    return path


def _unnest(base: Path, levels: int) -> None:
    paths = [base]
    for _ in range(levels):
        paths.append(paths[-1] / "d")
    for path in reversed(paths):
        for child in path.iterdir():
            if not child.is_dir():
                child.unlink()
        path.rmdir()


async def test_copy_of_a_very_deep_tree(start_server: StartServer, tmp_path: Path) -> None:
    """Deeper than Python's recursion limit: copied level by level, not recursively."""
    levels = 1100
    _, url = await start_server()
    source, copy = tmp_path / "source", tmp_path / "copy"
    source.mkdir()
    try:
        (_nest(source, levels) / "leaf").write_text("leaf")
        async with await WireClient.connect(url) as client:
            await client.initialize()
            answer = await client.request(
                "fs/copy",
                {"sourcePath": uri(source), "destinationPath": uri(copy), "recursive": True},
                timeout=60 * TIME,
            )
            assert answer.get("result") == {}, str(answer)[:300]
        assert (copy / "/".join(["d"] * levels) / "leaf").read_text() == "leaf"
    finally:
        _unnest(source, levels)
        if copy.exists():
            _unnest(copy, levels)


def _mount_bind(source: Path, target: Path) -> bool:
    result = subprocess.run(
        ["mount", "--bind", str(source), str(target)], capture_output=True, check=False
    )
    return result.returncode == 0


async def test_copy_into_itself_through_a_bind_mount_alias_is_refused(
    start_server: StartServer, tmp_path: Path
) -> None:
    source, alias = tmp_path / "source", tmp_path / "alias"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "file").write_text("x")
    alias.mkdir()
    if not _mount_bind(source, alias):
        if IN_CI:
            pytest.fail("CI=true but mount --bind failed (the CI machine runs as root)")
        pytest.skip("mount --bind is not permitted here")
    try:
        _, url = await start_server()
        async with await WireClient.connect(url) as client:
            await client.initialize()
            for destination in (alias / "copy", alias / "sub" / "deeper", alias):
                answer = await client.request(
                    "fs/copy",
                    {
                        "sourcePath": uri(source),
                        "destinationPath": uri(destination),
                        "recursive": True,
                    },
                    timeout=30 * TIME,
                )
                assert answer["error"] == {
                    "code": -32600,
                    "message": "fs/copy cannot copy a directory to itself or one of its "
                    "descendants",
                }, answer
        assert sorted(p.name for p in source.iterdir()) == ["sub"]
    finally:
        subprocess.run(["umount", str(alias)], check=False)  # noqa: ASYNC221
