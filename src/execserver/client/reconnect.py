"""The three small parts reconnection is built from: the policy and its `backoff()` delays, the
`is_retryable()` classifier, and `LazyConnection`, which shares one connection attempt among
concurrent callers. No I/O of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from execserver.errors import (
    AuthenticationFailed,
    ConnectError,
    Disconnected,
    HandshakeRejected,
    SessionAttached,
)

# Codex 0.169 retries every ~100 ms (fixed) and gives up ~45 s after the loss (PROTOCOL.md §13.3).
RECONNECT_INTERVAL_S = 0.1
RECOVERY_DEADLINE_S = 45.0
CONNECT_TIMEOUT_S = 10.0
INITIALIZE_TIMEOUT_S = 10.0

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """How a client connects and recovers. Times in seconds."""

    interval_s: float = RECONNECT_INTERVAL_S
    """Delay before the first retry (and every retry, with `max_interval_s` equal to it)."""
    max_interval_s: float = RECONNECT_INTERVAL_S
    """Cap of the delay; above `interval_s` the delay doubles per attempt up to it."""
    deadline_s: float = RECOVERY_DEADLINE_S
    """Give up recovering this long after the connection was lost."""
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    initialize_timeout_s: float = INITIALIZE_TIMEOUT_S


def backoff(policy: ReconnectPolicy) -> Iterator[float]:
    """Delays between attempts: `interval_s`, doubling up to `max_interval_s` (forever)."""
    delay = policy.interval_s
    while True:
        yield delay
        delay = min(delay * 2, max(policy.max_interval_s, policy.interval_s))


def is_retryable(exc: BaseException) -> bool:
    """Whether a failed connect/resume attempt may be retried: transport failures, timeouts,
    and -32010 (the session is still attached to the connection that just broke); not refused
    credentials (an upgrade answered 401/403, a relay refusing us)."""
    if isinstance(exc, AuthenticationFailed):
        return False
    if isinstance(exc, HandshakeRejected) and exc.status in (401, 403):
        return False
    return isinstance(exc, ConnectError | Disconnected | TimeoutError | SessionAttached)


class LazyConnection(Generic[T]):
    """Connects on first use and shares one in-flight attempt among concurrent callers.

    A failed attempt is not cached: the next `get()` tries again. `start()` begins connecting
    in the background (e.g. at startup) without waiting.
    """

    def __init__(self, connect: Callable[[], Awaitable[T]]) -> None:
        self._connect = connect
        self._attempt: asyncio.Future[T] | None = None

    def start(self) -> None:
        if self._attempt is None:
            self._attempt = asyncio.ensure_future(self._connect())
            self._attempt.add_done_callback(self._forget_failure)

    def _forget_failure(self, attempt: asyncio.Future[T]) -> None:
        failed = attempt.cancelled() or attempt.exception() is not None
        if failed and self._attempt is attempt:
            self._attempt = None

    async def get(self) -> T:
        """The connection, connecting if needed.

        Cancellation: the shared attempt continues for the other callers.
        """
        self.start()
        assert self._attempt is not None
        return await asyncio.shield(self._attempt)

    @property
    def connected(self) -> T | None:
        attempt = self._attempt
        if attempt is None or not attempt.done() or attempt.cancelled():
            return None
        return attempt.result() if attempt.exception() is None else None

    async def aclose(self, close: Callable[[T], Awaitable[None]]) -> None:
        """Cancel a pending attempt, or close the connection with `close`."""
        attempt, self._attempt = self._attempt, None
        if attempt is None:
            return
        if not attempt.done():
            attempt.cancel()
            with contextlib.suppress(BaseException):
                await attempt
            return
        if not attempt.cancelled() and attempt.exception() is None:
            await close(attempt.result())
