"""A rendezvous socket's fast path (relay/service/links.py) on both event loops the relay runs
on: a frame offered while the outbox is empty goes to the transport at once."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from execserver import event_loop
from execserver.relay.service.links import Link
from tests.conftest import TIME


async def _fast_path_round() -> None:
    loop = asyncio.get_running_loop()
    received = bytearray()
    arrived = asyncio.Event()

    class Sink(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            received.extend(data)
            arrived.set()

    server = await loop.create_server(Sink, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
    try:
        link = Link(web.WebSocketResponse(), 1 << 20, transport)
        assert link.offer(b"hello")
        assert link.outbox.empty, "queued for the writer task instead of written at once"
        # Once something waits in the outbox, later frames queue behind it (order kept).
        link.outbox.offer(b"queued")
        assert link.offer(b"later")
        assert link.outbox.queued_bytes == len(b"queued") + len(b"later")
        async with asyncio.timeout(10 * TIME):
            while len(received) < 7:
                arrived.clear()
                await arrived.wait()
        assert bytes(received) == b"\x82\x05hello"  # an unmasked binary frame, as aiohttp's
    finally:
        transport.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("loop_name", ["uvloop", "asyncio"])
def test_link_writes_at_once_on_either_loop(loop_name: event_loop.EventLoopName) -> None:
    """uvloop's transports are not `asyncio.WriteTransport`s; the fast path must not depend
    on that (it did: on uvloop every frame took the writer task)."""
    event_loop.run(_fast_path_round(), event_loop.loop_factory(loop_name))
