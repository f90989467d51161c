"""Output journals: the on-disk tier of the processes' output logs (local/output_log.py).

Chunks that leave a process's in-memory window are appended to its journal, so a read with an
old `afterSeq` is served from disk. A journal is a list of segment files in the store's
directory. The first segment (the head, a quarter of the cap) is kept; later ones (the tail)
rotate: once a journal passes its cap, its oldest tail segment is deleted and that seq range
becomes a gap, reported to readers as such. The store holds the server-wide disk budget: past
it, the oldest segment of any journal is deleted first.

Files (and the store's directory) are created on the first spill, so a process whose output
fits in memory never touches the disk. Appends are buffered (64 KiB writes); reads are bounded
by the caller. Record format: seq (u64), stream (u8), length (u32), little-endian, the bytes.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import logging
import os
import shutil
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from execserver.protocol.process import ProcessOutputChunk, ProcessStream

log = logging.getLogger(__name__)

MiB = 1024 * 1024
JOURNAL_MAX_BYTES = 64 * MiB
"""Disk kept per process (head + tail), by default."""
JOURNAL_BUDGET_BYTES = 1024 * MiB
"""Disk kept by all journals of a server together, by default."""
MIN_SEGMENT_BYTES = 4096
FLUSH_BYTES = 64 * 1024
INDEX_EVERY_BYTES = 64 * 1024
"""A segment remembers the offset of one record per this many bytes (its seek index)."""
READ_BLOCK_BYTES = 256 * 1024

_HEADER = struct.Struct("<QBI")
_STREAMS: tuple[ProcessStream, ...] = ("stdout", "stderr", "pty")
_CODES = {name: code for code, name in enumerate(_STREAMS)}


@dataclass(slots=True)
class Segment:
    """One file of a journal."""

    path: str
    order: int
    """Creation order across the whole store (the disk budget deletes the lowest first)."""
    head: bool = False
    first_seq: int = 0
    last_seq: int = 0
    size: int = 0
    """Bytes of records (written or still buffered)."""
    data_bytes: int = 0
    """Bytes of output in those records."""
    index: list[tuple[int, int]] = field(default_factory=list)
    """(seq, offset) of every record that starts a new `INDEX_EVERY_BYTES` stretch."""


@dataclass(slots=True)
class Gap:
    """Output that was journaled and then dropped: chunk seqs `from_seq`..`to_seq`."""

    from_seq: int
    to_seq: int
    bytes: int


class OutputJournal:
    """The segments of one process's journal (see the module docstring)."""

    def __init__(self, store: JournalStore, name: str) -> None:
        self._store = store
        self.name = name
        self.segments: list[Segment] = []
        self.gaps: list[Gap] = []
        self._active: Segment | None = None
        self._fd: int | None = None
        self._buffer = bytearray()
        self._head_sealed = False
        self._parts = itertools.count()
        self.size = 0
        """Bytes of records kept (all segments)."""
        self.discarded = False

    @property
    def last_seq(self) -> int:
        """The newest journaled seq (0: nothing yet)."""
        ends = [self.segments[-1].last_seq] if self.segments else []
        if self.gaps:
            ends.append(self.gaps[-1].to_seq)
        return max(ends, default=0)

    def is_active(self, segment: Segment) -> bool:
        return segment is self._active

    # -- writing -------------------------------------------------------------------------------

    def append(self, seq: int, stream: ProcessStream, data: bytes) -> None:
        """Journal one chunk (seqs increase). Over the disk budget with nothing left to delete,
        the chunk is dropped and becomes part of a gap."""
        if self.discarded:
            return
        record = len(data) + _HEADER.size
        if not self._store.admit(self, record):
            self._add_gap(seq, seq, len(data))
            return
        segment = self._active
        if segment is None:
            try:
                segment = self._open_segment()
            except OSError as exc:
                log.warning("output journal %s: cannot create a segment: %s", self.name, exc)
                self._store.total -= record
                self._add_gap(seq, seq, len(data))
                return
        if not segment.first_seq:
            segment.first_seq = seq
        if not segment.index or segment.size - segment.index[-1][1] >= INDEX_EVERY_BYTES:
            segment.index.append((seq, segment.size))
        self._buffer += _HEADER.pack(seq, _CODES[stream], len(data))
        self._buffer += data
        segment.size += record
        self.size += record
        segment.data_bytes += len(data)
        segment.last_seq = seq
        if len(self._buffer) >= FLUSH_BYTES:
            self.flush()
        limit = self._store.head_bytes if segment.head else self._store.segment_bytes
        if segment.size >= limit:
            self._seal()
        self._enforce_cap()

    def _open_segment(self) -> Segment:
        self._store.ensure_directory()
        path = os.path.join(self._store.directory, f"{self.name}-{next(self._parts)}.seg")
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        segment = Segment(path, self._store.next_order(), head=not self._head_sealed)
        self._head_sealed = True
        self.segments.append(segment)
        self._active = segment
        self._store.track(self, segment)
        return segment

    def flush(self) -> None:
        """Write the buffered records to the active segment's file."""
        if not self._buffer or self._fd is None:
            return
        view = memoryview(self._buffer)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:  # disk full or gone: the records are lost, reads skip them
            log.warning("output journal %s: write failed: %s", self.name, exc)
        finally:
            view.release()
            self._buffer.clear()

    def _seal(self) -> None:
        self.flush()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._active = None

    def _enforce_cap(self) -> None:
        cap = self._store.max_bytes_per_process
        while self.size > cap:
            victim = next((s for s in self.segments if not s.head and s is not self._active), None)
            if victim is None:
                return
            self.drop(victim)

    def drop(self, segment: Segment) -> None:
        """Delete `segment`; its range becomes a gap."""
        if segment is self._active:
            self._seal()
        self.segments.remove(segment)
        self.size -= segment.size
        self._store.untrack(segment)
        with contextlib.suppress(OSError):
            os.unlink(segment.path)
        if segment.first_seq:
            self._add_gap(segment.first_seq, segment.last_seq, segment.data_bytes)

    def _add_gap(self, from_seq: int, to_seq: int, size: int) -> None:
        # Merge with a gap that ends before it when no kept segment lies between the two.
        for gap in self.gaps:
            touching = gap.to_seq < from_seq and not any(
                gap.to_seq < s.first_seq < from_seq for s in self.segments
            )
            if touching or gap.from_seq <= from_seq <= gap.to_seq + 1:
                gap.from_seq = min(gap.from_seq, from_seq)
                gap.to_seq = max(gap.to_seq, to_seq)
                gap.bytes += size
                break
        else:
            bisect.insort(self.gaps, Gap(from_seq, to_seq, size), key=lambda g: g.from_seq)

    def discard(self) -> None:
        """Delete every segment (the process left the server)."""
        if self.discarded:
            return
        self._seal()
        self._buffer.clear()
        for segment in self.segments:
            self._store.untrack(segment)
            with contextlib.suppress(OSError):
                os.unlink(segment.path)
        self.segments.clear()
        self.gaps.clear()
        self.size = 0
        self.discarded = True

    # -- reading -------------------------------------------------------------------------------

    def covers(self, after_seq: int) -> bool:
        """Whether anything journaled (kept or dropped) comes after `after_seq`."""
        return self.last_seq > after_seq

    def read(
        self, after_seq: int, until_seq: int, take: Callable[[int], bool]
    ) -> list[ProcessOutputChunk]:
        """Chunks with `after_seq < seq < until_seq`, oldest first, while `take(size)` says
        yes (the caller's byte budget)."""
        self.flush()
        chunks: list[ProcessOutputChunk] = []
        for segment in self.segments:
            if segment.last_seq <= after_seq:
                continue
            if segment.first_seq >= until_seq:
                break
            for chunk in self._records(segment, after_seq):
                if chunk.seq >= until_seq or not take(len(chunk.chunk)):
                    return chunks
                chunks.append(chunk)
        return chunks

    def _records(self, segment: Segment, after_seq: int) -> Iterator[ProcessOutputChunk]:
        """The chunks of `segment` after `after_seq` (starting from the seek index)."""
        position = bisect.bisect_right(segment.index, after_seq + 1, key=lambda e: e[0]) - 1
        offset = segment.index[position][1] if position >= 0 else 0
        try:
            fd = os.open(segment.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            pending = b""
            while offset < segment.size:
                block = os.pread(fd, READ_BLOCK_BYTES, offset)
                if not block:
                    return
                offset += len(block)
                data = pending + block if pending else block
                start = 0
                while len(data) - start >= _HEADER.size:
                    seq, code, length = _HEADER.unpack_from(data, start)
                    end = start + _HEADER.size + length
                    if end > len(data):
                        break
                    if seq > after_seq:
                        chunk = data[start + _HEADER.size : end]
                        yield ProcessOutputChunk(seq=seq, stream=_STREAMS[code], chunk=chunk)
                    start = end
                pending = data[start:]
        finally:
            os.close(fd)

    def tail_start(self, size: int, before_seq: int) -> tuple[int, int]:
        """Where a replay of the last `size` journaled bytes before `before_seq` begins:
        (`after_seq`, bytes to skip at its start). A gap ends the walk (fewer bytes then)."""
        self.flush()
        remaining = size
        kept = [s for s in self.segments if s.first_seq < before_seq]
        for position in range(len(kept) - 1, -1, -1):
            segment = kept[position]
            sizes = [
                (c.seq, len(c.chunk))
                for c in self._records(segment, segment.first_seq - 1)
                if c.seq < before_seq
            ]
            for seq, length in reversed(sizes):
                remaining -= length
                if remaining <= 0:
                    return seq - 1, -remaining
            previous_end = kept[position - 1].last_seq if position > 0 else 0
            if self.gap_between(previous_end, segment.first_seq):
                return segment.first_seq - 1, 0
        return 0, 0

    def gap_between(self, after_seq: int, before_seq: int) -> bool:
        """Whether dropped output lies strictly between the two seqs."""
        return any(after_seq < gap.to_seq and gap.from_seq < before_seq for gap in self.gaps)

    # -- upgrade in place ----------------------------------------------------------------------

    def snapshot(self) -> JournalState:
        self._seal()
        return JournalState(
            name=self.name,
            segments=[
                SegmentState(
                    path=s.path,
                    order=s.order,
                    head=s.head,
                    first_seq=s.first_seq,
                    last_seq=s.last_seq,
                    size=s.size,
                    data_bytes=s.data_bytes,
                    index=s.index,
                )
                for s in self.segments
            ],
            gaps=[(g.from_seq, g.to_seq, g.bytes) for g in self.gaps],
            head_sealed=self._head_sealed,
        )


@dataclass(slots=True)
class SegmentState:
    path: str
    order: int
    head: bool
    first_seq: int
    last_seq: int
    size: int
    data_bytes: int
    index: list[tuple[int, int]]


@dataclass(slots=True)
class JournalState:
    """A journal as carried across an upgrade in place (its files stay where they are)."""

    name: str
    segments: list[SegmentState]
    gaps: list[tuple[int, int, int]]
    head_sealed: bool


class JournalStore:
    """The journals of one server: their directory, the per-process cap, the disk budget."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes_per_process: int = JOURNAL_MAX_BYTES,
        budget_bytes: int = JOURNAL_BUDGET_BYTES,
        owned: bool = False,
    ) -> None:
        self.directory = os.fspath(directory)
        self.max_bytes_per_process = max_bytes_per_process
        self.head_bytes = max(MIN_SEGMENT_BYTES, max_bytes_per_process // 4)
        self.segment_bytes = max(MIN_SEGMENT_BYTES, max_bytes_per_process // 16)
        self.budget_bytes = budget_bytes
        self.owned = owned
        """Whether closing the store removes its directory (a directory it made itself)."""
        self.total = 0
        self._segments: dict[int, tuple[OutputJournal, Segment]] = {}
        """Every kept segment by creation order, oldest first."""
        self._last_order = 0
        self._names = itertools.count(1)

    def ensure_directory(self) -> None:
        """Create the directory (and its parent) private to us, if missing."""
        if not os.path.isdir(self.directory):
            os.makedirs(os.path.dirname(self.directory) or ".", mode=0o700, exist_ok=True)
            os.makedirs(self.directory, mode=0o700, exist_ok=True)

    def open(self) -> OutputJournal:
        """A new, empty journal (no file until its first chunk)."""
        return OutputJournal(self, f"j{next(self._names)}")

    def next_order(self) -> int:
        self._last_order += 1
        return self._last_order

    def track(self, journal: OutputJournal, segment: Segment) -> None:
        self._segments[segment.order] = (journal, segment)

    def untrack(self, segment: Segment) -> None:
        if self._segments.pop(segment.order, None) is not None:
            self.total -= segment.size

    def admit(self, journal: OutputJournal, size: int) -> bool:
        """Make room for `size` more bytes of `journal` within the budget, deleting the oldest
        segments anywhere (but the one `journal` is writing); False if that is not enough."""
        while self.total + size > self.budget_bytes:
            victim = next(
                (
                    (owner, segment)
                    for owner, segment in self._segments.values()
                    if not (owner is journal and owner.is_active(segment))
                ),
                None,
            )
            if victim is None:
                return False
            owner, segment = victim
            owner.drop(segment)
        self.total += size
        return True

    def restore(self, state: JournalState) -> OutputJournal:
        """A journal carried across an upgrade in place, its files adopted as they are."""
        journal = OutputJournal(self, state.name)
        self._names = itertools.count(max(next(self._names), int(state.name[1:]) + 1))
        journal._head_sealed = state.head_sealed
        # New segment files get names after the adopted ones (`<name>-<part>.seg`).
        parts = [int(s.path.rsplit("-", 1)[1].removesuffix(".seg")) for s in state.segments]
        journal._parts = itertools.count(max(parts, default=-1) + 1)
        for saved in sorted(state.segments, key=lambda s: s.order):
            segment = Segment(
                saved.path,
                saved.order,
                head=saved.head,
                first_seq=saved.first_seq,
                last_seq=saved.last_seq,
                size=saved.size,
                data_bytes=saved.data_bytes,
                index=[(seq, offset) for seq, offset in saved.index],
            )
            journal.segments.append(segment)
            journal.size += segment.size
            self._segments[segment.order] = (journal, segment)
            self.total += segment.size
            self._last_order = max(self._last_order, segment.order)
        journal.gaps = [Gap(*gap) for gap in state.gaps]
        self._segments = dict(sorted(self._segments.items()))
        return journal

    def close(self) -> None:
        """Forget every journal; remove the directory if the store made it."""
        self._segments.clear()
        self.total = 0
        if self.owned:
            shutil.rmtree(self.directory, ignore_errors=True)
