"""The process extensions against the reference: each one is a deliberate difference
(docs/protocol.md lists them). Ours does what the extension says; the reference answers
`-32601`, ignores the new start params, keeps only 1 MiB, or dies of SIGHUP."""

from __future__ import annotations

import base64
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProcess, require_reference
from tests.harness.polling import poll
from tests.harness.servers import generation, start_server
from tests.harness.wire import WireClient, process_params

Json = dict[str, Any]
EXTENSION_METHODS: dict[str, Any] = {
    "process/resize": {"processId": "p", "rows": 10, "cols": 10},
    "process/list": None,
    "process/attach": {"handle": "abcd1234"},
    "process/detach": {"processId": "p"},
    "process/kill": {"handle": "abcd1234"},
}


async def _extension_answers(url: str) -> dict[str, Json]:
    async with await WireClient.connect(url) as client:
        await client.initialize()
        return {
            method: await client.request(method, params)
            for method, params in EXTENSION_METHODS.items()
        }


async def test_process_handles_extension(ours: ServerProcess) -> None:
    """Ours answers every extension method (here with its clear errors for unknown ids)."""
    answers = await _extension_answers(ours.url)
    # The shared server may list processes other tests detached (retained for an hour).
    (processes,) = answers["process/list"]["result"].values()
    fields = {"handle", "argv", "state", "exitCode", "startedAtMs", "outputBytes", "pid"}
    assert all(fields <= set(entry) for entry in processes), processes
    assert answers["process/resize"]["error"]["message"] == "unknown process id p"
    assert answers["process/attach"]["error"]["message"] == "unknown process handle abcd1234"
    assert answers["process/detach"]["error"]["message"] == "unknown process id p"
    assert answers["process/kill"]["error"]["message"] == "unknown process handle abcd1234"


@pytest.mark.reference
async def test_process_handles_extension_reference(reference: ServerProcess) -> None:
    require_reference()
    answers = await _extension_answers(reference.url)
    for method, answer in answers.items():
        assert answer["error"]["code"] == -32601, method


async def _sized_and_detached(url: str) -> tuple[bytes, Json]:
    """(`stty size` of a tty process started with `size`, the answer to a `detach` start)."""
    async with await WireClient.connect(url) as client:
        await client.initialize()
        params = process_params("sized", ["stty", "size"], tty=True, size={"rows": 41, "cols": 99})
        await client.request("process/start", params)
        events = await client.process_events("sized")
        output = b"".join(
            base64.b64decode(e["params"]["chunk"])
            for e in events
            if e["method"] == "process/output"
        )
        detached = await client.request(
            "process/start", process_params("bg", ["sleep", "30"], detach=True)
        )
        await client.request("process/terminate", {"processId": "bg"})
        return output.strip(), detached


async def test_process_start_size_and_detach(ours: ServerProcess) -> None:
    """`size` sizes the terminal; `detach` answers with a handle."""
    output, detached = await _sized_and_detached(ours.url)
    assert output == b"41 99"
    assert len(detached["result"]["handle"]) == 8


@pytest.mark.reference
async def test_process_start_size_and_detach_reference(reference: ServerProcess) -> None:
    require_reference()
    output, detached = await _sized_and_detached(reference.url)
    assert output == b"24 80"
    assert "handle" not in detached["result"]


async def _first_seq_of_old_read(url: str) -> tuple[int, int]:
    """(first chunk seq, bytes) of a read from afterSeq 0 after 3 MB of output."""
    async with await WireClient.connect(url) as client:
        await client.initialize()
        code = "import sys\nfor i in range(300000): sys.stdout.write('%09d\\n' % i)"
        await client.request("process/start", process_params("big", ["python3", "-c", code]))
        await client.process_events("big", timeout=60)
        read = await client.request("process/read", {"processId": "big", "afterSeq": 0})
        chunks = read["result"]["chunks"]
        return chunks[0]["seq"], sum(len(base64.b64decode(c["chunk"])) for c in chunks)


async def test_output_journal(ours: ServerProcess) -> None:
    """An old afterSeq is served from the journal: from the first chunk, in bounded answers."""
    first, size = await _first_seq_of_old_read(ours.url)
    assert first == 1
    assert 1024 * 1024 < size <= 4 * 1024 * 1024


@pytest.mark.reference
async def test_output_journal_reference(reference: ServerProcess) -> None:
    require_reference()
    first, size = await _first_seq_of_old_read(reference.url)
    assert first > 1
    assert size <= 1024 * 1024


async def test_upgrade_in_place(tmp_path: Path) -> None:
    """SIGHUP upgrades ours in place: it runs on (tests/server/test_upgrade.py has the rest)."""
    server = await start_server("ours", tmp_path)
    try:
        server.process.send_signal(signal.SIGHUP)
        await poll(lambda: generation(server) == 1, 60, "the upgrade")
        async with await WireClient.connect(server.url) as client:
            assert "result" in await client.initialize()
        assert server.process.returncode is None
    finally:
        assert await server.stop() == 0


@pytest.mark.reference
async def test_upgrade_in_place_reference(tmp_path: Path) -> None:
    require_reference()
    server = await start_server("reference", tmp_path)
    server.process.send_signal(signal.SIGHUP)
    assert await server.stop() == -signal.SIGHUP
