"""Held sends (transport/held.py): messages sent during one piece of work leave a relay stream
as one record, in order, when the work ends; the child reaper holds them around an exit."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable

from execserver.local.reaper import ChildReaper
from execserver.relay.frames import Data, Reset, decode_frame
from execserver.relay.noise import CipherState, NoiseTransport
from execserver.relay.records import RecordOpener
from execserver.relay.stream import NoiseStream
from execserver.server.app import ExecServer
from execserver.transport.held import held_sends

KEY = bytes(range(32))


class Wire:
    """A FrameLink that keeps every frame written."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.ended: list[str] = []

    def send_frame(self, frame: bytes) -> None:
        self.frames.append(frame)

    def send_frames(self, frames: list[bytes]) -> None:
        self.frames.extend(frames)

    def is_congested(self) -> bool:
        return False

    def call_when_writable(self, callback: Callable[[], None]) -> None:
        callback()

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def stream_ended(self, stream_id: str) -> None:
        self.ended.append(stream_id)


def stream(wire: Wire, stream_id: str = "s1") -> NoiseStream:
    keys = NoiseTransport(send=CipherState(KEY), receive=CipherState(bytes(32)))
    return NoiseStream(wire, stream_id, keys, "test")


def records(wire: Wire, stream_id: str = "s1") -> list[list[bytes]]:
    """The messages of each data frame of `stream_id`, frame by frame."""
    opener = RecordOpener(CipherState(KEY))
    out = []
    for raw in wire.frames:
        frame = decode_frame(raw)
        if frame.stream_id == stream_id and isinstance(frame.body, Data):
            out.append(opener.open(frame.body.seq, frame.body.payload))
    return out


def test_outside_a_block_every_message_is_its_own_record() -> None:
    wire = Wire()
    s = stream(wire)
    s.send(b'{"a":1}')
    s.send(b'{"b":2}')
    assert records(wire) == [[b'{"a":1}'], [b'{"b":2}']]


def test_a_block_sends_its_messages_as_one_record_when_it_ends() -> None:
    wire = Wire()
    s = stream(wire)
    with held_sends():
        s.send(b'{"exited":1}')
        s.send(b'{"closed":2}')
        assert wire.frames == []  # nothing leaves before the work is done
    assert records(wire) == [[b'{"exited":1}', b'{"closed":2}']]
    s.send(b'{"later":3}')  # after the block: at once again
    assert records(wire) == [[b'{"exited":1}', b'{"closed":2}'], [b'{"later":3}']]


def test_each_stream_of_a_block_gets_its_own_record_and_nesting_flushes_once() -> None:
    wire = Wire()
    one, two = stream(wire, "s1"), stream(wire, "s2")
    with held_sends():
        one.send(b"1a")
        with held_sends():
            two.send(b"2a")
            one.send(b"1b")
        assert wire.frames == []  # the inner block does not flush
        two.send(b"2b")
    assert records(wire, "s1") == [[b"1a", b"1b"]]
    assert records(wire, "s2") == [[b"2a", b"2b"]]
    assert len(wire.frames) == 2


def test_close_inside_a_block_sends_the_held_messages_before_the_reset() -> None:
    wire = Wire()
    s = stream(wire)
    with held_sends():
        s.send(b"last words")
        s.close()
        s.send(b"after the end")  # dropped, as any send after the end
    kinds = [type(decode_frame(raw).body) for raw in wire.frames]
    assert kinds == [Data, Reset]
    assert records(wire) == [[b"last words"]]
    assert wire.ended == ["s1"]


def test_a_stream_reset_by_the_peer_drops_what_it_held() -> None:
    wire = Wire()
    s = stream(wire)
    with held_sends():
        s.send(b"held")
        s.reset_received()
    assert wire.frames == []


def test_a_block_holds_only_its_own_threads_sends() -> None:
    wire = Wire()
    s = stream(wire)
    with held_sends():
        other = threading.Thread(target=s.send, args=(b"from another thread",))
        other.start()
        other.join()
        assert records(wire) == [[b"from another thread"]]  # sent at once, not held here
        s.send(b"held")
    assert records(wire) == [[b"from another thread"], [b"held"]]


def start_true() -> int:
    """A child that exits at once (posix_spawn returns as soon as it has been executed)."""
    return os.posix_spawn("/bin/true", ["/bin/true"], dict(os.environ))


async def test_the_reaper_sends_what_an_exit_produces_as_one_record() -> None:
    wire = Wire()
    s = stream(wire)
    exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def on_exit(status: int) -> None:
        s.send(b'{"method":"process/exited"}')
        s.send(b'{"method":"process/closed"}')
        exited.set_result(status)

    reaper = ChildReaper(asyncio.get_running_loop(), held_sends)
    try:
        pid = start_true()
        reaper.watch(pid, on_exit)
        assert await asyncio.wait_for(exited, 10) == 0
    finally:
        reaper.close()
    assert records(wire) == [[b'{"method":"process/exited"}', b'{"method":"process/closed"}']]


async def test_the_server_holds_what_an_exit_produces() -> None:
    """The executor wires the reaper's exit scope (the reaper itself, in the local layer,
    knows nothing of transports)."""
    server = ExecServer()
    try:
        assert server.host.reaper.exit_scope is held_sends
    finally:
        await server.aclose()
