"""One process's event stream on the orchestrator side: pushed events in seq order, gaps
filled by reads, bounded memory, exactly-once delivery (PROTOCOL.md §6.2, §13.3).

`ProcessEventStream` takes events pushed by whoever watches the process (notifications of a
remote server, or the local output log) and hands them to one consumer strictly in seq order.
Events that arrive early wait for the lower seqs. A gap on an ordered channel means events
were dropped, so the stream asks for them with `read(after_seq)`; so does a consumer that fell
behind (the stream stops buffering at `max_buffered_bytes` and re-reads once drained). If the
retained output no longer covers a gap, the stream fails with `ProcessFailed` after delivering
everything before it, unless the executor says the output was dropped on purpose (an `OutputGap`,
from an executor with an output journal): then the gap is an event too. A read may come back
cut short (`nextSeq` right after its last chunk): the stream reads on from there. Pure asyncio;
the one catch-up task is owned and cancelled by the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Self

import msgspec

from execserver.environment.process import (
    ClosedEvent,
    ExitedEvent,
    OutputEvent,
    OutputGap,
    ProcessEvent,
    ProcessFailed,
    ReadResult,
)
from execserver.errors import ExecServerError
from execserver.tasks import TaskOwner

log = logging.getLogger(__name__)

# A consumer that falls further behind than this stops the stream from buffering; the rest is
# re-read from the executor's retained output (1 MiB) once the consumer catches up.
MAX_BUFFERED_BYTES = 8 * 1024 * 1024

Reader = Callable[[int], Awaitable[ReadResult]]
CUT_READ_BYTES = 1024 * 1024
"""A read that ends on a chunk and returned at least this much may have been cut short (an
executor reading from its journal stops at 4 MiB): the stream reads on from there."""


class EventsLost(ProcessFailed):
    """The executor no longer retains events this stream has not delivered."""


def events_from_read(result: ReadResult, after_seq: int) -> list[ProcessEvent]:
    """Rebuild the events after `after_seq` from a `process/read` answer: its chunks, its gaps,
    plus the exit and close events its flags imply.

    A read cut short ends on a chunk (`nextSeq` is the seq after it): then the close event is
    not in its range. The exit event's seq is the one seq in the range that neither a chunk, a
    gap nor the close event holds. Raises `EventsLost` when more than that is missing (output
    evicted without a journal).
    """
    end = result.next_seq - 1
    events: list[ProcessEvent] = [c for c in result.chunks if c.seq > after_seq]
    cut = bool(events) and events[-1].seq == end
    close_seq = end if result.closed and not cut else None
    held = {c.seq for c in events}
    for gap in result.gaps:
        if gap.to_seq > after_seq:
            low = max(gap.from_seq, after_seq + 1)
            events.append(OutputGap(low, gap.to_seq, gap.bytes))
            held.update(range(low, gap.to_seq + 1))
    missing = [s for s in range(after_seq + 1, end + 1) if s not in held and s != close_seq]
    if result.exited and missing:
        exit_seq = missing.pop()
        code = result.exit_code if result.exit_code is not None else -1
        termination = getattr(result, "termination", None)  # the processEndings extension
        events.append(ExitedEvent(exit_seq, code, result.sandbox_denied, termination))
    if missing:
        raise EventsLost(
            f"process events are no longer retained (seq {missing[0]} to {missing[-1]} "
            "were evicted from the executor's output buffer)"
        )
    if close_seq is not None and close_seq > after_seq:
        events.append(ClosedEvent(close_seq))
    events.sort(key=lambda e: e.seq)
    return events


def _maybe_cut(result: ReadResult) -> bool:
    chunks = result.chunks
    return (
        bool(chunks)
        and chunks[-1].seq == result.next_seq - 1
        and sum(len(c.chunk) for c in chunks) >= CUT_READ_BYTES
    )


def _first_seq(event: ProcessEvent) -> int:
    return event.from_seq if isinstance(event, OutputGap) else event.seq


class ProcessEventStream:
    def __init__(
        self, read: Reader, *, max_buffered_bytes: int = MAX_BUFFERED_BYTES, after_seq: int = 0
    ) -> None:
        self._read = read
        self._max_buffered = max_buffered_bytes
        self.delivered_seq = after_seq  # the last seq queued for the consumer, in order
        self._early: dict[int, ProcessEvent] = {}
        self._queue: deque[ProcessEvent] = deque()
        self._queued_bytes = 0
        self._lagged = False
        self._failure: ExecServerError | None = None
        self._closed = False  # the close event was queued
        self._wakeup = asyncio.Event()
        self._tasks = TaskOwner("process event catch-up")
        self._catch_up: asyncio.Task[None] | None = None
        self._catch_up_again = False
        self._exit: asyncio.Future[ExitedEvent] = asyncio.get_running_loop().create_future()
        self._iterated = False

    # -- producer side -------------------------------------------------------------------------

    @property
    def is_closed(self) -> bool:
        """The close event was received (every event is queued or delivered)."""
        return self._closed

    @property
    def exit_event(self) -> ExitedEvent | None:
        return self._exit.result() if self._exit.done() and not self._exit.exception() else None

    def push(self, event: ProcessEvent) -> None:
        """Accept an event (duplicates and stale seqs are ignored)."""
        if isinstance(event, ExitedEvent):
            self._record_exit(event)
        if event.seq <= self.delivered_seq or self._failure is not None or self._closed:
            return
        if self._lagged:
            return  # re-read once the consumer drains
        first = _first_seq(event)
        if first != self.delivered_seq + 1:
            self._early[first] = event
            self.request_catch_up()
            return
        self._enqueue(event)
        while self.delivered_seq + 1 in self._early:
            self._enqueue(self._early.pop(self.delivered_seq + 1))
        self._early = {s: e for s, e in self._early.items() if s > self.delivered_seq}

    def _enqueue(self, event: ProcessEvent) -> None:
        self.delivered_seq = event.seq
        self._queue.append(event)
        self._wakeup.set()
        if isinstance(event, OutputEvent):
            self._queued_bytes += len(event.chunk)
            if self._queued_bytes > self._max_buffered:
                self._lagged = True
                self._early.clear()
        elif isinstance(event, ClosedEvent):
            self._closed = True
            self._early.clear()

    def _record_exit(self, event: ExitedEvent) -> None:
        if not self._exit.done():
            self._exit.set_result(event)

    def fail(self, error: ExecServerError) -> None:
        """End the stream with `error` after the events already queued."""
        if self._failure is None and not self._closed:
            self._failure = error
            self._early.clear()
            self._wakeup.set()
            if not self._exit.done():
                self._exit.set_exception(error)
                self._exit.exception()  # retrieved: wait() may never be called

    def request_catch_up(self) -> None:
        """Read everything after the last delivered seq (once; again if asked meanwhile)."""
        if self._closed or self._failure is not None:
            return
        if self._catch_up is not None and not self._catch_up.done():
            self._catch_up_again = True
            return
        if not self._tasks.closed:
            self._catch_up = self._tasks.spawn(self._run_catch_up())

    async def _run_catch_up(self) -> None:
        while True:
            self._catch_up_again = False
            after = self.delivered_seq
            try:
                result = await self._read(after)
                events = events_from_read(result, after)
            except EventsLost as exc:
                self.fail(exc)
                return
            except ExecServerError as exc:
                # Disconnected: the client catches up again after it reconnects; failures of
                # the connection as a whole reach the stream through `fail()`.
                log.debug("process catch-up read failed: %s", exc)
                return
            if self._lagged and self._queued_bytes > self._max_buffered // 2:
                return  # the consumer is still behind; it asks again when it drains
            self._lagged = False
            for event in events:
                self.push(event)
            if not (self._catch_up_again or (_maybe_cut(result) and self.delivered_seq > after)):
                return

    # -- consumer side -------------------------------------------------------------------------

    async def wait_exit(self) -> ExitedEvent:
        """The exit event, as soon as it is known (even before earlier output is consumed).

        Cancellation: safe.
        """
        return await asyncio.shield(self._exit)

    async def events(self) -> AsyncIterator[ProcessEvent]:
        """The events in seq order, ending after the close event. Iterate once."""
        if self._iterated:
            raise RuntimeError("a process's events can be iterated only once")
        self._iterated = True
        while True:
            while self._queue:
                event = self._queue.popleft()
                if isinstance(event, OutputEvent):
                    self._queued_bytes -= len(event.chunk)
                    if self._lagged and self._queued_bytes <= self._max_buffered // 2:
                        self.request_catch_up()
                yield event
                if isinstance(event, ClosedEvent):
                    return
            if self._failure is not None:
                raise self._failure
            self._wakeup.clear()
            await self._wakeup.wait()

    async def aclose(self) -> None:
        """Stop the catch-up task. Cancellation: the task is stopped anyway."""
        await self._tasks.aclose()


class StreamedProcess:
    """The parts of an `ExecProcess` that only depend on its event stream; local and remote
    processes add the operations.

    `handle` is the server-wide handle (None where unknown); `keep_running` (a detached start,
    an attach) makes `aclose()` leave the process running; `skip_bytes` drops that much output
    at the start (an attach with `tail_bytes` starts on a chunk boundary).
    """

    def __init__(
        self,
        process_id: str,
        stream: ProcessEventStream,
        *,
        handle: str | None = None,
        keep_running: bool = False,
        skip_bytes: int = 0,
    ) -> None:
        self._process_id = process_id
        self._stream = stream
        self._handle = handle
        self._keep_running = keep_running
        self._skip_bytes = skip_bytes

    @property
    def process_id(self) -> str:
        return self._process_id

    @property
    def handle(self) -> str | None:
        return self._handle

    def __aiter__(self) -> AsyncIterator[ProcessEvent]:
        if self._skip_bytes:
            return self._skipping(self._skip_bytes)
        return self._stream.events()

    async def _skipping(self, skip: int) -> AsyncIterator[ProcessEvent]:
        async for event in self._stream.events():
            if skip and isinstance(event, OutputEvent):
                if len(event.chunk) <= skip:
                    skip -= len(event.chunk)
                    continue
                yield msgspec.structs.replace(event, chunk=event.chunk[skip:])
                skip = 0
                continue
            yield event

    async def wait(self) -> int:
        return (await self._stream.wait_exit()).exit_code

    @property
    def exited(self) -> bool:
        return self._stream.exit_event is not None

    async def terminate(self) -> bool:
        raise NotImplementedError

    async def _stop_following(self) -> None:
        await self._stream.aclose()

    async def aclose(self) -> None:
        try:
            if not (self.exited or self._stream.is_closed or self._keep_running):
                with contextlib.suppress(ExecServerError):
                    await self.terminate()
        finally:
            await asyncio.shield(self._stop_following())

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
