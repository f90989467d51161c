"""One process's event history: a single seq space for output, exit and close (PROTOCOL.md §6.2).

Output chunks are retained up to a byte and a count budget, oldest whole chunks evicted first;
exit and close are flags that are never evicted. All logs of a server also share a
`RetainedOutputBudget`: past it, the oldest chunks on the whole server go first. Reads are by
`after_seq` and never consume, so a cancelled or repeated read loses nothing. Long polls wait
on a version counter.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from execserver.environment.process import ClosedEvent, ExitedEvent, ProcessEvent
from execserver.protocol.process import (
    ProcessOutputChunk,
    ProcessReadResponse,
    ProcessStream,
    Termination,
)

RETAINED_OUTPUT_BYTES = 1024 * 1024
RETAINED_OUTPUT_CHUNKS = 50_000
MAX_RETAINED_OUTPUT_BYTES = 256 * 1024 * 1024
"""Output retained by all processes of a server together."""


class RetainedOutputBudget:
    """Bytes of output retained by every log of one server, evicting the oldest chunks anywhere
    once past `limit`.

    `_order` lists (log, seq) in append order. Entries whose chunk a log already evicted on its
    own, or whose log was discarded, go stale; they are skipped on eviction and compacted away
    once they outnumber the live ones, so the list stays proportional to what is retained.
    """

    def __init__(self, limit: int = MAX_RETAINED_OUTPUT_BYTES) -> None:
        self.limit = limit
        self.total = 0
        self._chunks = 0
        self._order: deque[tuple[OutputLog, int]] = deque()

    def added(self, log: OutputLog, event: ProcessOutputChunk) -> None:
        self.total += len(event.chunk)
        self._chunks += 1
        self._order.append((log, event.seq))
        while self.total > self.limit and self._order:
            oldest, seq = self._order.popleft()
            oldest.evict_through(seq)
        if len(self._order) > 2 * self._chunks + 1024:
            self._order = deque(entry for entry in self._order if entry[0].retains(entry[1]))

    @property
    def tracked(self) -> int:
        """Entries in the eviction order, stale ones included (bounded by the live chunks)."""
        return len(self._order)

    def released(self, size: int, chunks: int) -> None:
        self.total -= size
        self._chunks -= chunks


class OutputLog:
    """Sequenced, bounded event log of one process with live fan-out to one listener."""

    def __init__(
        self,
        *,
        max_bytes: int = RETAINED_OUTPUT_BYTES,
        max_chunks: int = RETAINED_OUTPUT_CHUNKS,
        budget: RetainedOutputBudget | None = None,
    ) -> None:
        self._max_bytes = max_bytes
        self._budget = budget
        self._max_chunks = max_chunks
        self._chunks: deque[ProcessOutputChunk] = deque()
        self._retained = 0
        self.next_seq = 1
        self.exit_code: int | None = None
        self.exit_seq: int | None = None
        self.sandbox_denied = False
        self.termination: Termination | None = None
        self.closed = False
        self._changed: asyncio.Event | None = None
        self.listener: Callable[[ProcessEvent], None] | None = None

    @property
    def exited(self) -> bool:
        return self.exit_seq is not None

    @property
    def retained_bytes(self) -> int:
        return self._retained

    def append_output(self, stream: ProcessStream, data: bytes) -> None:
        event = ProcessOutputChunk(seq=self.next_seq, stream=stream, chunk=data)
        self.next_seq += 1
        self._chunks.append(event)
        self._retained += len(data)
        while self._chunks and (
            self._retained > self._max_bytes or len(self._chunks) > self._max_chunks
        ):
            self._evict_oldest()
        if self._budget is not None:
            self._budget.added(self, event)
        self._publish(event)

    def _evict_oldest(self) -> None:
        size = len(self._chunks.popleft().chunk)
        self._retained -= size
        if self._budget is not None:
            self._budget.released(size, 1)

    def evict_through(self, seq: int) -> None:
        """Drop retained chunks with seq <= `seq` (the server-wide budget's eviction)."""
        while self._chunks and self._chunks[0].seq <= seq:
            self._evict_oldest()

    def retains(self, seq: int) -> bool:
        return bool(self._chunks) and self._chunks[0].seq <= seq

    def discard(self) -> None:
        """The process left the table: give its retained output back to the budget."""
        if self._budget is not None:
            self._budget.released(self._retained, len(self._chunks))
            self._budget = None
        self._chunks.clear()
        self._retained = 0

    def retained(self) -> list[ProcessOutputChunk]:
        """The retained output chunks, oldest first."""
        return list(self._chunks)

    def record_exit(
        self, exit_code: int, sandbox_denied: bool = False, termination: Termination | None = None
    ) -> None:
        if self.exit_seq is not None:
            return
        self.exit_code = exit_code
        self.sandbox_denied = sandbox_denied
        self.termination = termination
        self.exit_seq = self.next_seq
        self.next_seq += 1
        self._publish(ExitedEvent(self.exit_seq, exit_code, sandbox_denied, termination))

    def record_close(self) -> None:
        if self.closed:
            return
        self.closed = True
        seq = self.next_seq
        self.next_seq += 1
        self._publish(ClosedEvent(seq))

    def _publish(self, event: ProcessEvent) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None
        if self.listener is not None:
            self.listener(event)

    def read(self, after_seq: int = 0, max_bytes: int | None = None) -> ProcessReadResponse:
        """Retained chunks with `seq > after_seq`, oldest first, within a byte budget.

        The first chunk is always included even if larger than `max_bytes`, and the read stops
        once the total reaches the budget (the reference's rule).
        """
        chunks: list[ProcessOutputChunk] = []
        total = 0
        if self._chunks and self._chunks[-1].seq > after_seq:
            start = self._first_index_after(after_seq)
            for index in range(start, len(self._chunks)):
                event = self._chunks[index]
                size = len(event.chunk)
                if max_bytes is not None and chunks and total + size > max_bytes:
                    break
                chunks.append(event)
                total += size
                if max_bytes is not None and total >= max_bytes:
                    break
        next_seq = chunks[-1].seq + 1 if max_bytes is not None and chunks else self.next_seq
        return ProcessReadResponse(
            chunks=chunks,
            next_seq=next_seq,
            exited=self.exited,
            exit_code=self.exit_code,
            closed=self.closed,
            failure=None,
            sandbox_denied=self.sandbox_denied,
        )

    def _first_index_after(self, after_seq: int) -> int:
        # Chunk seqs are increasing but not contiguous (exit/close take seqs too): bisect.
        lo, hi = 0, len(self._chunks)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._chunks[mid].seq <= after_seq:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def is_ready(self, result: ProcessReadResponse, after_seq: int) -> bool:
        """Whether a long poll may answer now (PROTOCOL.md §6.3)."""
        return bool(
            result.chunks or result.closed or (result.exited and after_seq < self.next_seq - 1)
        )

    async def wait_changed(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for the next event (output, exit or close). Cancellation: safe."""
        if self._changed is None:
            self._changed = asyncio.Event()
        changed = self._changed
        try:
            async with asyncio.timeout(max(timeout_s, 0.0)):
                await changed.wait()
        except TimeoutError:
            pass

    async def read_wait(
        self, after_seq: int = 0, max_bytes: int | None = None, wait_s: float = 0.0
    ) -> ProcessReadResponse:
        """`read()`, waiting up to `wait_s` seconds for something new if there is nothing yet.

        Cancellation: safe at any point; nothing is consumed.
        """
        result = self.read(after_seq, max_bytes)
        if wait_s <= 0 or self.is_ready(result, after_seq):
            return result
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while not self.is_ready(result, after_seq):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            if self._changed is None:
                self._changed = asyncio.Event()
            changed = self._changed
            try:
                async with asyncio.timeout(remaining):
                    await changed.wait()
            except TimeoutError:
                pass
            result = self.read(after_seq, max_bytes)
        return result
