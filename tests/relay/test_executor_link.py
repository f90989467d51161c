"""Our relay-mode executor (`RelayExecutor` / `ExecutorLink`) behind our relay, driven by a raw
harness that speaks frames, Noise and records itself (tests/harness/relay_wire.py) so that it
can misbehave on purpose: bad handshakes and the failure pause, the stream and validation
limits, data out of place, the record layer's window and sizes, oversized WebSocket messages,
resets from either side and session resumption on a new stream (RELAY.md §5, §7, §8).

The relay and the executor run in the test's loop (the executor with an injected monotonic
clock where the 10 s handshake pause matters); nothing sleeps in place of an event: every wait
polls the executor's or the relay's state with a deadline.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from execserver.relay.executor import HANDSHAKE_PAUSE_S, MAX_FAILED_HANDSHAKES
from execserver.relay.frames import Data, Frame, Handshake, Reset, encode_data
from execserver.relay.harness import RelayAuthError, RelayTarget, connect_relay
from execserver.relay.noise import REJECTION_SIGNAL, NoiseIdentity
from execserver.relay.records import MAX_RECORD_PLAINTEXT, REORDER_WINDOW
from execserver.relay.stream import PROTOCOL_ERROR
from tests.harness.receiver import Receiver
from tests.harness.relay_wire import (
    ExecutorUnderTest,
    RelayHarness,
    WireStream,
    b64,
    fake_relay,
    new_stream_id,
    poll,
    registry_proxy,
    running_executor,
)
from tests.relay.support import HARNESS_TOKEN, RelayUnderTest, running_relay
from tests.server.test_file_system import uri

ENV = "env1"
RESET = Reset(PROTOCOL_ERROR)


class MonotonicClock:
    """The executor's monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def relay() -> AsyncIterator[RelayUnderTest]:
    async with running_relay() as relay:
        yield relay


@pytest.fixture
def clock() -> MonotonicClock:
    return MonotonicClock()


@pytest.fixture
async def executor(
    relay: RelayUnderTest, clock: MonotonicClock
) -> AsyncIterator[ExecutorUnderTest]:
    async with running_executor(relay.url, ENV, clock=clock) as executor:
        yield executor


@pytest.fixture
def harness(relay: RelayUnderTest) -> RelayHarness:
    return RelayHarness(relay.session, relay.url, ENV)


def relay_gauge(relay: RelayUnderTest, name: str) -> int:
    return relay.server.hub.gauges()[name]


async def relay_idle(relay: RelayUnderTest, executor: ExecutorUnderTest) -> None:
    """Both ends forgot every stream (the relay's routes, the executor's slots)."""
    await executor.wait_idle()
    await poll(lambda: relay_gauge(relay, "streams_active") == 0, what="relay streams_active 0")


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes((data[index] ^ 0x01,)) + data[index + 1 :]


# -- handshakes -----------------------------------------------------------------------------------


async def test_executor_link_serves_a_stream(
    relay: RelayUnderTest, executor: ExecutorUnderTest, harness: RelayHarness
) -> None:
    """A well-formed handshake gets an empty msg2; the stream carries JSON-RPC and holds one
    slot until the harness goes."""
    stream = await harness.connect()
    response = await stream.initialize()
    assert "sessionId" in response["result"]
    assert executor.stream_count == 1
    assert relay.server.metrics.value("validations_total", outcome="valid") == 1
    await stream.close()
    await relay_idle(relay, executor)


async def test_executor_link_wrong_executor_key_is_reset(
    relay: RelayUnderTest, executor: ExecutorUnderTest, harness: RelayHarness
) -> None:
    """msg1 sealed to another responder key does not open: reset, before any validation."""
    other = NoiseIdentity.generate().public_key
    attempt = await harness.attempt(executor_key=other)
    assert (attempt.outcome, attempt.reset_reason) == ("reset", PROTOCOL_ERROR)
    assert (
        relay.server.metrics.value("registry_requests_total", operation="validate", status="200")
        == 0
    )
    await attempt.close()
    await relay_idle(relay, executor)


@pytest.mark.parametrize(
    "defect",
    ["garbled", "replayed", "other_harness_key", "too_long", "not_utf8", "truncated_msg1"],
)
async def test_executor_link_bad_authorization_is_reset(
    relay: RelayUnderTest, executor: ExecutorUnderTest, harness: RelayHarness, defect: str
) -> None:
    """An authorization the registry did not issue for this key (garbled, used once already,
    issued to another harness), one over 4096 bytes or not UTF-8, and a cut msg1: reset."""
    kwargs: dict[str, Any] = {}
    if defect == "garbled":
        bundle = await harness.bundle()
        auth = bundle.harness_key_authorization
        kwargs = {"bundle": bundle, "authorization": auth[:-1] + ("A" if auth[-1] != "A" else "B")}
    elif defect == "replayed":
        first = await harness.bundle()
        stream = await harness.connect(bundle=first)
        await stream.close()
        kwargs = {"authorization": first.harness_key_authorization}
    elif defect == "other_harness_key":
        other = RelayHarness(relay.session, relay.url, ENV)
        kwargs = {"authorization": (await other.bundle()).harness_key_authorization}
    elif defect == "too_long":
        kwargs = {"authorization": "a" * 4097}
    elif defect == "not_utf8":
        kwargs = {"authorization": b"\xff\xfe"}
    else:
        kwargs = {"message1": lambda msg1: msg1[:-1]}
    attempt = await harness.attempt(**kwargs)
    assert (attempt.outcome, attempt.reset_reason) == ("reset", PROTOCOL_ERROR)
    await attempt.close()
    await relay_idle(relay, executor)
    # The socket and the executor are fine: the next honest harness gets in.
    stream = await harness.connect()
    assert "result" in await stream.initialize()
    await stream.close()


async def used_authorizations(harness: RelayHarness, count: int) -> list[str]:
    """Authorizations of bundles that opened a stream already (a replay is refused)."""
    used = []
    for _ in range(count):
        bundle = await harness.bundle()
        stream = await harness.connect(bundle=bundle)
        await stream.close()
        used.append(bundle.harness_key_authorization)
    return used


async def failed_handshake(harness: RelayHarness, kind: int, used: list[str]) -> None:
    """One handshake the executor must refuse and count: another executor key, a forged
    authorization, a tampered msg1, or a replayed authorization (taken from `used`)."""
    if kind == 0:
        attempt = await harness.attempt(executor_key=NoiseIdentity.generate().public_key)
    elif kind == 1:
        attempt = await harness.attempt(authorization="forged-authorization")
    elif kind == 2:
        attempt = await harness.attempt(message1=lambda msg1: flip(msg1, 1200))
    else:
        attempt = await harness.attempt(authorization=used.pop())
    assert (attempt.outcome, attempt.reset_reason) == ("reset", PROTOCOL_ERROR)
    await attempt.close()


async def test_executor_link_pauses_handshakes_after_8_failures(
    relay: RelayUnderTest,
    executor: ExecutorUnderTest,
    harness: RelayHarness,
    clock: MonotonicClock,
) -> None:
    """Eight failed handshakes of any kind on one socket: every handshake is reset for 10 s
    (the executor's clock), the socket stays up, then handshakes are accepted again."""
    used = await used_authorizations(harness, 4)
    for index in range(MAX_FAILED_HANDSHAKES - 1):
        await failed_handshake(harness, index % 4, used)
    # Seven failures: not yet paused.
    stream = await harness.connect()
    await stream.close()
    for index in range(MAX_FAILED_HANDSHAKES):  # (a success restarted the count)
        await failed_handshake(harness, index % 4, used)
    refused = await harness.attempt()
    assert (refused.outcome, refused.reset_reason) == ("reset", PROTOCOL_ERROR)
    await refused.close()
    clock.now += HANDSHAKE_PAUSE_S - 0.01
    still = await harness.attempt()
    assert still.outcome == "reset"
    await still.close()
    clock.now += 0.01
    stream = await harness.connect()
    assert "result" in await stream.initialize()
    await stream.close()
    assert executor.counter("rendezvous_connections") == 1


async def test_executor_link_handshake_pause_is_a_parameter(relay: RelayUnderTest) -> None:
    """`RelayExecutor(handshake_pause_s=…)` sets the pause length."""
    clock = MonotonicClock()
    async with running_executor(relay.url, ENV, clock=clock, handshake_pause_s=2.0) as executor:
        harness = RelayHarness(relay.session, relay.url, ENV)
        for _ in range(MAX_FAILED_HANDSHAKES):
            await failed_handshake(harness, 0, [])
        assert (await harness.attempt()).outcome == "reset"
        clock.now += 2.0
        stream = await harness.connect()
        await stream.close()
        await executor.wait_idle()


# -- limits ---------------------------------------------------------------------------------------


@pytest.fixture
async def wide_relay() -> AsyncIterator[RelayUnderTest]:
    """A relay that lets an executor carry more streams than the executor itself does."""
    async with running_relay(max_streams_per_executor=200) as relay:
        yield relay


async def test_executor_link_128_streams_at_most(wide_relay: RelayUnderTest) -> None:
    """128 streams on one socket; the 129th handshake is reset; a freed slot is reusable; and
    handshakes awaiting validation count toward the 128, so they can never exceed it."""
    relay = wide_relay
    async with (
        registry_proxy(relay.url) as proxy,
        running_executor(proxy.url, ENV) as executor,
    ):
        harness = RelayHarness(relay.session, relay.url, ENV)
        streams = [await harness.connect() for _ in range(128)]
        assert executor.stream_count == 128
        extra = await harness.attempt()
        assert (extra.outcome, extra.reset_reason) == ("reset", PROTOCOL_ERROR)
        await extra.close()
        await streams.pop().close()
        await poll(lambda: executor.stream_count == 127, what="a freed slot")
        # One slot left: a handshake waiting for its validation takes it.
        proxy.hold_validations = True
        bundle = await harness.bundle()
        pending = asyncio.ensure_future(harness.attempt(bundle=bundle))
        await poll(lambda: executor.pending_validations == 1, what="a pending validation")
        late = await harness.attempt()
        assert (late.outcome, late.reset_reason) == ("reset", PROTOCOL_ERROR)
        await late.close()
        proxy.release()
        admitted = await pending
        assert admitted.stream is not None, admitted.outcome
        assert executor.stream_count == 128
        streams.append(admitted.stream)
        # Every stream still works.
        for stream in random.Random(1).sample(streams, 4):
            assert "result" in await stream.initialize()
        for stream in streams:
            await stream.close()
        await relay_idle(relay, executor)


async def test_executor_link_32_pending_validations_at_most(relay: RelayUnderTest) -> None:
    """While 32 handshakes await the registry, a 33rd is reset; once the registry answers all
    32 streams are established."""
    async with (
        registry_proxy(relay.url) as proxy,
        running_executor(proxy.url, ENV) as executor,
    ):
        harness = RelayHarness(relay.session, relay.url, ENV)
        proxy.hold_validations = True
        bundles = [await harness.bundle() for _ in range(32)]
        waiting = [asyncio.ensure_future(harness.attempt(bundle=bundle)) for bundle in bundles]
        await poll(lambda: executor.pending_validations == 32, what="32 pending validations")
        extra = await harness.attempt()
        assert (extra.outcome, extra.reset_reason) == ("reset", PROTOCOL_ERROR)
        await extra.close()
        proxy.release()
        attempts = [await task for task in waiting]
        assert [a.outcome for a in attempts] == ["established"] * 32
        for attempt in attempts:
            await attempt.close()
        await relay_idle(relay, executor)


async def test_executor_link_data_for_an_unknown_stream_is_reset(
    relay: RelayUnderTest, executor: ExecutorUnderTest, harness: RelayHarness
) -> None:
    """`data` on a stream the executor never accepted (or that was reset) gets a reset."""
    socket = await harness.socket()
    stream_id = new_stream_id()
    await socket.send(encode_data(stream_id, 0, b"x" * 32))
    frame = await socket.next_frame()
    assert frame == Frame(stream_id, RESET)
    await socket.close()
    # A stream the harness reset: the next data on it (from a new socket) is reset too.
    stream = await harness.connect()
    await stream.send_reset()
    await executor.wait_idle()
    await poll(lambda: relay_gauge(relay, "streams_active") == 0, what="route released")
    await stream.close()
    socket = await harness.socket()
    await socket.send(encode_data(stream.stream_id, 0, b"x" * 32))
    assert await socket.next_frame() == Frame(stream.stream_id, RESET)
    await socket.close()
    await relay_idle(relay, executor)


async def test_executor_link_data_during_validation_is_reset_and_counted(
    relay: RelayUnderTest, clock: MonotonicClock
) -> None:
    """`data` while the stream's validation is pending: reset, and a failed handshake (eight
    of them pause handshakes)."""
    async with (
        registry_proxy(relay.url) as proxy,
        running_executor(proxy.url, ENV, clock=clock) as executor,
    ):
        harness = RelayHarness(relay.session, relay.url, ENV)
        proxy.hold_validations = True
        for _ in range(MAX_FAILED_HANDSHAKES):
            stream_id = new_stream_id()
            attempt = await harness.attempt(
                stream_id=stream_id, extra=[Frame(stream_id, Data(0, b"early"))]
            )
            assert (attempt.outcome, attempt.reset_reason) == ("reset", PROTOCOL_ERROR)
            await attempt.close()
        assert executor.pending_validations == 0
        proxy.release()
        paused = await harness.attempt()
        assert paused.outcome == "reset"
        await paused.close()
        clock.now += HANDSHAKE_PAUSE_S
        stream = await harness.connect()
        await stream.close()
        await relay_idle(relay, executor)


async def test_executor_link_second_handshake_on_an_active_stream(
    relay: RelayUnderTest, executor: ExecutorUnderTest, harness: RelayHarness
) -> None:
    """A handshake for a stream that is already established is reset; that reset ends the
    stream for the relay and the harness, so the executor ends it too (frees its slot,
    detaches its session)."""
    stream = await harness.connect()
    session_id = (await stream.initialize())["result"]["sessionId"]
    again = harness.initiator(await harness.bundle(), stream.stream_id)
    await stream.socket.send_frame(Frame(stream.stream_id, Handshake(again.write_message1(b"x"))))
    assert await stream.wait_reset() == PROTOCOL_ERROR
    await relay_idle(relay, executor)
    await stream.close()
    # The session was detached, as after any other reset.
    resumed, response = await harness.resume(session_id)
    assert response["result"]["sessionId"] == session_id
    await resumed.close()


# -- records --------------------------------------------------------------------------------------


@pytest.fixture
async def session(executor: ExecutorUnderTest, harness: RelayHarness) -> AsyncIterator[WireStream]:
    """An initialized stream."""
    stream = await harness.connect()
    assert "result" in await stream.initialize()
    yield stream
    await stream.close()


async def test_executor_link_reorders_records_within_the_window(
    session: WireStream, tmp_path: Path
) -> None:
    """Records of one message sent in reverse order are decrypted and delivered in order."""
    data = random.Random(7).randbytes(300_000)
    path = tmp_path / "reordered"
    records = session.seal(
        {
            "id": 100,
            "method": "fs/writeFile",
            "params": {"path": uri(path), "dataBase64": b64(data)},
        }
    )
    assert len(records) > 5
    await session.send_records(reversed(records))
    response = await session.wait_for(lambda m: m.get("id") == 100)
    assert "result" in response, response
    assert path.read_bytes() == data


def answers(request_id: int) -> Callable[[dict[str, Any]], bool]:
    return lambda message: message.get("id") == request_id and "method" not in message


async def test_executor_link_reorder_window_is_64(
    executor: ExecutorUnderTest, harness: RelayHarness
) -> None:
    """A record 64 ahead of the next one is held; 65 ahead resets the stream."""
    stream = await harness.connect()
    messages: list[dict[str, Any]] = [
        {"id": 0, "method": "initialize", "params": {"clientName": "w", "resumeSessionId": None}},
        {"method": "initialized", "params": {}},
    ]
    messages += [
        {"id": i, "method": "environment/info", "params": {}} for i in range(1, REORDER_WINDOW)
    ]
    records = [record for message in messages for record in stream.seal(message)]
    assert records[-1][0] == REORDER_WINDOW
    await stream.send_records([records[-1], *records[:-1]])
    for request_id in range(REORDER_WINDOW):
        response = await stream.wait_for(answers(request_id))
        assert "result" in response, response
    await stream.close()
    stream = await harness.connect()
    seq, ciphertext = stream.seal({"id": 1, "method": "environment/info", "params": {}})[0]
    await stream.socket.send(encode_data(stream.stream_id, seq + REORDER_WINDOW + 1, ciphertext))
    assert await stream.wait_reset() == PROTOCOL_ERROR
    await executor.wait_idle()
    await stream.close()


async def test_executor_link_record_size_limit(
    executor: ExecutorUnderTest, harness: RelayHarness
) -> None:
    """A record of 61440 plaintext bytes is read; one of 61441 resets the stream."""
    stream = await harness.connect()
    assert "result" in await stream.initialize()
    base = {"id": 5, "method": "environment/info", "params": {}, "pad": ""}
    padding = MAX_RECORD_PLAINTEXT - 4 - len(json.dumps(base).encode())
    exact = stream.seal(json.dumps({**base, "pad": "p" * padding}).encode())
    assert len(exact) == 1 and len(exact[0][1]) == MAX_RECORD_PLAINTEXT + 16
    await stream.send_records(exact)
    assert "result" in await stream.wait_for(lambda m: m.get("id") == 5)
    await stream.send_records([stream.raw_record(b"\x00" * (MAX_RECORD_PLAINTEXT + 1))])
    assert await stream.wait_reset() == PROTOCOL_ERROR
    await executor.wait_idle()
    await stream.close()


async def test_executor_link_large_messages_round_trip(session: WireStream, tmp_path: Path) -> None:
    """fs/writeFile of 1 MiB + 1 (many records), fs/readFile of it back, and 2 MiB + 3 of
    process output all arrive byte-exact."""
    data = random.Random(3).randbytes((1 << 20) + 1)
    path = tmp_path / "big"
    await session.call("fs/writeFile", {"path": uri(path), "dataBase64": b64(data)}, timeout=30)
    assert path.read_bytes() == data
    read = await session.call("fs/readFile", {"path": uri(path)}, timeout=30)
    assert base64.b64decode(read["dataBase64"]) == data
    size = (2 << 20) + 3
    script = (
        "import random, sys; "
        f"sys.stdout.buffer.write(random.Random(5).randbytes({size})); sys.stdout.flush()"
    )
    await session.call(
        "process/start",
        {
            "processId": "big",
            "argv": [sys.executable, "-c", script],
            "cwd": uri(tmp_path),
            "env": {"PATH": "/usr/bin:/bin"},
            "tty": False,
        },
    )
    await session.wait_for(
        lambda m: m.get("method") == "process/closed" and m["params"]["processId"] == "big",
        timeout=60,
    )
    output = b"".join(
        base64.b64decode(m["params"]["chunk"])
        for m in session.notifications("process/output")
        if m["params"]["processId"] == "big"
    )
    assert output == random.Random(5).randbytes(size)


# -- oversized WebSocket messages -----------------------------------------------------------------


async def test_executor_link_oversized_message_kills_the_socket() -> None:
    """A relay that forwards a message of 262144 bytes leaves the executor's socket up; one of
    262145 bytes kills it, and the executor dials again and serves a new harness."""
    async with (
        running_relay(max_message_bytes=1 << 20) as relay,
        running_executor(relay.url, ENV) as executor,
    ):
        harness = RelayHarness(relay.session, relay.url, ENV)
        for size, survives in ((262_144, True), (262_145, False)):
            socket = await harness.socket()
            stream_id = new_stream_id()
            frame = data_frame_of_size(stream_id, size)
            await socket.send(frame)
            if survives:
                assert await socket.next_frame() == Frame(stream_id, RESET)
                assert executor.counter("rendezvous_connections") == 1
            else:
                await poll(
                    lambda: executor.counter("rendezvous_connections") == 2,
                    what="the executor to dial again",
                )
                # The relay ended the stream when the executor's socket went.
                assert await socket.wait_closed() is not None
            await socket.close()
        await executor.wait_connected()
        stream = await harness.connect()
        assert "result" in await stream.initialize()
        await stream.close()


def data_frame_of_size(stream_id: str, size: int) -> bytes:
    overhead = len(encode_data(stream_id, 0, b""))
    for payload_size in range(size - overhead, size - overhead - 8, -1):
        frame = encode_data(stream_id, 0, b"p" * payload_size)
        if len(frame) == size:
            return frame
    raise AssertionError(size)


# -- resets from either side ----------------------------------------------------------------------

LINES = 400


def numbered_lines_argv(go: Path) -> list[str]:
    """Print `line N` for N < LINES; after the first 50, wait until `go` exists."""
    script = (
        "import os, sys, time\n"
        f"for n in range({LINES}):\n"
        "    if n == 50:\n"
        f"        while not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
        "    sys.stdout.write(f'line {n}\\n'); sys.stdout.flush()\n"
    )
    return [sys.executable, "-c", script]


@pytest.mark.parametrize("how", ["reset_frame", "socket_closed"])
async def test_executor_link_resumes_a_session_on_a_new_stream(
    relay: RelayUnderTest,
    executor: ExecutorUnderTest,
    harness: RelayHarness,
    tmp_path: Path,
    how: str,
) -> None:
    """The harness resets its stream (or its socket goes, and the relay resets it): the
    session detaches; `initialize{resumeSessionId}` on a new stream resumes it and
    `process/read` from the last seen seq catches up: every line exactly once."""
    stream = await harness.connect()
    session_id = (await stream.initialize())["result"]["sessionId"]
    go = tmp_path / "go"
    await stream.call(
        "process/start",
        {
            "processId": "lines",
            "argv": numbered_lines_argv(go),
            "cwd": uri(tmp_path),
            "env": {"PATH": "/usr/bin:/bin"},
            "tty": False,
        },
    )

    def seen() -> bytes:
        return b"".join(
            base64.b64decode(m["params"]["chunk"]) for m in stream.notifications("process/output")
        )

    await poll(lambda: seen().count(b"\n") >= 50, what="50 lines")
    last_seq = max(m["params"]["seq"] for m in stream.notifications("process/output"))
    before = seen()
    if how == "reset_frame":
        await stream.send_reset()
    else:
        await stream.close()
    await relay_idle(relay, executor)
    go.touch()  # the rest is printed while the session is detached (or being resumed)
    await stream.close()
    resumed, response = await harness.resume(session_id)
    assert response["result"]["sessionId"] == session_id
    after = b""
    closed = False
    while not closed:
        read = await resumed.call(
            "process/read", {"processId": "lines", "afterSeq": last_seq, "waitMs": 1000}
        )
        for chunk in read["chunks"]:
            assert chunk["seq"] > last_seq
            last_seq = chunk["seq"]
            after += base64.b64decode(chunk["chunk"])
        closed = read["closed"]
    assert (before + after).decode().splitlines() == [f"line {n}" for n in range(LINES)]
    await resumed.close()


async def test_executor_link_executor_reset_reaches_the_harness(
    relay: RelayUnderTest, executor: ExecutorUnderTest, harness: RelayHarness
) -> None:
    """A record that does not decrypt makes the executor reset the stream: the harness gets
    the reset, both ends free the stream, and the session can be resumed."""
    stream = await harness.connect()
    session_id = (await stream.initialize())["result"]["sessionId"]
    seq, ciphertext = stream.seal({"id": 9, "method": "environment/info", "params": {}})[0]
    await stream.socket.send(encode_data(stream.stream_id, seq, flip(ciphertext, 3)))
    assert await stream.wait_reset() == PROTOCOL_ERROR
    await relay_idle(relay, executor)
    await stream.close()
    resumed, response = await harness.resume(session_id)
    assert response["result"]["sessionId"] == session_id
    await resumed.close()


async def test_executor_link_reset_reaches_our_harness_client(
    relay: RelayUnderTest, executor: ExecutorUnderTest
) -> None:
    """Our own harness side (`connect_relay`) learns of an executor reset: its receiver sees
    the connection lost and the socket goes."""

    receiver = Receiver()
    channel = await connect_relay(
        RelayTarget(relay.url, ENV, HARNESS_TOKEN), receiver, NoiseIdentity.generate()
    )
    channel.send(b'{"id":1,"method":"initialize","params":{"clientName":"c"}}')
    await poll(lambda: bool(receiver.messages), what="the initialize answer")
    # A response from the client is a protocol violation: the executor drops the connection,
    # which on a relay stream is a reset.
    channel.send(b'{"id":77,"result":{}}')
    await poll(receiver.lost.is_set, what="the reset to reach the harness")
    await channel.wait_closed()
    await relay_idle(relay, executor)


# -- registry answers to /validate -----------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403, 500])
async def test_executor_link_validate_failures(relay: RelayUnderTest, status: int) -> None:
    """The registry refuses the executor's credentials on `/validate` (401): msg2 carries the
    rejection signal, then the stream is reset, and our harness reports an auth error; any
    other failure (403, 500) is a plain reset."""
    async with (
        registry_proxy(relay.url) as proxy,
        running_executor(proxy.url, ENV) as executor,
    ):
        proxy.answers["validate"] = status
        harness = RelayHarness(relay.session, relay.url, ENV)
        attempt = await harness.attempt()
        if status == 401:
            assert attempt.stream is not None
            assert attempt.stream.handshake_payload == REJECTION_SIGNAL
            assert await attempt.stream.wait_reset() == PROTOCOL_ERROR
            with pytest.raises(RelayAuthError, match="executor credentials rejected"):
                await connect_relay(
                    RelayTarget(relay.url, ENV, HARNESS_TOKEN), Receiver(), NoiseIdentity.generate()
                )
        else:
            assert (attempt.outcome, attempt.reset_reason) == ("reset", PROTOCOL_ERROR)
        await attempt.close()
        await relay_idle(relay, executor)
        del proxy.answers["validate"]
        stream = await harness.connect()
        await stream.close()


async def test_executor_link_drops_text_messages() -> None:
    """A text message on the executor's socket is dropped, even one holding a valid frame."""
    async with fake_relay(ENV) as relay, running_executor(relay.url, ENV) as executor:
        stream_id = new_stream_id()
        await relay.send(encode_data(stream_id, 0, b"text").decode("ascii"))
        honest = await relay.attempt(NoiseIdentity.generate())  # (the text was read before)
        assert honest.outcome == "established"
        assert relay.unrouted == []  # no reset for the text's stream
        assert executor.counter("rendezvous_connections") == 1
