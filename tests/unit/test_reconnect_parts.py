"""The pure parts of reconnection: backoff(), is_retryable(), LazyConnection."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from execserver.client.reconnect import LazyConnection, ReconnectPolicy, backoff, is_retryable
from execserver.errors import (
    ConnectError,
    ConnectionClosed,
    Disconnected,
    InvalidRequest,
    RecoveryFailed,
    SessionAttached,
)


def test_backoff_is_fixed_by_default() -> None:
    """The default policy retries every 100 ms, like codex 0.169."""
    assert list(itertools.islice(backoff(ReconnectPolicy()), 4)) == [0.1, 0.1, 0.1, 0.1]


def test_backoff_doubles_up_to_the_cap() -> None:
    """With a larger cap the delay doubles per attempt and then stays at the cap."""
    policy = ReconnectPolicy(interval_s=0.5, max_interval_s=5.0)
    assert list(itertools.islice(backoff(policy), 6)) == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (ConnectError("refused"), True),
        (Disconnected("reset"), True),
        (TimeoutError(), True),
        (SessionAttached("session s is already attached to another connection"), True),
        (InvalidRequest("unknown session id s"), False),
        (ConnectionClosed("closed by us"), False),
        (RecoveryFailed("gave up"), False),
        (ValueError("bug"), False),
    ],
)
def test_is_retryable_classifies_failures(error: BaseException, retryable: bool) -> None:
    """Transport failures, timeouts and -32010 are retried; anything else is final."""
    assert is_retryable(error) is retryable


async def test_lazy_connection_shares_one_attempt() -> None:
    """Concurrent callers wait for the same single attempt."""
    attempts = 0
    release = asyncio.Event()

    async def connect() -> str:
        nonlocal attempts
        attempts += 1
        await release.wait()
        return f"conn-{attempts}"

    lazy = LazyConnection(connect)
    waiters = [asyncio.ensure_future(lazy.get()) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiters) == ["conn-1"] * 5
    assert attempts == 1
    assert lazy.connected == "conn-1"


async def test_lazy_connection_retries_after_a_failure() -> None:
    """A failed attempt is not cached: the next get() connects again."""
    results: list[str | Exception] = [ConnectError("down"), "up"]

    async def connect() -> str:
        result = results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    lazy = LazyConnection(connect)
    with pytest.raises(ConnectError):
        await lazy.get()
    assert lazy.connected is None
    assert await lazy.get() == "up"


async def test_lazy_connection_survives_a_cancelled_caller() -> None:
    """Cancelling one caller does not cancel the attempt the others share."""
    release = asyncio.Event()

    async def connect() -> str:
        await release.wait()
        return "conn"

    lazy = LazyConnection(connect)
    first = asyncio.ensure_future(lazy.get())
    second = asyncio.ensure_future(lazy.get())
    await asyncio.sleep(0)
    first.cancel()
    release.set()
    assert await second == "conn"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_lazy_connection_start_connects_in_the_background() -> None:
    """start() begins the attempt without waiting; aclose() closes what it produced."""
    closed: list[str] = []

    async def connect() -> str:
        return "conn"

    async def close(conn: str) -> None:
        closed.append(conn)

    lazy = LazyConnection(connect)
    lazy.start()
    await asyncio.sleep(0)
    assert lazy.connected == "conn"
    await lazy.aclose(close)
    assert closed == ["conn"]
