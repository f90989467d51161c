"""The relay's direct hand-off of parsed WebSocket messages (relay/service/ws_forward.py):
what is handed over and what is queued, and that order holds through a real relay."""

from __future__ import annotations

import asyncio
import os

from aiohttp import WSMsgType
from aiohttp._websocket.reader import WebSocketReader

from execserver.relay.frames import Frame, Resume, decode_frame, encode_data
from execserver.relay.service.ws_forward import _ForwardingQueue
from tests.conftest import TIME
from tests.relay.support import receive_frame, running_relay


class _Protocol:
    _reading_paused = False

    def pause_reading(self) -> None:
        self._reading_paused = True

    def resume_reading(self) -> None:
        self._reading_paused = False


def _client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (payload < 126 bytes)."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes((0x80 | opcode, 0x80 | len(payload))) + mask + masked


def _reader() -> tuple[_ForwardingQueue, WebSocketReader]:
    queue = _ForwardingQueue(_Protocol(), 2**16, loop=asyncio.get_running_loop())
    return queue, WebSocketReader(queue, 2**20, compress=False, decode_text=False)


async def test_binary_messages_are_handed_over_until_one_is_declined() -> None:
    queue, reader = _reader()
    taken: list[bytes] = []
    accept = {b"a", b"b", b"d"}

    def forward(data: bytes) -> bool:
        if bytes(data) in accept:
            taken.append(bytes(data))
            return True
        return False

    queue.forward = forward
    reader.feed_data(b"".join(_client_frame(0x2, p) for p in (b"a", b"b", b"c", b"d")))
    # "c" was declined, so "d" queues behind it instead of overtaking it.
    assert taken == [b"a", b"b"]
    assert [(await queue.read()).data for _ in range(2)] == [b"c", b"d"]


async def test_control_and_text_frames_and_a_busy_owner_always_queue() -> None:
    queue, reader = _reader()
    taken: list[bytes] = []
    queue.forward = lambda data: taken.append(bytes(data)) is None
    reader.feed_data(_client_frame(0x9, b"ping") + _client_frame(0x1, b"text"))
    assert taken == []
    assert (await queue.read()).type is WSMsgType.PING
    assert (await queue.read()).type is WSMsgType.TEXT
    queue.busy = True  # the owner is routing a message it took from the queue
    reader.feed_data(_client_frame(0x2, b"x"))
    assert taken == []
    assert (await queue.read()).data == b"x"
    queue.busy = False
    reader.feed_data(_client_frame(0x2, b"y"))
    assert taken == [b"y"]


async def test_relay_keeps_order_of_bursts_with_pings_between() -> None:
    """Bursts of small frames both ways, with pings among them, arrive complete and in order
    (most frames take the hand-off, the pings the queue)."""
    async with running_relay() as relay:
        _, executor = await relay.attached_executor("fwd1")
        sid, harness = await relay.harness_stream("fwd1")
        assert decode_frame(await receive_frame(executor)) == Frame(sid, Resume())
        down = [encode_data(sid, seq, b"d%d" % seq) for seq in range(300)]
        up = [encode_data(sid, seq, b"u%d" % seq) for seq in range(300)]
        for i, (d, u) in enumerate(zip(down, up, strict=True)):
            await executor.send_bytes(d)
            await harness.send_bytes(u)
            if i % 50 == 0:
                await executor.ping()
                await harness.ping()
        got_down = [await receive_frame(harness, timeout=10 * TIME) for _ in down]
        got_up = [await receive_frame(executor, timeout=10 * TIME) for _ in up]
        assert got_down == down
        assert got_up == up
        await harness.close()
        await executor.close()
