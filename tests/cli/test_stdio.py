"""The stdio listener: NDJSON framing, one session, EOF ends the server and its processes."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.conftest import require_reference
from tests.harness.differential import mask
from tests.harness.procfs import sleeper, wait_all_dead, wait_for_marked
from tests.harness.servers import ours_command, reference_command
from tests.harness.stdio import StdioServer


async def _framing_transcript(command: list[str]) -> list[object]:
    server = await StdioServer.start(command)
    try:
        out: list[object] = []
        await server.write(b'{"id":1,"method":"initialize","params":{"clientName":"s"}}\r\n')
        out.append(await server.read())
        await server.write(b'\n   \n{"method":"initialized"}\n')
        # lines of Unicode whitespace are blank too (Rust's `trim`), not parse errors
        await server.write("\u00a0 \u3000\u2028\x85\r\n\u205f\n".encode())
        await server.write(b'{"id":2,"method":"environment/')
        await server.write(b'status"}\n')
        out.append(await server.read())
        await server.write(b'{"id":3,"method":"x"} {"id":4,"method":"x"}\n')
        out.append(await server.read())
        await server.write(b"garbage\n")
        out.append(await server.read())
        await server.write(b'{"id":5,"method":"environment/status","params":null}\n')
        out.append(await server.read())
        return out
    finally:
        await server.kill()


async def test_stdio_framing() -> None:
    """CRLF, blank lines and split lines are handled; two objects on a line are an error."""
    transcript = await _framing_transcript(ours_command("stdio"))
    assert transcript[1] == {"id": 2, "result": {"status": "ready"}}
    assert transcript[2] == {
        "error": {
            "code": -32600,
            "message": "failed to parse JSON-RPC message from exec-server stdio: "
            "trailing characters at line 1 column 23",
        },
        "id": -1,
    }
    assert transcript[4] == {"id": 5, "result": {"status": "ready"}}


@pytest.mark.reference
async def test_stdio_framing_matches_reference() -> None:
    """The same stdio conversation gets the same answers from the reference."""
    require_reference()
    ours = mask(await _framing_transcript(ours_command("stdio")))
    theirs = mask(await _framing_transcript(reference_command("stdio")))
    assert json.dumps(ours, sort_keys=True) == json.dumps(theirs, sort_keys=True)


async def test_stdio_eof_exits_and_kills_processes() -> None:
    """EOF on stdin: the server exits 0 and kills its processes; stdout was only JSON-RPC."""
    server = await StdioServer.start(ours_command("stdio"))
    marker = f"stdio-{uuid.uuid4().hex}"
    await server.send({"id": 1, "method": "initialize", "params": {"clientName": "s"}})
    await server.read()
    await server.send({"method": "initialized"})
    params = {
        "processId": "p",
        "argv": sleeper(marker),
        "cwd": "file:///tmp",
        "env": {},
        "tty": False,
    }
    await server.send({"id": 2, "method": "process/start", "params": params})
    assert (await server.read())["result"] == {"processId": "p", "sandboxType": "none"}
    pids = await wait_for_marked(marker, 1)
    assert len(pids) == 1
    assert await server.close_stdin() == 0
    assert await wait_all_dead(pids)
    assert all(json.loads(line) for line in server.lines)
