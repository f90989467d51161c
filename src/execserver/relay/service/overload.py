"""What a node does when its shared state is overloaded: queue, then ask clients to come back.

`OperationGate` bounds the state operations a node has in flight (a reconnect storm then waits
in a FIFO queue on the node instead of piling requests onto NATS until they time out), and
gives up on an operation that waited `max_wait_s` with `StateUnavailable`. Every 503 the
relay answers because its state cannot answer carries a `Retry-After` of a few seconds, drawn
at random so that the clients told to wait do not all return at once (`retry_after_header`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from typing import Final

from execserver.relay.service.state import StateUnavailable

MAX_IN_FLIGHT: Final = 32
"""State operations a node has outstanding at once (JetStream requests, each ~4 ms of the
cluster's CPU: 3 nodes × 32 keep well under the 2 s request timeout even on a busy cluster)."""
MAX_WAIT_S: Final = 5.0
"""How long an operation waits for its turn before the request is answered 503 (under the
clients' 10 s request timeout)."""
RETRY_AFTER_MIN_S: Final = 1
RETRY_AFTER_MAX_S: Final = 5
RETRY_AFTER_HEADER: Final = "Retry-After"


def retry_after_header(rng: random.Random | None = None) -> dict[str, str]:
    """`Retry-After: N` for a 503 of an overloaded or unreachable state, N whole seconds in
    [`RETRY_AFTER_MIN_S`, `RETRY_AFTER_MAX_S`] at random (spreads the returning clients)."""
    seconds = (rng or random).randint(RETRY_AFTER_MIN_S, RETRY_AFTER_MAX_S)
    return {RETRY_AFTER_HEADER: str(seconds)}


class OperationGate:
    """At most `limit` operations in flight; the others wait in arrival order, each at most
    `max_wait_s`."""

    def __init__(self, limit: int = MAX_IN_FLIGHT, max_wait_s: float = MAX_WAIT_S) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.max_wait_s = max_wait_s
        self._slots = asyncio.Semaphore(limit)
        self.in_flight = 0
        self.waiting = 0
        self.peak_in_flight = 0
        self.refused = 0
        """Operations that waited `max_wait_s` and were refused."""

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the `limit` slots for the body.

        Raises `StateUnavailable` when no slot freed within `max_wait_s`.
        Cancellation: the place in the queue (or the slot) is given up.
        """
        self.waiting += 1
        try:
            async with asyncio.timeout(self.max_wait_s):
                await self._slots.acquire()
        except TimeoutError:
            self.refused += 1
            raise StateUnavailable(
                f"overloaded: {self.limit} state operations in flight, "
                f"none finished within {self.max_wait_s:g} s"
            ) from None
        finally:
            self.waiting -= 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            yield
        finally:
            self.in_flight -= 1
            self._slots.release()


__all__ = [
    "MAX_IN_FLIGHT",
    "MAX_WAIT_S",
    "RETRY_AFTER_HEADER",
    "OperationGate",
    "retry_after_header",
]
