"""The blocking pool: clients take turns for threads, a principal holds at most its share, and
operations that wait on an fd hold no thread while they wait."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from execserver.errors import WaitExpired
from execserver.local.blocking import BlockingOp, BlockingPool, Client, Ready, Wait, drive_sync
from tests.conftest import TIME


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield pool


async def until(predicate: Callable[[], bool]) -> None:
    """Wait for `predicate` (checked each 10 ms) with a deadline."""
    deadline = asyncio.get_running_loop().time() + 10 * TIME
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.01)


def _blocker(started: list[str], name: str, release: threading.Event) -> None:
    started.append(name)
    assert release.wait(10 * TIME)


async def test_a_newcomer_runs_before_another_clients_queue(executor: ThreadPoolExecutor) -> None:
    pool = BlockingPool(executor, 2)
    release = threading.Event()
    started: list[str] = []
    greedy = Client("greedy")
    jobs = [
        asyncio.ensure_future(pool.run(greedy, lambda i=i: _blocker(started, f"g{i}", release)))
        for i in range(10)
    ]
    await until(lambda: len(started) == 2)  # both threads taken, the other 8 jobs queued
    newcomer = asyncio.ensure_future(pool.run(Client("new"), lambda: started.append("new")))
    assert pool.busy == 2
    release.set()
    await asyncio.wait_for(asyncio.gather(*jobs, newcomer), 10 * TIME)
    # two of greedy's jobs held the threads; the newcomer ran right after them
    assert started.index("new") <= 3, started


async def test_a_principal_holds_at_most_its_share(executor: ThreadPoolExecutor) -> None:
    pool = BlockingPool(executor, 2, per_principal=1)
    release = threading.Event()
    started: list[str] = []
    jobs = [
        asyncio.ensure_future(
            pool.run(Client(f"c{i}", "mallory"), lambda i=i: _blocker(started, f"m{i}", release))
        )
        for i in range(3)
    ]
    await until(lambda: len(started) == 1)
    assert pool.busy == 1  # the principal's share, however many connections it uses
    other = asyncio.ensure_future(pool.run(Client("a", "alice"), lambda: started.append("alice")))
    await asyncio.wait_for(other, 10 * TIME)
    assert started[-1] == "alice"
    release.set()
    await asyncio.wait_for(asyncio.gather(*jobs), 10 * TIME)


def _write_to(fd: int, path: bytes) -> BlockingOp[int]:
    written = 0
    while written < 1024 * 1024:
        try:
            written += os.write(fd, b"x" * 65536)
        except BlockingIOError:
            yield Wait(fd, Ready.WRITABLE, path)
    return written


async def test_a_waiting_operation_holds_no_thread(executor: ThreadPoolExecutor) -> None:
    pool = BlockingPool(executor, 1, wait_timeout_s=10 * TIME)
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
        waiting = asyncio.ensure_future(pool.drive(Client("w"), _write_to(write_end, b"pipe")))
        # the only thread is free while the write waits for the reader
        assert await asyncio.wait_for(pool.run(Client("r"), lambda: 42), 10 * TIME) == 42
        assert not waiting.done()
        got = 0
        while got < 1024 * 1024:
            got += len(await asyncio.to_thread(os.read, read_end, 1 << 20))
        assert await asyncio.wait_for(waiting, 10 * TIME) == 1024 * 1024
    finally:
        os.close(read_end)
        os.close(write_end)


async def test_a_wait_ends_with_a_clear_error(executor: ThreadPoolExecutor) -> None:
    pool = BlockingPool(executor, 1, wait_timeout_s=0.2 * TIME)
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
        with pytest.raises(WaitExpired, match="waiting for `pipe` to become writable"):
            await pool.drive(Client("w"), _write_to(write_end, b"pipe"))
        with pytest.raises(WaitExpired):
            drive_sync(_write_to(write_end, b"pipe"), 0.2 * TIME)
    finally:
        os.close(read_end)
        os.close(write_end)
