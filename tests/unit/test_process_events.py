"""ProcessEventStream: ordering by seq, gap filling by reads, lag, failure; events_from_read."""

from __future__ import annotations

import asyncio

import pytest

from execserver.environment.process import (
    ClosedEvent,
    ExitedEvent,
    OutputEvent,
    ProcessEvent,
    ProcessFailed,
    ReadResult,
)
from execserver.environment.process_events import (
    EventsLost,
    ProcessEventStream,
    events_from_read,
)


def out(seq: int, data: bytes = b"x") -> OutputEvent:
    return OutputEvent(seq=seq, stream="stdout", chunk=data)


def result(
    chunks: list[OutputEvent],
    next_seq: int,
    *,
    exited: bool = False,
    closed: bool = False,
    code: int | None = None,
) -> ReadResult:
    return ReadResult(
        chunks=chunks,
        next_seq=next_seq,
        exited=exited,
        exit_code=code,
        closed=closed,
        failure=None,
        sandbox_denied=False,
    )


class Log:
    """A process's history, served by seq like `process/read`."""

    def __init__(self, events: list[ProcessEvent], retained_from: int = 1) -> None:
        self.events = events
        self.retained_from = retained_from
        self.reads: list[int] = []

    async def read(self, after: int) -> ReadResult:
        self.reads.append(after)
        await asyncio.sleep(0)
        chunks = [
            e
            for e in self.events
            if isinstance(e, OutputEvent) and e.seq > after and e.seq >= self.retained_from
        ]
        exit_event = next((e for e in self.events if isinstance(e, ExitedEvent)), None)
        closed = any(isinstance(e, ClosedEvent) for e in self.events)
        return ReadResult(
            chunks=chunks,
            next_seq=len(self.events) + 1,
            exited=exit_event is not None,
            exit_code=None if exit_event is None else exit_event.exit_code,
            closed=closed,
            failure=None,
            sandbox_denied=False,
        )


async def drain(stream: ProcessEventStream, timeout: float = 5.0) -> list[ProcessEvent]:
    async with asyncio.timeout(timeout):
        return [event async for event in stream.events()]


HISTORY: list[ProcessEvent] = [
    out(1, b"a"),
    out(2, b"b"),
    ExitedEvent(3, 0, False),
    out(4, b"late"),
    ClosedEvent(5),
]


def test_events_from_read_infers_the_exit_seq() -> None:
    """The one seq neither a chunk nor the close holds is the exit's."""
    read = result([out(1), out(2), out(4)], 6, exited=True, closed=True, code=3)
    assert events_from_read(read, 0) == [
        out(1),
        out(2),
        ExitedEvent(3, 3, False),
        out(4),
        ClosedEvent(5),
    ]


def test_events_from_read_starts_after_the_delivered_seq() -> None:
    """Only events after `after_seq` are rebuilt; a running process has no exit yet."""
    read = result([out(1), out(2), out(3)], 4)
    assert events_from_read(read, 2) == [out(3)]


def test_events_from_read_detects_evicted_output() -> None:
    """More than one missing seq means output was evicted: EventsLost."""
    read = result([out(4)], 5)
    with pytest.raises(EventsLost, match="no longer retained"):
        events_from_read(read, 1)


async def test_stream_orders_early_events() -> None:
    """Events pushed out of order are delivered in seq order, each once."""
    stream = ProcessEventStream(Log(HISTORY).read)
    for event in [HISTORY[1], HISTORY[0], HISTORY[0], HISTORY[3], HISTORY[2], HISTORY[4]]:
        stream.push(event)
    assert await drain(stream) == HISTORY


async def test_stream_fills_a_gap_with_a_read() -> None:
    """A missing seq is read back from the executor."""
    log = Log(HISTORY)
    stream = ProcessEventStream(log.read)
    stream.push(HISTORY[0])
    stream.push(HISTORY[3])  # seq 2 and 3 were dropped
    stream.push(HISTORY[4])
    assert await drain(stream) == HISTORY
    assert log.reads == [1]


async def test_stream_records_the_exit_before_the_output_is_consumed() -> None:
    """wait_exit() answers as soon as the exit arrives, consumed or not."""
    stream = ProcessEventStream(Log(HISTORY).read)
    stream.push(HISTORY[2])
    assert (await asyncio.wait_for(stream.wait_exit(), 1)).exit_code == 0


async def test_stream_fails_when_the_gap_is_gone() -> None:
    """If the missed output was evicted, the stream delivers what it has, then fails."""
    log = Log(HISTORY, retained_from=4)
    stream = ProcessEventStream(log.read)
    stream.push(HISTORY[0])
    stream.push(HISTORY[3])
    received: list[ProcessEvent] = []
    with pytest.raises(EventsLost):
        async with asyncio.timeout(5):
            async for event in stream.events():
                received.append(event)
    assert received == [HISTORY[0]]
    with pytest.raises(ProcessFailed):
        await stream.wait_exit()


async def test_stream_lagging_consumer_recovers_by_reading() -> None:
    """Past the buffer limit pushes are dropped; once drained, the rest is read back."""
    events: list[ProcessEvent] = [out(seq, b"0123456789") for seq in range(1, 41)]
    events += [ExitedEvent(41, 0, False), ClosedEvent(42)]
    log = Log(events)
    stream = ProcessEventStream(log.read, max_buffered_bytes=100)
    for event in events:
        stream.push(event)
    assert await drain(stream) == events
    assert log.reads  # the dropped part came from reads


async def test_stream_failure_ends_iteration() -> None:
    """fail() ends the stream after what is queued; the error reaches the consumer."""
    stream = ProcessEventStream(Log(HISTORY).read)
    stream.push(HISTORY[0])
    stream.fail(ProcessFailed("gone"))
    received: list[ProcessEvent] = []
    with pytest.raises(ProcessFailed, match="gone"):
        async for event in stream.events():
            received.append(event)
    assert received == [HISTORY[0]]
