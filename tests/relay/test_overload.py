"""Overload: the node's bound on state operations in flight, `Retry-After` on the relay's 503s
and our executor honouring it, and the collector tuning that keeps full collections short."""

from __future__ import annotations

import asyncio
import gc
import random
import weakref
from collections.abc import Iterator

import pytest

from execserver.errors import HandshakeRejected
from execserver.relay.executor import BACKOFF_CAP_S, next_delay
from execserver.relay.service.collector import CollectorProbe, CollectorTuning
from execserver.relay.service.metrics import RelayMetrics
from execserver.relay.service.overload import OperationGate, Overloaded, retry_after_header
from execserver.relay.service.state import StateUnavailable
from execserver.transport.http import RETRY_AFTER_CAP_S, parse_retry_after
from execserver.transport.websocket import connect_websocket
from tests.conftest import TIME
from tests.harness.relay_wire import poll, running_executor
from tests.relay.support import running_relay
from tests.relay.test_service import FailingState


async def test_gate_queues_operations_beyond_its_limit() -> None:
    """Of 20 operations started at once, at most 3 run at a time; all of them complete, in
    arrival order."""
    gate = OperationGate(limit=3, max_wait_s=10 * TIME)
    release = asyncio.Event()
    started: list[int] = []

    async def operation(index: int) -> int:
        async with gate.slot():
            started.append(index)
            await release.wait()
            return index

    tasks = [asyncio.ensure_future(operation(index)) for index in range(20)]
    await poll(lambda: len(started) == 3, what="three started")
    assert (gate.in_flight, gate.waiting) == (3, 17)
    release.set()
    assert await asyncio.gather(*tasks) == list(range(20))
    assert started == list(range(20))
    assert (gate.peak_in_flight, gate.in_flight, gate.waiting, gate.refused) == (3, 0, 0, 0)


async def test_gate_refuses_after_waiting_its_limit() -> None:
    """An operation that found no slot within `max_wait_s` is `StateUnavailable` (503), and
    leaves the queue; a cancelled waiter gives its place up."""
    gate = OperationGate(limit=1, max_wait_s=0.05)
    release = asyncio.Event()

    async def hold() -> None:
        async with gate.slot():
            await release.wait()

    holder = asyncio.ensure_future(hold())
    await asyncio.sleep(0)
    with pytest.raises(StateUnavailable, match="overloaded"):
        async with gate.slot():
            raise AssertionError("ran without a slot")
    assert (gate.refused, gate.waiting) == (1, 0)
    gate.max_wait_s = 10 * TIME
    waiter = asyncio.ensure_future(gate.slot().__aenter__())
    await asyncio.sleep(0)
    assert gate.waiting == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    await holder
    async with gate.slot():  # the cancelled waiter took no slot with it
        assert gate.in_flight == 1
    with pytest.raises(ValueError):
        OperationGate(limit=0)


def test_retry_after_header_spreads_over_a_few_seconds() -> None:
    rng = random.Random(7)
    values = {int(retry_after_header(rng=rng)["Retry-After"]) for _ in range(200)}
    assert values == {1, 2, 3, 4, 5}


def test_retry_after_header_grows_with_the_queue() -> None:
    """Each `limit` operations waiting widen the spread by 5 s, up to 30 s."""
    rng = random.Random(7)
    gate = OperationGate(limit=4)
    gate.waiting = 8
    values = {int(retry_after_header(gate, rng)["Retry-After"]) for _ in range(500)}
    assert values == set(range(1, 16))
    gate.waiting = 400
    values = {int(retry_after_header(gate, rng)["Retry-After"]) for _ in range(2000)}
    assert values == set(range(1, 31))


async def test_gate_refuses_at_once_when_its_queue_is_full() -> None:
    """With `max_waiting` queued already, one more is `Overloaded` without waiting."""
    gate = OperationGate(limit=1, max_wait_s=10 * TIME, max_waiting=2)
    release = asyncio.Event()

    async def hold() -> None:
        async with gate.slot():
            await release.wait()

    tasks = [asyncio.ensure_future(hold()) for _ in range(3)]
    await poll(lambda: (gate.in_flight, gate.waiting) == (1, 2), what="a full queue")
    with pytest.raises(Overloaded, match="queued"):
        async with gate.slot():
            raise AssertionError("ran without a slot")
    assert gate.refused == 1
    release.set()
    await asyncio.gather(*tasks)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("3", 3.0),
        (" 0 ", 0.0),
        ("86400", RETRY_AFTER_CAP_S),
        ("-1", None),
        ("1.5", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),
        ("٣", None),  # a digit, but not an ASCII one
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


def test_next_delay_prefers_retry_after() -> None:
    delays = iter([7.0, 8.0])
    assert next_delay(delays, 2.0) == 2.0
    assert next_delay(delays, 1000.0) == BACKOFF_CAP_S
    assert next_delay(delays, None) == 7.0  # the backoff did not advance meanwhile


async def test_executor_honours_retry_after_on_register() -> None:
    """A registry whose state is down answers 503 with `Retry-After` (1-5 s): our executor
    comes back then, not after its own backoff (here ten minutes)."""
    state = FailingState()
    state.failure = StateUnavailable("down")
    async with (
        running_relay(state=state) as relay,
        running_executor(relay.url, "busy1", connect=False, backoff_base_s=600.0) as executor,
    ):
        await poll(lambda: executor.counter("registration_retries") >= 1, what="a 503")
        state.failure = None
        await asyncio.wait_for(executor.relay.connected.wait(), 10 * TIME)
        assert executor.relay.counters["registrations"] == 1


async def test_rendezvous_503_carries_retry_after_to_the_executor() -> None:
    """The rendezvous refusing an executor's upgrade while the state is down: our WebSocket
    client reports the `Retry-After` with the status."""
    state = FailingState()
    async with running_relay(state=state) as relay:
        registration = await relay.register("test1")
        state.failure = StateUnavailable("down")
        with pytest.raises(HandshakeRejected) as caught:
            await connect_websocket(registration.url, _Ignore())
        assert caught.value.status == 503
        assert caught.value.retry_after_s in (1.0, 2.0, 3.0, 4.0, 5.0)


class _Ignore:
    def message_received(self, data: bytes) -> None:
        pass

    def connection_lost(self) -> None:
        pass


class _Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


def test_collector_freezes_survivors_and_collects_them_when_due(unfrozen: None) -> None:
    """After a freeze, a cycle that dies is out of reach of the collector until the periodic
    collection of everything, which frees it."""
    now = [0.0]
    tuning = CollectorTuning(full_interval_s=60.0, clock=lambda: now[0])
    cycle = _Cycle()
    alive = weakref.ref(cycle)
    tuning.tick()
    assert gc.get_freeze_count() > 0
    del cycle
    gc.collect()
    assert alive() is not None  # frozen: not collected
    now[0] = 59.0
    tuning.tick()
    assert alive() is not None and tuning.full_collections == 0
    now[0] = 60.0
    tuning.tick()
    assert alive() is None and tuning.full_collections == 1
    assert gc.get_freeze_count() > 0  # the survivors are frozen again


async def test_collector_run_freezes_at_start(unfrozen: None) -> None:
    gc.unfreeze()
    task = asyncio.ensure_future(CollectorTuning(freeze_interval_s=3600.0).run())
    try:
        await poll(lambda: gc.get_freeze_count() > 0, what="a freeze")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_collector_probe_times_collections() -> None:
    """Every collection is timed into the metrics, by generation; the longest is a gauge."""
    metrics = RelayMetrics()
    probe = CollectorProbe(metrics)
    probe.install()
    try:
        gc.collect()
    finally:
        probe.remove()
    assert probe.full_collections == 1 and probe.longest_s > 0
    page = metrics.render(probe.gauges()).decode()
    assert 'exec_server_relay_gc_pause_seconds_count{generation="2"} 1' in page
    assert "exec_server_relay_gc_longest_pause_ms " in page
    gc.collect()  # removed: no longer counted
    assert probe.full_collections == 1
