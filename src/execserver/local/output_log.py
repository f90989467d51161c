"""One process's event history: a single seq space for output, exit and close (PROTOCOL.md §6.2).

Output chunks are retained up to a byte and a count budget, oldest whole chunks evicted first;
exit and close are flags that are never evicted. All logs of a server also share a
`RetainedOutputBudget`: past it, the oldest chunks on the whole server go first. With a journal
(local/journal.py), evicted chunks go to disk instead of away, and reads older than the memory
window are served from there. Reads are by `after_seq` and never consume, so a cancelled or
repeated read loses nothing. Long polls wait on a version counter.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from execserver.environment.process import ClosedEvent, ExitedEvent, ProcessEvent
from execserver.local.journal import OutputJournal
from execserver.protocol.process import (
    OutputGap,
    ProcessOutputChunk,
    ProcessReadResponse,
    ProcessStream,
    Termination,
)

RETAINED_OUTPUT_BYTES = 1024 * 1024
RETAINED_OUTPUT_CHUNKS = 50_000
MAX_RETAINED_OUTPUT_BYTES = 256 * 1024 * 1024
"""Output retained by all processes of a server together."""
JOURNAL_READ_BYTES = 4 * 1024 * 1024
"""Output one `process/read` without `maxBytes` returns when it reaches into the journal (the
rest follows from `nextSeq`, as with `maxBytes`): a 64 MiB journal never becomes one message."""

EventListener = Callable[[ProcessEvent], None]


class ReadBudget:
    """The reference's `maxBytes` rule: the first chunk always, then chunks while they fit, and
    stop once the total reaches the budget (None: no limit)."""

    __slots__ = ("cut", "limit", "taken", "total")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.total = 0
        self.taken = 0
        self.cut = False

    def take(self, size: int) -> bool:
        limit = self.limit
        if limit is not None and self.taken and self.total + size > limit:
            self.cut = True
            return False
        self.total += size
        self.taken += 1
        return True


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
    """Sequenced, bounded event log of one process with live fan-out to its listeners."""

    def __init__(
        self,
        *,
        max_bytes: int = RETAINED_OUTPUT_BYTES,
        max_chunks: int = RETAINED_OUTPUT_CHUNKS,
        budget: RetainedOutputBudget | None = None,
        journal: OutputJournal | None = None,
    ) -> None:
        self._max_bytes = max_bytes
        self._budget = budget
        self.journal = journal
        """Where evicted chunks go (None: they are dropped)."""
        self.total_bytes = 0
        """Bytes of output ever appended."""
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
        self.listeners: list[EventListener] = []
        """Hear every event as it is logged, in order (must not block)."""
        self.close_listeners: list[Callable[[], None]] = []
        """Hear only the close, after `listeners` did (not called once per output chunk)."""

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
        self.total_bytes += len(data)
        while self._chunks and (
            self._retained > self._max_bytes or len(self._chunks) > self._max_chunks
        ):
            self._evict_oldest()
        if self._budget is not None:
            self._budget.added(self, event)
        self._publish(event)

    def adopt(self, chunks: list[ProcessOutputChunk]) -> None:
        """Take retained chunks as they are (seqs included), without publishing them: an
        upgrade in place carries a log over this way."""
        for event in chunks:
            self._chunks.append(event)
            self._retained += len(event.chunk)
            if self._budget is not None:
                self._budget.added(self, event)

    def _evict_oldest(self) -> None:
        chunk = self._chunks.popleft()
        size = len(chunk.chunk)
        if self.journal is not None:
            self.journal.append(chunk.seq, chunk.stream, chunk.chunk)
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
        if self.journal is not None:
            self.journal.discard()

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
        for listener in self.close_listeners:
            listener()

    def _publish(self, event: ProcessEvent) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None
        for listener in self.listeners:
            listener(event)

    def read(self, after_seq: int = 0, max_bytes: int | None = None) -> ProcessReadResponse:
        """Chunks with `seq > after_seq`, oldest first, within a byte budget: from the journal
        while `after_seq` is older than the memory window, then from memory.

        The first chunk is always included even if larger than `max_bytes`, and the read stops
        once the total reaches the budget (the reference's rule). A read that reaches into the
        journal without `max_bytes` stops at `JOURNAL_READ_BYTES`; a read cut short reports the
        seq after its last chunk as `nextSeq`. Dropped journal ranges in between are `gaps`.
        """
        chunks: list[ProcessOutputChunk] = []
        first_in_memory = self._chunks[0].seq if self._chunks else self.next_seq
        journal = self.journal
        from_journal = journal is not None and after_seq + 1 < first_in_memory
        from_journal = from_journal and journal is not None and journal.covers(after_seq)
        budget = ReadBudget(
            max_bytes if max_bytes is not None or not from_journal else JOURNAL_READ_BYTES
        )
        if from_journal and journal is not None:
            chunks = journal.read(after_seq, first_in_memory, budget.take)
        if not budget.cut and self._chunks and self._chunks[-1].seq > after_seq:
            start = self._first_index_after(after_seq)
            for index in range(start, len(self._chunks)):
                event = self._chunks[index]
                if not budget.take(len(event.chunk)):
                    break
                chunks.append(event)
        bounded = (max_bytes is not None or budget.cut) and chunks
        next_seq = chunks[-1].seq + 1 if bounded else self.next_seq
        return ProcessReadResponse(
            chunks=chunks,
            next_seq=next_seq,
            exited=self.exited,
            exit_code=self.exit_code,
            closed=self.closed,
            failure=None,
            sandbox_denied=self.sandbox_denied,
            gaps=self._gaps(after_seq, next_seq) if from_journal else [],
        )

    def _gaps(self, after_seq: int, next_seq: int) -> list[OutputGap]:
        """The journal's gaps within (`after_seq`, `next_seq`), split around the exit's seq."""
        assert self.journal is not None
        gaps = []
        for gap in self.journal.gaps:
            if gap.to_seq <= after_seq or gap.from_seq >= next_seq:
                continue
            low, high = max(gap.from_seq, after_seq + 1), min(gap.to_seq, next_seq - 1)
            exit_seq = self.exit_seq
            if exit_seq is not None and low <= exit_seq <= high:
                if low < exit_seq:
                    gaps.append(OutputGap(from_seq=low, to_seq=exit_seq - 1, bytes=gap.bytes))
                if exit_seq < high:
                    gaps.append(OutputGap(from_seq=exit_seq + 1, to_seq=high, bytes=0))
            else:
                gaps.append(OutputGap(from_seq=low, to_seq=high, bytes=gap.bytes))
        return gaps

    def tail_start(self, size: int) -> tuple[int, int]:
        """Where a replay of the last `size` bytes of output begins: (`after_seq` to read
        after, bytes beyond `size` at the start of that replay). With less kept (or a gap on
        the way), the replay starts at what is kept."""
        remaining = size
        for index in range(len(self._chunks) - 1, -1, -1):
            remaining -= len(self._chunks[index].chunk)
            if remaining <= 0:
                return self._chunks[index].seq - 1, -remaining
        first_in_memory = self._chunks[0].seq if self._chunks else self.next_seq
        journal = self.journal
        if journal is None or not journal.covers(0):
            return first_in_memory - 1 if self._chunks else 0, 0
        last_kept = journal.segments[-1].last_seq if journal.segments else 0
        if journal.gap_between(last_kept, first_in_memory):
            return first_in_memory - 1, 0
        return journal.tail_start(remaining, first_in_memory)

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
