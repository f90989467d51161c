"""WebSocket transport: frame and message limits, fragmentation, keepalive, hostile input."""

from __future__ import annotations

import asyncio
import json
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness.rawws import BINARY, CONT, PING, PONG, TEXT, RawWebSocket
from tests.harness.wire import WireClient
from tests.server.conftest import StartServer

MiB = 1024 * 1024


async def _status_works(url: str) -> bool:
    async with await WireClient.connect(url) as client:
        response = await client.request("environment/status", timeout=5)
        return "error" in response or "result" in response


async def test_transport_frame_of_16_mib_is_accepted(start_server: StartServer) -> None:
    """A single 16 MiB frame is within the limit (answered as a parse error of its JSON)."""
    _, url = await start_server()
    async with await RawWebSocket.connect(url) as ws:
        payload = b'{"id":1,"method":"x","params":"' + b"a" * (16 * MiB - 33) + b'"}'
        assert len(payload) == 16 * MiB
        await ws.send_frame(TEXT, payload)
        reply = json.loads(await ws.recv_text() or "null")
        assert reply["error"]["code"] == -32601


async def test_transport_frame_over_16_mib_drops_connection(start_server: StartServer) -> None:
    """A frame one byte over 16 MiB drops the TCP connection without a close frame."""
    _, url = await start_server()
    async with await RawWebSocket.connect(url) as ws:
        # Only the header is needed: the length alone is over the limit.
        await ws.send_frame(TEXT, b"", declared_length=16 * MiB + 1)
        assert await ws.dropped()
        assert await _status_works(url)


async def test_transport_fragmented_message_under_64_mib(start_server: StartServer) -> None:
    """A message reassembled from fragments may exceed 16 MiB (up to 64 MiB)."""
    _, url = await start_server()
    async with await RawWebSocket.connect(url) as ws:
        body = b'{"id":"big","method":"x","params":"' + b"b" * (40 * MiB) + b'"}'
        pieces = [body[i : i + 15 * MiB] for i in range(0, len(body), 15 * MiB)]
        for index, piece in enumerate(pieces):
            opcode = TEXT if index == 0 else CONT
            await ws.send_frame(opcode, piece, fin=index == len(pieces) - 1)
        reply = json.loads(await ws.recv_text(timeout=30) or "null")
        assert reply == {
            "error": {"code": -32601, "message": "exec-server stub does not implement `x` yet"},
            "id": "big",
        }


async def test_transport_message_over_64_mib_drops_connection(start_server: StartServer) -> None:
    """Fragments adding up to more than 64 MiB drop the connection."""
    _, url = await start_server()
    async with await RawWebSocket.connect(url) as ws:
        chunk = b"c" * (16 * MiB)
        for index in range(4):
            await ws.send_frame(TEXT if index == 0 else CONT, chunk, fin=False)
        await ws.send_frame(CONT, b"c", fin=True)
        assert await ws.dropped(timeout=30)


async def test_transport_binary_frames_and_pings_from_client(start_server: StartServer) -> None:
    """Binary frames carry JSON-RPC too; a client ping is answered with a pong."""
    _, url = await start_server()
    async with await RawWebSocket.connect(url) as ws:
        await ws.send_frame(PING, b"hello")
        assert await ws.recv_frame() == (PONG, b"hello")
        await ws.send_frame(BINARY, b'{"id":3,"method":"environment/status"}')
        reply = json.loads(await ws.recv_text() or "null")
        assert reply["error"]["message"] == (
            "client must call initialize before using environment status methods"
        )


async def test_transport_server_pings_and_drops_silent_peers(start_server: StartServer) -> None:
    """The server pings on its interval; a peer that never answers is eventually dropped."""
    _, url = await start_server(ping_interval_s=0.1)
    async with await RawWebSocket.connect(url) as ws:
        frame = await ws.recv_frame(timeout=2)
        assert frame == (PING, b"")
        assert await ws.dropped(timeout=5)


async def test_transport_answering_peer_is_kept(start_server: StartServer) -> None:
    """A peer that answers pings stays connected across many intervals."""
    _, url = await start_server(ping_interval_s=0.05)
    async with await WireClient.connect(url) as client:  # websockets answers pings itself
        await client.initialize()
        for _ in range(10):
            assert (await client.request("environment/status"))["result"] == {"status": "ready"}
            await asyncio.sleep(0.05)


async def test_transport_invalid_utf8_text_frame_drops(start_server: StartServer) -> None:
    """A text frame that is not UTF-8 is a protocol violation: the connection is dropped."""
    _, url = await start_server()
    async with await RawWebSocket.connect(url) as ws:
        await ws.send_frame(TEXT, b'{"id":1,"method":"\xff"}')
        assert await ws.dropped()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    payload=st.one_of(
        st.binary(max_size=2000),
        st.text(max_size=500).map(str.encode),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=5)
                | st.dictionaries(st.text(max_size=5), inner, max_size=5)
            ),
            max_leaves=30,
        ).map(lambda v: json.dumps(v).encode()),
    )
)
async def test_transport_garbage_never_breaks_the_server(
    start_server: StartServer, payload: bytes
) -> None:
    """Random frames get an error reply or a dropped connection, never a crash or a hang."""
    _, url = await start_server()
    async with await RawWebSocket.connect(url) as ws:
        await ws.send_frame(BINARY, payload)
        await ws.send_frame(TEXT, b'{"id":"probe","method":"environment/status"}')
        replies = []
        while True:
            text = await ws.recv_text(timeout=5)
            if text is None:
                break  # dropped: allowed for protocol violations
            replies.append(json.loads(text))
            if replies[-1].get("id") == "probe":
                break
        assert await _status_works(url)


async def test_transport_deep_and_huge_json(start_server: StartServer) -> None:
    """Very deep nesting, huge strings and many values are rejected cleanly."""
    _, url = await start_server()
    async with await RawWebSocket.connect(url) as ws:
        deep = b"[" * 100_000 + b"]" * 100_000
        await ws.send_frame(TEXT, deep)
        assert (
            "recursion limit exceeded"
            in json.loads(await ws.recv_text() or "{}")["error"]["message"]
        )
        many = b"[" + b",".join([b"1"] * 300_000) + b"]"
        await ws.send_frame(TEXT, many)
        assert (
            "exceeds the limit of 262144 JSON values"
            in json.loads(await ws.recv_text() or "{}")["error"]["message"]
        )
        huge = (
            b'{"id":1,"method":"initialize","params":{"clientName":"'
            + os.urandom(8).hex().encode() * (1 << 19)
            + b'"}}'
        )
        await ws.send_frame(TEXT, huge)
        reply = json.loads(await ws.recv_text(timeout=30) or "{}")
        assert "sessionId" in reply["result"]
