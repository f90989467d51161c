"""Filesystem behaviour beyond the differential cases: round trips, atomic writes, streaming."""

from __future__ import annotations

import asyncio
import base64
import os
import stat
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from execserver.protocol.pathuri import PathUri
from tests.harness.wire import WireClient
from tests.server.conftest import StartServer


def uri(path: Path | bytes) -> str:
    return PathUri.from_native(os.fsencode(path)).uri


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


NAMES = st.binary(min_size=1, max_size=40).filter(
    lambda n: b"/" not in n and b"\0" not in n and n not in (b".", b"..")
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=NAMES, data=st.binary(max_size=5000))
async def test_fs_round_trip_random_names_and_bytes(
    start_server: StartServer, tmp_path: Path, name: bytes, data: bytes
) -> None:
    """write -> read -> metadata -> copy -> read -> remove, for any name and any bytes."""
    _, url = await start_server()
    directory = os.fsencode(tmp_path) + b"/rt-" + os.urandom(4).hex().encode()
    os.mkdir(directory)
    path = directory + b"/" + name
    copy = directory + b"/copy-" + name[:20]
    async with await WireClient.connect(url) as client:
        await client.initialize()
        write = await client.request("fs/writeFile", {"path": uri(path), "dataBase64": b64(data)})
        assert write["result"] == {}
        assert os.listdir(directory) == [name]
        read = await client.request("fs/readFile", {"path": uri(path)})
        assert base64.b64decode(read["result"]["dataBase64"]) == data
        meta = (await client.request("fs/getMetadata", {"path": uri(path)}))["result"]
        assert (meta["isFile"], meta["isDirectory"], meta["size"]) == (True, False, len(data))
        copied = await client.request(
            "fs/copy", {"sourcePath": uri(path), "destinationPath": uri(copy), "recursive": False}
        )
        assert copied["result"] == {}
        again = await client.request("fs/readFile", {"path": uri(copy)})
        assert base64.b64decode(again["result"]["dataBase64"]) == data
        listing = await client.request("fs/readDirectory", {"path": uri(directory)})
        assert len(listing["result"]["entries"]) == 2
        for target in (path, copy):
            assert (await client.request("fs/remove", {"path": uri(target)}))["result"] == {}
        assert os.listdir(directory) == []


async def test_fs_write_is_atomic_and_keeps_mode(start_server: StartServer, tmp_path: Path) -> None:
    """writeFile replaces the file in one step, keeps its mode, and leaves no temp files."""
    _, url = await start_server()
    target = tmp_path / "script.sh"
    target.write_text("old")
    target.chmod(0o751)
    async with await WireClient.connect(url) as client:
        await client.initialize()
        await client.request("fs/writeFile", {"path": uri(target), "dataBase64": b64(b"new")})
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o751
    assert sorted(p.name for p in tmp_path.iterdir()) == ["script.sh"]


async def test_fs_write_through_symlink_and_hard_links(
    start_server: StartServer, tmp_path: Path
) -> None:
    """A symlink keeps pointing at the (rewritten) target; another hard link keeps old content."""
    _, url = await start_server()
    target = tmp_path / "target"
    target.write_text("old")
    link = tmp_path / "link"
    link.symlink_to(target)
    hard = tmp_path / "hard"
    os.link(target, hard)
    async with await WireClient.connect(url) as client:
        await client.initialize()
        await client.request("fs/writeFile", {"path": uri(link), "dataBase64": b64(b"new")})
    assert link.is_symlink() and target.read_bytes() == b"new"
    assert hard.read_bytes() == b"old"


async def test_fs_copy_onto_itself_is_refused(start_server: StartServer, tmp_path: Path) -> None:
    """Copying a file onto itself is an error and leaves the file intact (the reference
    truncates it to zero bytes)."""
    _, url = await start_server()
    target = tmp_path / "precious"
    target.write_bytes(b"data")
    alias = tmp_path / "alias"
    alias.symlink_to(target)
    async with await WireClient.connect(url) as client:
        await client.initialize()
        for destination in (target, alias):
            response = await client.request(
                "fs/copy",
                {
                    "sourcePath": uri(target),
                    "destinationPath": uri(destination),
                    "recursive": False,
                },
            )
            assert response["error"] == {
                "code": -32600,
                "message": "fs/copy sourcePath and destinationPath are the same file",
            }
    assert target.read_bytes() == b"data"


async def test_fs_pipelined_requests_apply_in_order(
    start_server: StartServer, tmp_path: Path
) -> None:
    """createDirectory, writeFile, readFile and a process that reads the file, all sent
    without waiting, see each other's effects in arrival order."""
    _, url = await start_server()
    directory = tmp_path / "made"
    async with await WireClient.connect(url) as client:
        await client.initialize()
        file = directory / "f.txt"
        messages = [
            ("fs/createDirectory", {"path": uri(directory)}),
            ("fs/writeFile", {"path": uri(file), "dataBase64": b64(b"v1")}),
            ("fs/readFile", {"path": uri(file)}),
            ("fs/writeFile", {"path": uri(file), "dataBase64": b64(b"v2")}),
            (
                "process/start",
                {
                    "processId": "cat",
                    "argv": ["cat", str(file)],
                    "cwd": uri(tmp_path),
                    "env": {},
                    "tty": False,
                },
            ),
        ]
        for index, (method, params) in enumerate(messages):
            await client.send({"id": index, "method": method, "params": params})
        responses = [await client.response(index) for index in range(len(messages))]
        assert base64.b64decode(responses[2]["result"]["dataBase64"]) == b"v1"
        events = await client.process_events("cat")
        output = b"".join(
            base64.b64decode(e["params"]["chunk"])
            for e in events
            if e["method"] == "process/output"
        )
        assert output == b"v2"


async def test_fs_handles_are_closed_with_the_connection(
    start_server: StartServer, tmp_path: Path
) -> None:
    """Handles belong to the connection: they are closed when it goes away."""
    _, url = await start_server()
    (tmp_path / "f").write_bytes(b"x")
    before = len(os.listdir("/proc/self/fd"))
    client = await WireClient.connect(url)
    await client.initialize()
    for index in range(10):
        response = await client.request(
            "fs/open", {"handleId": f"h{index}", "path": uri(tmp_path / "f")}
        )
        assert "result" in response
    assert len(os.listdir("/proc/self/fd")) >= before + 10
    await client.close()
    for _ in range(100):
        if len(os.listdir("/proc/self/fd")) <= before:
            break
        await asyncio.sleep(0.02)
    assert len(os.listdir("/proc/self/fd")) <= before


async def test_fs_block_streaming_large_files(start_server: StartServer, tmp_path: Path) -> None:
    """64 MiB written and read back through 1 MiB blocks, byte-exact."""
    _, url = await start_server()
    target = tmp_path / "big.bin"
    block = 1024 * 1024
    pattern = os.urandom(block)
    async with await WireClient.connect(url) as client:
        await client.initialize()
        opened = await client.request(
            "fs/open", {"handleId": "w", "path": uri(target), "mode": "replace"}
        )
        assert opened["result"] == {"handleId": "w"}
        for index in range(64):
            chunk = pattern[index:] + pattern[:index]
            response = await client.request(
                "fs/writeBlock", {"handleId": "w", "offset": index * block, "chunk": b64(chunk)}
            )
            assert response["result"] == {}
        await client.request("fs/close", {"handleId": "w"})
        assert target.stat().st_size == 64 * block
        await client.request("fs/open", {"handleId": "r", "path": uri(target)})
        offset, index = 0, 0
        while True:
            read = (
                await client.request(
                    "fs/readBlock", {"handleId": "r", "offset": offset, "len": block}
                )
            )["result"]
            data = base64.b64decode(read["chunk"])
            if data:
                assert data == pattern[index:] + pattern[:index]
            offset, index = offset + len(data), index + 1
            if read["eof"]:
                break
        assert offset == 64 * block
