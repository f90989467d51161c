"""The per-process event log: one seq space, retention, read budgets, long polls."""

from __future__ import annotations

import asyncio

from execserver.environment.process import ClosedEvent, ExitedEvent, OutputEvent, ProcessEvent
from execserver.local.output_log import OutputLog, RetainedOutputBudget


def filled() -> OutputLog:
    log = OutputLog()
    log.append_output("stdout", b"a")
    log.append_output("stderr", b"bb")
    log.append_output("stdout", b"ccc")
    log.record_exit(3)
    log.record_close()
    return log


def test_output_log_shares_one_seq_space() -> None:
    """Output, exit and close take consecutive seqs; listeners see them in order."""
    seen: list[ProcessEvent] = []
    log = OutputLog()
    log.listeners.append(seen.append)
    log.append_output("stdout", b"x")
    log.record_exit(0)
    log.append_output("stdout", b"late")
    log.record_close()
    assert seen == [
        OutputEvent(seq=1, stream="stdout", chunk=b"x"),
        ExitedEvent(2, 0, False),
        OutputEvent(seq=3, stream="stdout", chunk=b"late"),
        ClosedEvent(4),
    ]


def test_output_log_exit_and_close_happen_once() -> None:
    """A second exit or close is ignored."""
    log = filled()
    log.record_exit(9)
    log.record_close()
    assert (log.exit_code, log.next_seq) == (3, 6)


def test_output_log_read_without_budget() -> None:
    """Without maxBytes, nextSeq is the process's next seq (counting exit and close)."""
    result = filled().read(0)
    assert [c.seq for c in result.chunks] == [1, 2, 3]
    assert (result.next_seq, result.exited, result.exit_code, result.closed) == (6, True, 3, True)


def test_output_log_read_with_budget() -> None:
    """With maxBytes, the first chunk always fits and nextSeq follows the last chunk returned."""
    log = filled()
    assert [c.seq for c in log.read(0, 0).chunks] == [1]
    assert log.read(0, 0).next_seq == 2
    assert [c.seq for c in log.read(0, 3).chunks] == [1, 2]
    assert [c.seq for c in log.read(0, 100).chunks] == [1, 2, 3]
    assert log.read(0, 100).next_seq == 4
    assert log.read(3, 100).chunks == [] and log.read(3, 100).next_seq == 6


def test_output_log_evicts_whole_oldest_chunks() -> None:
    """Retention keeps the newest chunks within the byte budget; seqs are not renumbered."""
    log = OutputLog(max_bytes=10)
    for i in range(5):
        log.append_output("stdout", bytes([65 + i]) * 4)
    result = log.read(0)
    assert [c.seq for c in result.chunks] == [4, 5]
    assert log.retained_bytes == 8


def test_output_log_evicts_by_count() -> None:
    """The chunk-count cap also evicts."""
    log = OutputLog(max_chunks=2)
    for _ in range(4):
        log.append_output("stdout", b"x")
    assert [c.seq for c in log.read(0).chunks] == [3, 4]


async def test_output_log_long_poll_wakes_on_output() -> None:
    """read_wait returns as soon as a matching chunk arrives."""
    log = OutputLog()
    waiter = asyncio.ensure_future(log.read_wait(0, None, 10.0))
    await asyncio.sleep(0)
    assert not waiter.done()
    log.append_output("stdout", b"hi")
    result = await asyncio.wait_for(waiter, 1.0)
    assert [c.data for c in result.chunks] == [b"hi"]


async def test_output_log_long_poll_returns_on_unseen_exit() -> None:
    """A poll past the last output returns when the exit arrives (an unseen terminal event)."""
    log = OutputLog()
    log.append_output("stdout", b"x")
    waiter = asyncio.ensure_future(log.read_wait(1, None, 10.0))
    await asyncio.sleep(0)
    log.record_exit(0)
    result = await asyncio.wait_for(waiter, 1.0)
    assert (result.exited, result.closed, result.next_seq, result.chunks) == (True, False, 3, [])


async def test_output_log_long_poll_times_out_empty() -> None:
    """A poll on a silent process returns empty after waitMs."""
    log = OutputLog()
    result = await log.read_wait(0, None, 0.05)
    assert result.chunks == [] and not result.exited


async def test_output_log_cancelled_read_loses_nothing() -> None:
    """Cancelling a long poll consumes nothing: a later read still sees everything."""
    log = OutputLog()
    waiter = asyncio.ensure_future(log.read_wait(0, None, 10.0))
    await asyncio.sleep(0)
    waiter.cancel()
    log.append_output("stdout", b"kept")
    assert [c.data for c in log.read(0).chunks] == [b"kept"]


def test_output_budget_evicts_the_oldest_chunks_on_the_server() -> None:
    budget = RetainedOutputBudget(10)
    first, second = OutputLog(budget=budget), OutputLog(budget=budget)
    first.append_output("stdout", b"1111")
    second.append_output("stdout", b"2222")
    first.append_output("stdout", b"33")
    assert budget.total == 10
    second.append_output("stdout", b"4")  # over by 1: the oldest chunk anywhere goes
    assert [c.data for c in first.read().chunks] == [b"33"]
    assert [c.data for c in second.read().chunks] == [b"2222", b"4"]
    assert budget.total == 7
    second.discard()
    assert budget.total == 2
    second.append_output("stdout", b"late")  # a discarded log no longer counts
    assert budget.total == 2


def test_output_budget_bookkeeping_stays_proportional_to_what_is_retained() -> None:
    """Chunks a log evicts on its own leave stale entries; they are compacted away."""
    budget = RetainedOutputBudget(1 << 30)
    log = OutputLog(max_bytes=100, budget=budget)
    for _ in range(100_000):
        log.append_output("stdout", b"0123456789")
    assert budget.total == log.retained_bytes == 100
    assert budget.tracked <= 2 * 10 + 1024 + 1
