"""Polls with a deadline, for state that has no event to wait on (a table entry, a counter)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from tests.conftest import TIME

POLL_S = 0.005
"""Period of the polls below (each has a deadline; none stands in for an event)."""


async def poll(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Return once `predicate()` is true; AssertionError after `timeout` (scaled by TIME)."""
    await poll_async(_sync(predicate), timeout, what or str(predicate))


async def poll_async(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0, what: str = ""
) -> None:
    """`poll()` for a predicate that must await (e.g. a request to the server)."""
    try:
        async with asyncio.timeout(timeout * TIME):
            while True:
                if await predicate():
                    return
                await asyncio.sleep(POLL_S)  # a poll with a deadline, not a wait for time
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what or predicate}") from None


def _sync(predicate: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return predicate()

    return check
