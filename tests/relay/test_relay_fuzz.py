"""Fuzz our relay-mode executor through our relay, and our relay directly from both roles, with
wrong frames of every kind (tests/harness/relay_fuzz.py): valid frames with bytes flipped, cut,
extended or spliced; random fields, wrong wire types, huge varints; random, blank and huge
stream ids; data before any handshake, handshakes of garbage, real records out of place; text.

Invariants, checked after every example:

* no crash: the relay still routes and our executor still serves a fresh, honest harness
  (handshake, `initialize`, a request) on the same socket it had (the executor's socket is
  never lost: nothing a harness sends through the relay may kill it);
* no hang: each example (send, close, settle, honest check) ends within a bound;
* no leaked slot: once the fuzzing sockets are closed, the relay's /metrics shows
  `streams_active 0` (and no harness socket) and the executor holds no stream and no
  pending validation.

The relay and the executor run in an event loop on a thread of their own, so Hypothesis drives
plain synchronous examples and a hung example is a timeout, not a stuck test.
`EXECSERVER_SOAK=1` runs 25 times as many examples.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import AsyncExitStack
from typing import Any, TypeVar

import aiohttp
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from execserver.relay.executor import HANDSHAKE_PAUSE_S
from execserver.relay.frames import Data, Frame, Reset, Resume, decode_frame, encode_frame
from execserver.relay.noise import NoiseIdentity, NoiseInitiator, prologue
from tests.conftest import SOAK, TIME
from tests.harness.relay_fuzz import Context, Move, moves, render, stream_id_of, text_moves
from tests.harness.relay_wire import (
    ExecutorUnderTest,
    FakeRelay,
    RelayHarness,
    RelaySocket,
    WireStream,
    fake_relay,
    new_stream_id,
    running_executor,
)
from tests.relay.support import RelayUnderTest, running_relay, wait_closed

T = TypeVar("T")
SCALE = 25 if SOAK else 1
EXAMPLE_TIMEOUT_S = 20.0 * TIME
ENV = "fuzz"

FUZZ_SETTINGS = settings(
    deadline=None,
    database=None,
    # The relay and executor carry state from example to example: no shrinking replays.
    phases=[Phase.generate],
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
        HealthCheck.large_base_example,
    ],
)


class LoopThread:
    """An event loop on its own thread; `run()` waits for a coroutine with a deadline."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fuzz-loop")
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = EXAMPLE_TIMEOUT_S) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise AssertionError(f"hang: no end within {timeout:g} s") from None

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class MonotonicClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def metric(page: str, name: str) -> int:
    match = re.search(rf"^exec_server_relay_{name} (\d+)$", page, re.M)
    assert match is not None, page
    return int(match.group(1))


async def relay_settled(relay: RelayUnderTest, *, executors: int) -> None:
    """The relay's /metrics: no stream, no harness socket, `executors` executor sockets."""
    page = ""

    async def settled() -> bool:
        nonlocal page
        page = await relay.metrics()
        return (
            metric(page, "streams_active") == 0
            and metric(page, "harness_sockets") == 0
            and metric(page, "executors_connected") == executors
        )

    try:
        async with asyncio.timeout(10 * TIME):
            while True:
                if await settled():
                    return
                await asyncio.sleep(0.01)  # a poll with a deadline, not a wait for time
    except TimeoutError:
        raise AssertionError(f"the relay did not settle:\n{page}") from None


def summary(name: str, executor: ExecutorUnderTest | None, relay: RelayUnderTest | None) -> None:
    """What the run reached (shown with `pytest -s`)."""
    parts = []
    if executor is not None:
        parts.append(f"executor {dict(sorted(executor.relay.counters.items()))}")
    if relay is not None:
        counters = relay.server.metrics._counters
        parts.append(
            "relay "
            + ", ".join(
                f"{name}{dict(labels)}={value}"
                for (name, labels), value in sorted(counters.items())
            )
        )
    print(f"\nrelay fuzz, {name}: " + "; ".join(parts))


async def close_all(sockets: list[RelaySocket]) -> None:
    for socket in sockets:
        await socket.close()


# -- (a) our executor through our relay -----------------------------------------------------------


class ExecutorBed:
    """Our relay and our executor (fake monotonic clock) in the loop thread."""

    def __init__(self, thread: LoopThread) -> None:
        self.thread = thread
        self.clock = MonotonicClock()
        self._stack = AsyncExitStack()
        self.relay: RelayUnderTest
        self.executor: ExecutorUnderTest
        self.harness: RelayHarness
        self.session_id: str | None = None
        thread.run(self._start())

    async def _start(self) -> None:
        self.relay = await self._stack.enter_async_context(running_relay())
        self.executor = await self._stack.enter_async_context(
            running_executor(self.relay.url, ENV, clock=self.clock)
        )
        self.harness = RelayHarness(self.relay.session, self.relay.url, ENV)

    def close(self) -> None:
        self.thread.run(self._stack.aclose())


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture
def executor_bed(loop_thread: LoopThread) -> Iterator[ExecutorBed]:
    bed = ExecutorBed(loop_thread)
    yield bed
    summary("executor through the relay", bed.executor, bed.relay)
    bed.close()


async def honest_stream(bed: ExecutorBed) -> None:
    """A fresh harness is served correctly: handshake, initialize (resuming the run's
    session), a request, a clean end.

    The executor reads its socket in order, so once this handshake is answered every frame
    the relay forwarded before it has been handled. Failed handshakes may have paused
    handshakes (until the executor's clock passes the pause): then the clock is moved on.
    """
    for _ in range(5):
        attempt = await bed.harness.attempt()
        if attempt.stream is not None:
            break
        await attempt.close()
        bed.clock.now += HANDSHAKE_PAUSE_S
    stream = attempt.stream
    assert stream is not None, "the executor refused every honest handshake"
    assert stream.handshake_payload == b""
    # One session for the whole run, resumed each time (the previous stream has ended).
    response = await stream.initialize(resume=bed.session_id)
    assert "result" in response, response
    bed.session_id = response["result"]["sessionId"]
    info = await stream.request("environment/info")
    assert "result" in info, info
    await stream.close()


async def executor_example(bed: ExecutorBed, established: bool, plan: list[Move]) -> None:
    harness = bed.harness
    bundle = await harness.bundle()
    if established:
        attempt = await harness.attempt(bundle=bundle)
        assert attempt.stream is not None, attempt.outcome
        stream_id, socket = attempt.stream_id, attempt.socket
        seal: Callable[[bytes], list[tuple[int, bytes]]] | None = attempt.stream.seal
    else:
        stream_id, socket, seal = new_stream_id(), await harness.socket(bundle), None
    ctx = Context(
        stream_id,
        lambda: harness.initiator(bundle, stream_id).write_message1(
            bundle.harness_key_authorization.encode()
        ),
        seal,
    )
    for move in plan:
        await socket.send(render(move, ctx))
    await honest_stream(bed)  # (and every move has been handled)
    await socket.close()
    # Settled: both ends forgot the socket's stream; the executor's socket is the first one.
    await relay_settled(bed.relay, executors=1)
    await bed.executor.wait_idle()
    assert bed.executor.counter("rendezvous_connections") == 1
    await honest_stream(bed)
    await relay_settled(bed.relay, executors=1)
    await bed.executor.wait_idle()


@settings(FUZZ_SETTINGS, max_examples=40 * SCALE)
@given(established=st.booleans(), plan=st.lists(moves, min_size=1, max_size=12))
def test_fuzz_executor_through_the_relay(
    executor_bed: ExecutorBed, established: bool, plan: list[Move]
) -> None:
    """Wrong frames from a harness (with or without an established stream) never crash, hang
    or leak a slot of our executor or our relay."""
    executor_bed.thread.run(executor_example(executor_bed, established, plan))


# -- (a') our executor directly: the test is its relay --------------------------------------------


class DirectBed:
    """Our executor (fake monotonic clock) on a fake relay: frames for many streams at once
    on its one socket, any stream id, text (which a real relay never forwards)."""

    def __init__(self, thread: LoopThread) -> None:
        self.thread = thread
        self.clock = MonotonicClock()
        self.identity = NoiseIdentity.generate()
        self.session_id: str | None = None
        self._stack = AsyncExitStack()
        self.relay: FakeRelay
        self.executor: ExecutorUnderTest
        thread.run(self._start())

    async def _start(self) -> None:
        self.relay = await self._stack.enter_async_context(fake_relay(ENV))
        self.executor = await self._stack.enter_async_context(
            running_executor(self.relay.url, ENV, clock=self.clock)
        )

    async def established(self) -> WireStream:
        """An honest stream (moving the executor's clock past a handshake pause if needed)."""
        for _ in range(5):
            attempt = await self.relay.attempt(self.identity)
            if attempt.stream is not None:
                return attempt.stream
            self.clock.now += HANDSHAKE_PAUSE_S
        raise AssertionError("the executor refused every honest handshake")

    async def honest(self) -> None:
        """Served correctly: handshake, the run's session resumed, a request, a clean end."""
        stream = await self.established()
        response = await stream.initialize(resume=self.session_id)
        assert "result" in response, response
        self.session_id = response["result"]["sessionId"]
        info = await stream.request("environment/info")
        assert "result" in info, info
        await stream.close()

    def close(self) -> None:
        self.thread.run(self._stack.aclose())


@pytest.fixture
def direct_bed(loop_thread: LoopThread) -> Iterator[DirectBed]:
    bed = DirectBed(loop_thread)
    yield bed
    summary("executor directly", bed.executor, None)
    bed.close()


async def direct_example(bed: DirectBed, established: int, plan: list[tuple[int, Move]]) -> None:
    relay = bed.relay
    streams = [await bed.established() for _ in range(established)]
    own = relay.stream()  # a stream id nobody has shaken hands on yet
    ids = [own.stream_id] + [stream.stream_id for stream in streams]
    used = set(ids)

    def message1() -> bytes:
        assert relay.executor_key is not None
        initiator = NoiseInitiator(
            bed.identity,
            relay.executor_key,
            prologue(ENV, relay.REGISTRATION_ID, own.stream_id),
        )
        return initiator.write_message1(relay.authorize().encode())

    contexts = [Context(own.stream_id, message1, None, ids)] + [
        Context(stream.stream_id, message1, stream.seal, ids) for stream in streams
    ]
    for slot, move in plan:
        ctx = contexts[slot % len(contexts)]
        if move.kind not in ("raw", "text"):
            used.add(stream_id_of(move, ctx))
        await relay.send(render(move, ctx))
    await bed.honest()  # (and every move has been handled)
    # A relay resets every stream whose harness went: here, every id the example used.
    for stream_id in used:
        await relay.send(encode_frame(Frame(stream_id, Reset("harness_gone"))))
    relay.streams.clear()
    await bed.executor.wait_idle()
    assert relay.connections == 1 and bed.executor.counter("rendezvous_connections") == 1
    await bed.honest()
    await bed.executor.wait_idle()


@settings(FUZZ_SETTINGS, max_examples=40 * SCALE)
@given(
    established=st.integers(0, 3),
    plan=st.lists(st.tuples(st.integers(0, 3), st.one_of(moves, text_moves)), max_size=16),
)
def test_fuzz_executor_directly(
    direct_bed: DirectBed, established: int, plan: list[tuple[int, Move]]
) -> None:
    """Wrong frames for several streams at once on the executor's socket (established ones,
    a fresh one, random ids, text) never crash, hang or leak a slot of our executor."""
    direct_bed.thread.run(direct_example(direct_bed, established, plan))


# -- (b) our relay directly -----------------------------------------------------------------------


class RelayBed:
    """Our relay in the loop thread, with a raw executor socket attached."""

    def __init__(self, thread: LoopThread) -> None:
        self.thread = thread
        self._stack = AsyncExitStack()
        self.relay: RelayUnderTest
        self.executor: aiohttp.ClientWebSocketResponse
        thread.run(self._start())

    async def _start(self) -> None:
        self.relay = await self._stack.enter_async_context(running_relay())
        await self.attach()

    async def attach(self) -> None:
        _, self.executor = await self.relay.attached_executor(ENV)

    async def harness_socket(self) -> tuple[str, RelaySocket]:
        """A harness socket holding a fresh stream (its resume reached the executor)."""
        bundle = await self.relay.connect(ENV)
        ws = await self.relay.socket(bundle.url)
        stream_id = new_stream_id()
        await ws.send_bytes(encode_frame(Frame(stream_id, Resume())))
        await self.expect_at_executor(Frame(stream_id, Resume()))
        return stream_id, RelaySocket(ws)

    async def expect_at_executor(self, frame: Frame) -> None:
        """Read the executor socket until `frame` arrives (other frames are dropped)."""
        async with asyncio.timeout(5 * TIME):
            while True:
                message = await self.executor.receive()
                assert message.type is aiohttp.WSMsgType.BINARY, message
                if decode_frame(message.data) == frame:
                    return

    async def drain_executor(self) -> None:
        """Forget what the relay sent the executor socket so far."""
        with contextlib.suppress(TimeoutError):
            while True:
                message = await self.executor.receive(timeout=0.01)
                if message.type is not aiohttp.WSMsgType.BINARY:
                    return

    async def route_works(self) -> None:
        """A fresh harness stream is routed both ways, bytes unchanged."""
        stream_id, harness = await self.harness_socket()
        back = encode_frame(Frame(stream_id, Data(0, b"hello from the executor", segment_count=1)))
        await self.executor.send_bytes(back)
        frame = await harness.next_frame()
        assert encode_frame(frame) == back
        await harness.close()
        await self.drain_executor()

    def close(self) -> None:
        self.thread.run(self._stack.aclose())


@pytest.fixture
def relay_bed(loop_thread: LoopThread) -> Iterator[RelayBed]:
    bed = RelayBed(loop_thread)
    yield bed
    summary("relay", None, bed.relay)
    bed.close()


async def relay_example(
    bed: RelayBed,
    harnesses: int,
    from_executor: list[Move],
    from_harness: list[tuple[int, Move]],
) -> None:
    held = [await bed.harness_socket() for _ in range(harnesses)]
    ids = [stream_id for stream_id, _ in held]
    executor_ctx = Context(new_stream_id(), lambda: b"\x00" * 3611, other_ids=ids)
    sent_text = False
    for move in from_executor:
        message = render(move, executor_ctx)
        with contextlib.suppress(ConnectionError, RuntimeError):
            if isinstance(message, str):
                sent_text = True
                await bed.executor.send_str(message)
            else:
                await bed.executor.send_bytes(message)
    for index, move in from_harness:
        if held:
            stream_id, socket = held[index % len(held)]
            ctx = Context(stream_id, lambda: b"\x00" * 3611, other_ids=ids)
        else:  # a harness socket that has claimed nothing yet
            stream_id, socket = (
                new_stream_id(),
                RelaySocket(await bed.relay.socket((await bed.relay.connect(ENV)).url)),
            )
            held.append((stream_id, socket))
            ctx = Context(stream_id, lambda: b"\x00" * 3611, other_ids=ids)
        await socket.send(render(move, ctx))
    await close_all([socket for _, socket in held])
    if sent_text:  # the relay closes an executor socket that sends text (1003)
        assert await wait_closed(bed.executor) == 1003
        await bed.attach()
    await relay_settled(bed.relay, executors=1)
    await bed.drain_executor()
    await bed.route_works()
    await relay_settled(bed.relay, executors=1)


@settings(FUZZ_SETTINGS, max_examples=60 * SCALE)
@given(
    harnesses=st.integers(0, 3),
    from_executor=st.lists(st.one_of(moves, text_moves), max_size=10),
)
def test_fuzz_relay_from_the_executor(
    relay_bed: RelayBed, harnesses: int, from_executor: list[Move]
) -> None:
    """Wrong frames from an executor socket (for the streams it carries, and for random,
    blank and huge ids) never crash, hang or leak anything in the relay."""
    relay_bed.thread.run(relay_example(relay_bed, harnesses, from_executor, []))


@settings(FUZZ_SETTINGS, max_examples=60 * SCALE)
@given(
    harnesses=st.integers(0, 3),
    from_harness=st.lists(
        st.tuples(st.integers(0, 2), st.one_of(moves, moves, text_moves)), min_size=1, max_size=10
    ),
)
def test_fuzz_relay_from_harnesses(
    relay_bed: RelayBed, harnesses: int, from_harness: list[tuple[int, Move]]
) -> None:
    """Wrong frames from harness sockets (claimed or not, other streams' ids, text) never
    crash, hang or leak anything in the relay."""
    relay_bed.thread.run(relay_example(relay_bed, harnesses, [], from_harness))
