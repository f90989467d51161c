"""The output journal: spill of evicted output to disk, reads across disk and memory, the
per-process cap (head + tail, a gap between), the server-wide budget, tails, cleanup."""

from __future__ import annotations

import os
from pathlib import Path

from execserver.local.journal import JournalStore
from execserver.local.output_log import JOURNAL_READ_BYTES, OutputLog
from execserver.protocol.process import OutputGap, ProcessReadResponse

KiB = 1024


def chunk(index: int, size: int = 1000) -> bytes:
    return (f"{index:08d}".encode() * (size // 8 + 1))[:size]


def read_all(log: OutputLog, max_bytes: int | None = None) -> list[ProcessReadResponse]:
    """Every read of a client following `nextSeq` from the start until nothing is new."""
    answers = []
    after = 0
    while True:
        answer = log.read(after, max_bytes)
        answers.append(answer)
        if not answer.chunks or (answer.next_seq <= after + 1 and not answer.chunks):
            return answers
        after = answer.next_seq - 1


def test_journal_keeps_what_memory_evicts(tmp_path: Path) -> None:
    """Chunks evicted from a small memory window are read back from disk, in order, intact."""
    store = JournalStore(tmp_path)
    log = OutputLog(max_bytes=10 * KiB, journal=store.open())
    for index in range(1000):
        log.append_output("stdout" if index % 3 else "stderr", chunk(index))
    assert log.retained_bytes <= 10 * KiB
    answers = read_all(log)
    chunks = [c for answer in answers for c in answer.chunks]
    assert [c.seq for c in chunks] == list(range(1, 1001))
    assert all(c.chunk == chunk(c.seq - 1) for c in chunks)
    assert [c.stream for c in chunks[:3]] == ["stderr", "stdout", "stdout"]
    assert not any(answer.gaps for answer in answers)


def test_journal_read_without_max_bytes_is_bounded(tmp_path: Path) -> None:
    """A read reaching into the journal stops at JOURNAL_READ_BYTES; nextSeq follows its last
    chunk, so a client following nextSeq gets everything."""
    store = JournalStore(tmp_path)
    log = OutputLog(max_bytes=64 * KiB, journal=store.open())
    size = 64 * KiB
    count = (2 * JOURNAL_READ_BYTES) // size + 4
    for index in range(count):
        log.append_output("stdout", chunk(index, size))
    first = log.read(0)
    assert 0 < sum(len(c.chunk) for c in first.chunks) <= JOURNAL_READ_BYTES
    assert first.next_seq == first.chunks[-1].seq + 1
    chunks = [c for answer in read_all(log) for c in answer.chunks]
    assert [c.seq for c in chunks] == list(range(1, count + 1))


def test_journal_cap_keeps_head_and_tail_with_a_gap(tmp_path: Path) -> None:
    """Past the per-process cap the middle goes: the head and the newest output stay, and a
    read across the hole reports exactly one gap with the dropped seqs and bytes."""
    cap = 64 * KiB
    store = JournalStore(tmp_path, max_bytes_per_process=cap)
    log = OutputLog(max_bytes=8 * KiB, journal=store.open())
    total = 1000
    for index in range(total):
        log.append_output("stdout", chunk(index))
    log.record_exit(0)
    log.record_close()
    answers = read_all(log)
    chunks = [c for answer in answers for c in answer.chunks]
    gaps = [gap for answer in answers for gap in answer.gaps]
    assert len(gaps) == 1
    (gap,) = gaps
    seqs = [c.seq for c in chunks]
    assert seqs[0] == 1 and seqs[-1] == total
    assert seqs == [s for s in range(1, total + 1) if not gap.from_seq <= s <= gap.to_seq]
    assert gap.bytes == 1000 * (gap.to_seq - gap.from_seq + 1)
    assert all(c.chunk == chunk(c.seq - 1) for c in chunks)
    journal = log.journal
    assert journal is not None
    assert journal.size <= cap + store.segment_bytes + 2 * KiB
    # The head is a quarter of the cap, kept whole.
    head_bytes = sum(len(c.chunk) for c in chunks if c.seq < gap.from_seq)
    assert head_bytes >= cap // 4 - 2 * KiB


def test_journal_budget_drops_the_oldest_segments_anywhere(tmp_path: Path) -> None:
    """Past the server-wide budget, the oldest segment of any journal goes first."""
    store = JournalStore(tmp_path, max_bytes_per_process=1024 * KiB, budget_bytes=200 * KiB)
    first = OutputLog(max_bytes=4 * KiB, journal=store.open())
    second = OutputLog(max_bytes=4 * KiB, journal=store.open())
    for index in range(150):
        first.append_output("stdout", chunk(index))
    for index in range(150):
        second.append_output("stdout", chunk(index))
    assert store.total <= 200 * KiB
    first_gaps = [g for a in read_all(first) for g in a.gaps]
    second_gaps = [g for a in read_all(second) for g in a.gaps]
    assert first_gaps and first_gaps[0].from_seq == 1
    assert not second_gaps


def test_journal_tail_start_spans_disk_and_memory(tmp_path: Path) -> None:
    """`tail_start(n)` gives the seq to read after and the bytes to skip for exactly n bytes."""
    store = JournalStore(tmp_path)
    log = OutputLog(max_bytes=5 * KiB, journal=store.open())
    for index in range(100):
        log.append_output("stdout", chunk(index))
    for size in (1, 999, 1000, 1001, 4500, 30_000, 99_999, 100_000, 500_000):
        after, skip = log.tail_start(size)
        data = b"".join(c.chunk for a in read_all_after(log, after) for c in a.chunks)
        expected = b"".join(chunk(i) for i in range(100))[-size:]
        assert data[skip:] == expected, size


def read_all_after(log: OutputLog, after: int) -> list[ProcessReadResponse]:
    answers = []
    while True:
        answer = log.read(after)
        answers.append(answer)
        if not answer.chunks:
            return answers
        after = answer.next_seq - 1


def test_journal_gap_splits_around_the_exit(tmp_path: Path) -> None:
    """A gap never covers the exit's seq (clients find the exit as the one seq nothing holds)."""
    store = JournalStore(tmp_path, max_bytes_per_process=16 * KiB)
    log = OutputLog(max_bytes=2 * KiB, journal=store.open())
    for index in range(20):
        log.append_output("stdout", chunk(index))
    log.record_exit(0)
    exit_seq = log.exit_seq
    assert exit_seq is not None
    for index in range(60):  # a descendant writes on after the exit
        log.append_output("stdout", chunk(index))
    log.record_close()
    gaps = [g for a in read_all(log) for g in a.gaps]
    assert gaps
    assert all(not (g.from_seq <= exit_seq <= g.to_seq) for g in gaps)
    assert all(isinstance(g, OutputGap) for g in gaps)


def test_journal_files_appear_on_first_spill_and_go_on_discard(tmp_path: Path) -> None:
    """Output that fits in memory never touches the disk; discarding deletes the files."""
    store = JournalStore(tmp_path)
    log = OutputLog(max_bytes=10 * KiB, journal=store.open())
    log.append_output("stdout", b"small")
    assert os.listdir(tmp_path) == []
    for index in range(100):
        log.append_output("stdout", chunk(index))
    log.read(0)  # flushes
    assert os.listdir(tmp_path)
    log.discard()
    assert os.listdir(tmp_path) == []
    assert store.total == 0


def test_journal_state_round_trips(tmp_path: Path) -> None:
    """A journal carried across an upgrade in place reads back the same, and goes on."""
    store = JournalStore(tmp_path, max_bytes_per_process=32 * KiB)
    log = OutputLog(max_bytes=2 * KiB, journal=store.open())
    for index in range(100):
        log.append_output("stdout", chunk(index))
    journal = log.journal
    assert journal is not None
    state = journal.snapshot()
    before = list(read_all(log))
    again = JournalStore(tmp_path, max_bytes_per_process=32 * KiB)
    restored = again.restore(state)
    assert again.total == store.total
    copy = OutputLog(max_bytes=2 * KiB, journal=restored)
    for event in log.retained():
        copy.append_output(event.stream, event.chunk)
    # Memory seqs differ in the copy; compare what the journal alone serves.
    assert restored.read(0, 10**9, lambda size: True) == journal.read(0, 10**9, lambda size: True)
    assert before[0].chunks
    other = again.open()
    assert other.name != restored.name
    for index in range(100):
        restored.append(1000 + index, "stdout", chunk(index))
    assert len({s.path for s in restored.segments}) == len(restored.segments)
