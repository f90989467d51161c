"""What a node does when its shared state is overloaded: queue, then ask clients to come back.

`OperationGate` bounds the state operations a node has in flight (a reconnect storm then waits
in a FIFO queue on the node instead of piling requests onto NATS until they time out), refuses
an operation at once when the queue is full and gives up on one that waited `max_wait_s`
(`Overloaded`, not retried on the node). Every 503 the relay answers because its state cannot
answer carries a `Retry-After` drawn at random so that the clients told to wait do not all
return at once, over a few seconds, longer while the queue is long (`retry_after_header`).
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
MAX_WAITING: Final = 8 * MAX_IN_FLIGHT
"""Operations queued at most; one more is refused at once (no work wasted on a request that
would wait too long anyway)."""
MAX_WAIT_S: Final = 5.0
"""How long an operation waits for its turn before the request is answered 503 (under the
clients' 10 s request timeout)."""
RETRY_AFTER_MIN_S: Final = 1
RETRY_AFTER_MAX_S: Final = 5
RETRY_AFTER_CEILING_S: Final = 30
"""The most a full queue spreads the clients over (our executor's backoff cap)."""
RETRY_AFTER_HEADER: Final = "Retry-After"


class Overloaded(StateUnavailable):
    """The node's queue of state operations is full, or an operation waited too long: not
    worth retrying on the node (the client is told when to come back)."""


def retry_after_header(
    gate: OperationGate | None = None, rng: random.Random | None = None
) -> dict[str, str]:
    """`Retry-After: N` for a 503 of an overloaded or unreachable state, N whole seconds drawn
    at random from [`RETRY_AFTER_MIN_S`, upper] (spreads the returning clients); upper is
    `RETRY_AFTER_MAX_S`, and grows with `gate`'s queue: each `limit` operations waiting add
    as much again, up to `RETRY_AFTER_CEILING_S`."""
    upper = RETRY_AFTER_MAX_S
    if gate is not None:
        upper = min(RETRY_AFTER_CEILING_S, upper * (1 + gate.waiting // gate.limit))
    seconds = (rng or random).randint(RETRY_AFTER_MIN_S, upper)
    return {RETRY_AFTER_HEADER: str(seconds)}


def gate_of(state: object) -> OperationGate | None:
    """The operation gate of a relay state that has one (the NATS state)."""
    gate = getattr(state, "gate", None)
    return gate if isinstance(gate, OperationGate) else None


class OperationGate:
    """At most `limit` operations in flight; the others wait in arrival order, each at most
    `max_wait_s`."""

    def __init__(
        self,
        limit: int = MAX_IN_FLIGHT,
        max_wait_s: float = MAX_WAIT_S,
        max_waiting: int | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.max_wait_s = max_wait_s
        self.max_waiting = 8 * limit if max_waiting is None else max_waiting
        self._slots = asyncio.Semaphore(limit)
        self.in_flight = 0
        self.waiting = 0
        self.peak_in_flight = 0
        self.refused = 0
        """Operations refused: the queue was full, or they waited `max_wait_s`."""

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the `limit` slots for the body.

        Raises `Overloaded` at once when `max_waiting` operations are queued already, or
        when no slot freed within `max_wait_s`.
        Cancellation: the place in the queue (or the slot) is given up.
        """
        if self.waiting >= self.max_waiting and self.in_flight >= self.limit:
            self.refused += 1
            raise Overloaded(f"overloaded: {self.waiting} state operations queued")
        self.waiting += 1
        try:
            async with asyncio.timeout(self.max_wait_s):
                await self._slots.acquire()
        except TimeoutError:
            self.refused += 1
            raise Overloaded(
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
    "MAX_WAITING",
    "MAX_WAIT_S",
    "RETRY_AFTER_HEADER",
    "OperationGate",
    "Overloaded",
    "gate_of",
    "retry_after_header",
]
