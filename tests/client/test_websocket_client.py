"""The dialled WebSocket (`connect_websocket`) against a real server-side peer: websockets'
own server protocol does the handshake and parses what we send (it refuses unmasked frames),
and the frames it receives from us are checked there; the peer writes its frames with
websockets' serializer, in pieces, so fragmentation, interleaved control frames, closing,
size limits and framing errors reach our parser (`transport.ws_frames`) over TCP."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

from execserver.transport.websocket import WebSocketClientConnection, connect_websocket
from tests.conftest import TIME

EDGE_SIZES = [0, 1, 125, 126, 127, 65535, 65536, 65537, 200_000]


class Peer(asyncio.Protocol):
    """One accepted connection, served by websockets' sans-I/O server protocol."""

    def __init__(self) -> None:
        self.ws = ServerProtocol(max_size=None)
        self.transport: asyncio.Transport | None = None
        self.frames: asyncio.Queue[Frame] = asyncio.Queue()
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Request):
                self.ws.send_response(self.ws.accept(event))
            else:
                self.frames.put_nowait(event)
        assert self.ws.parser_exc is None, self.ws.parser_exc
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)

    def flush(self) -> None:
        assert self.transport is not None
        for chunk in self.ws.data_to_send():
            if chunk:
                self.transport.write(chunk)

    def write_frames(self, frames: list[Frame | bytes], piece: int = 0) -> None:
        """Serialized by websockets (bytes as they are), written `piece` bytes per write
        (0: all at once)."""
        assert self.transport is not None
        wire = b"".join(f if isinstance(f, bytes) else f.serialize(mask=False) for f in frames)
        step = piece or len(wire) or 1
        for start in range(0, len(wire), step):
            self.transport.write(wire[start : start + step])

    async def next_frame(self) -> Frame:
        return await asyncio.wait_for(self.frames.get(), 10 * TIME)


class Receiver:
    def __init__(self) -> None:
        self.messages: asyncio.Queue[bytes] = asyncio.Queue()
        self.lost = asyncio.get_running_loop().create_future()

    def message_received(self, data: bytes) -> None:
        self.messages.put_nowait(data)

    def connection_lost(self) -> None:
        if not self.lost.done():
            self.lost.set_result(None)

    async def next_message(self) -> bytes:
        return await asyncio.wait_for(self.messages.get(), 10 * TIME)

    async def wait_lost(self) -> None:
        await asyncio.wait_for(asyncio.shield(self.lost), 10 * TIME)


class Session:
    def __init__(self, peer: Peer, client: WebSocketClientConnection, receiver: Receiver) -> None:
        self.peer, self.client, self.receiver = peer, client, receiver


@pytest.fixture
async def dial() -> AsyncIterator[object]:
    servers: list[asyncio.Server] = []
    clients: list[WebSocketClientConnection] = []

    async def open_session(**options: object) -> Session:
        peers: asyncio.Queue[Peer] = asyncio.Queue()

        def factory() -> Peer:
            peer = Peer()
            peers.put_nowait(peer)
            return peer

        server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        receiver = Receiver()
        client = await connect_websocket(f"ws://127.0.0.1:{port}/", receiver, **options)  # type: ignore[arg-type]
        clients.append(client)
        return Session(await peers.get(), client, receiver)

    yield open_session
    for client in clients:
        client.abort()
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_messages_both_ways_at_every_header_size(dial: object) -> None:
    session: Session = await dial(binary=True)  # type: ignore[operator]
    peer, client, receiver = session.peer, session.client, session.receiver
    for size in EDGE_SIZES:
        payload = os.urandom(size)
        client.send(payload)
        frame = await peer.next_frame()  # websockets unmasked it (and would refuse it unmasked)
        assert (frame.opcode, frame.fin, frame.data) == (Opcode.BINARY, True, payload)
        peer.write_frames([Frame(Opcode.BINARY, payload)], piece=7 if size < 1000 else 4093)
        assert await receiver.next_message() == payload


async def test_text_client_sends_text_frames(dial: object) -> None:
    session: Session = await dial()  # type: ignore[operator]
    session.client.send(b'{"id":1}')
    frame = await session.peer.next_frame()
    assert (frame.opcode, frame.data) == (Opcode.TEXT, b'{"id":1}')
    session.peer.write_frames([Frame(Opcode.TEXT, "é".encode())])
    assert await session.receiver.next_message() == "é".encode()


async def test_fragmented_message_with_a_ping_in_between(dial: object) -> None:
    session: Session = await dial(binary=True)  # type: ignore[operator]
    peer, receiver = session.peer, session.receiver
    peer.write_frames(
        [
            Frame(Opcode.BINARY, b"ab", fin=False),
            Frame(Opcode.PING, b"are you there"),
            Frame(Opcode.CONT, b"c" * 70_000, fin=False),
            Frame(Opcode.CONT, b"d", fin=True),
            Frame(Opcode.BINARY, b"next"),
        ],
        piece=1000,
    )
    assert await receiver.next_message() == b"ab" + b"c" * 70_000 + b"d"
    assert await receiver.next_message() == b"next"
    pong = await peer.next_frame()
    assert (pong.opcode, pong.data) == (Opcode.PONG, b"are you there")


async def test_keepalive_ping_is_sent_and_its_pong_read(dial: object) -> None:
    session: Session = await dial(binary=True, ping_interval_s=0.05)  # type: ignore[operator]
    ping = await session.peer.next_frame()
    assert ping.opcode is Opcode.PING  # the peer's protocol answers it
    second = await session.peer.next_frame()
    assert second.opcode is Opcode.PING
    assert not session.receiver.lost.done()


async def test_close_from_the_server_is_answered_with_its_code(dial: object) -> None:
    session: Session = await dial(binary=True)  # type: ignore[operator]
    session.peer.ws.send_close(1001, "going away")
    session.peer.flush()
    answer = await session.peer.next_frame()
    assert answer.opcode is Opcode.CLOSE
    assert Close.parse(answer.data).code == 1001
    await session.receiver.wait_lost()
    await asyncio.wait_for(session.client.wait_closed(), 10 * TIME)


async def test_close_from_the_client(dial: object) -> None:
    session: Session = await dial(binary=True)  # type: ignore[operator]
    session.client.close()
    frame = await session.peer.next_frame()
    assert frame.opcode is Opcode.CLOSE and Close.parse(frame.data).code == 1000
    session.client.send(b"after close")  # dropped, not sent
    await asyncio.wait_for(session.client.wait_closed(), 10 * TIME)
    assert session.peer.frames.empty()


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param([Frame(Opcode.BINARY, b"x" * 1001)], id="frame-over-limit"),
        pytest.param(
            [Frame(Opcode.BINARY, b"x" * 600, fin=False), Frame(Opcode.CONT, b"x" * 401)],
            id="fragments-over-limit",
        ),
        pytest.param([bytes((0x80 | 0x40 | 0x2, 1)) + b"x"], id="reserved-bit"),
        pytest.param([bytes((0x80 | 0x3, 0))], id="unknown-opcode"),
        pytest.param([bytes((0x9, 0))], id="fragmented-ping"),
        pytest.param([Frame(Opcode.CONT, b"x")], id="stray-continuation"),
        pytest.param(
            [Frame(Opcode.TEXT, b"x", fin=False), Frame(Opcode.TEXT, b"y")],
            id="missing-continuation",
        ),
        pytest.param([Frame(Opcode.CLOSE, b"\x03")], id="malformed-close"),
    ],
)
async def test_bad_frames_drop_the_connection(dial: object, frames: list[Frame | bytes]) -> None:
    session: Session = await dial(binary=True, max_message_bytes=1000)  # type: ignore[operator]
    session.peer.write_frames([Frame(Opcode.BINARY, b"x" * 1000)])
    assert await session.receiver.next_message() == b"x" * 1000  # the limit itself is fine
    session.peer.write_frames(frames)
    await session.receiver.wait_lost()
    await asyncio.wait_for(asyncio.shield(session.peer.lost), 10 * TIME)
    assert session.receiver.messages.empty()


async def test_a_masked_frame_from_the_server_drops_the_connection(dial: object) -> None:
    session: Session = await dial(binary=True)  # type: ignore[operator]
    assert session.peer.transport is not None
    session.peer.transport.write(Frame(Opcode.BINARY, b"masked").serialize(mask=True))
    await session.receiver.wait_lost()
    assert session.receiver.messages.empty()


async def test_frames_right_behind_the_101_are_read(dial: object) -> None:
    """A server may write its first frames in the same segment as the upgrade response."""
    peers: asyncio.Queue[Peer] = asyncio.Queue()

    class EagerPeer(Peer):
        def data_received(self, data: bytes) -> None:
            self.ws.receive_data(data)
            for event in self.ws.events_received():
                if isinstance(event, Request):
                    self.ws.send_response(self.ws.accept(event))
                    self.ws.send_binary(b"first")
            assert self.transport is not None
            self.transport.write(b"".join(self.ws.data_to_send()))

    def factory() -> Peer:
        peer = EagerPeer()
        peers.put_nowait(peer)
        return peer

    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    try:
        receiver = Receiver()
        port = server.sockets[0].getsockname()[1]
        client = await connect_websocket(f"ws://127.0.0.1:{port}/", receiver, binary=True)
        try:
            assert await receiver.next_message() == b"first"
        finally:
            client.abort()
    finally:
        server.close()
        await server.wait_closed()


async def test_send_many_keeps_every_frame_in_order_when_the_socket_fills(dial: object) -> None:
    """Frames written together (`writev` while the socket takes them): when it stops taking
    them, the rest of a call (from the middle of a frame) waits in the transport's buffer,
    and later calls queue behind it."""
    session: Session = await dial(binary=True)  # type: ignore[operator]
    peer, client = session.peer, session.client
    assert peer.transport is not None and client._transport is not None
    peer.transport.pause_reading()
    payloads = [os.urandom(100_003) for _ in range(240)]  # 24 MB: more than the socket buffers
    for start in range(0, len(payloads), 3):
        client.send_many(payloads[start : start + 3])
    assert client._transport.get_write_buffer_size() > 0  # the socket filled up
    many_small = [b"%d" % i for i in range(100)]  # more frames than one writev takes
    client.send_many(many_small)
    peer.transport.resume_reading()
    for payload in [*payloads, *many_small]:
        frame = await peer.next_frame()
        assert (frame.opcode, frame.data) == (Opcode.BINARY, payload)
