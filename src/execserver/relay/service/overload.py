"""What a node does when its shared state is overloaded: queue, then ask clients to come back.

`OperationGate` bounds the state operations a node has in flight (a reconnect storm then waits
in a FIFO queue on the node instead of piling requests onto NATS until they time out), refuses
an operation at once when the queue is full and gives up on one that waited `max_wait_s`
(`Overloaded`, not retried on the node). Operations started inside `priority_lane()` (what a
harness's `/connect` and its stream's `/validate` read and write) wait in a queue of their own
that is served first, and may use `reserved` slots more than the others: a `/connect` does
not wait behind a storm of executor re-attachments (the codex app-server does not retry a
failed `/connect`). That lane is bounded too (`max_priority_waiting`). Every 503 the relay
answers because its state cannot answer carries a `Retry-After` drawn at random so that the
clients told to wait do not all return at once, over a few seconds, longer while the queue is
long (`retry_after_header`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import Final

from execserver.relay.service.state import StateUnavailable

MAX_IN_FLIGHT: Final = 32
"""State operations a node has outstanding at once (JetStream requests, each ~4 ms of the
cluster's CPU: 3 nodes × 32 keep well under the 2 s request timeout even on a busy cluster)."""
MAX_WAITING: Final = 8 * MAX_IN_FLIGHT
"""Operations queued at most; one more is refused at once (no work wasted on a request that
would wait too long anyway)."""
RESERVED_FOR_PRIORITY: Final = 8
"""Slots beyond `MAX_IN_FLIGHT` that only operations of the priority lane may take."""
MAX_PRIORITY_WAITING: Final = 4 * MAX_IN_FLIGHT
"""Operations of the priority lane queued at most (beyond it they are refused as well)."""
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


_PRIORITY: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "relay_state_priority", default=False
)


@contextlib.contextmanager
def priority_lane() -> Iterator[None]:
    """State operations started in the body (in this task, or in tasks it creates) take the
    `OperationGate`'s priority lane."""
    token = _PRIORITY.set(True)
    try:
        yield
    finally:
        _PRIORITY.reset(token)


def gate_of(state: object) -> OperationGate | None:
    """The operation gate of a relay state that has one (the NATS state)."""
    gate = getattr(state, "gate", None)
    return gate if isinstance(gate, OperationGate) else None


class OperationGate:
    """At most `limit` operations in flight (`limit + reserved` with those of the priority
    lane); the others wait in arrival order, each at most `max_wait_s`, those of the
    priority lane first."""

    def __init__(
        self,
        limit: int = MAX_IN_FLIGHT,
        max_wait_s: float = MAX_WAIT_S,
        max_waiting: int | None = None,
        *,
        reserved: int = RESERVED_FOR_PRIORITY,
        max_priority_waiting: int = MAX_PRIORITY_WAITING,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if reserved < 0:
            raise ValueError("reserved must not be negative")
        self.limit = limit
        self.reserved = reserved
        self.max_wait_s = max_wait_s
        self.max_waiting = 8 * limit if max_waiting is None else max_waiting
        self.max_priority_waiting = max_priority_waiting
        self._queues: dict[bool, deque[asyncio.Future[None]]] = {False: deque(), True: deque()}
        """Waiters by lane (True: the priority lane), in arrival order."""
        self.in_flight = 0
        self.peak_in_flight = 0
        self.refused = 0
        """Operations refused: the queue was full, or they waited `max_wait_s`."""
        self.prioritized = 0
        """Operations that went through the priority lane."""

    @property
    def waiting(self) -> int:
        """Operations queued, in both lanes."""
        return len(self._queues[False]) + len(self._queues[True])

    @property
    def waiting_priority(self) -> int:
        return len(self._queues[True])

    def _room(self, priority: bool) -> bool:
        return self.in_flight < self.limit + (self.reserved if priority else 0)

    def _take(self) -> None:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def _release(self) -> None:
        self.in_flight -= 1
        for lane in (True, False):  # the priority lane first
            queue = self._queues[lane]
            while queue and self._room(lane):
                waiter = queue.popleft()
                if not waiter.done():
                    self._take()
                    waiter.set_result(None)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the slots for the body, in the priority lane inside `priority_lane()`.

        Raises `Overloaded` at once when its lane's queue is full, or when no slot freed
        within `max_wait_s`.
        Cancellation: the place in the queue (or the slot) is given up.
        """
        priority = _PRIORITY.get()
        queue = self._queues[priority]
        if priority:
            self.prioritized += 1
        if not queue and self._room(priority) and (priority or not self._queues[True]):
            self._take()
        else:
            bound = self.max_priority_waiting if priority else self.max_waiting
            if len(queue) >= bound:
                self.refused += 1
                raise Overloaded(f"overloaded: {self.waiting} state operations queued")
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            queue.append(waiter)
            try:
                async with asyncio.timeout(self.max_wait_s):
                    await waiter
            except BaseException as exc:
                if waiter.done() and not waiter.cancelled():
                    self._release()  # granted as the wait ended: hand the slot on
                else:
                    with contextlib.suppress(ValueError):
                        queue.remove(waiter)
                if isinstance(exc, TimeoutError):
                    self.refused += 1
                    raise Overloaded(
                        f"overloaded: {self.limit} state operations in flight, "
                        f"none finished within {self.max_wait_s:g} s"
                    ) from None
                raise
        try:
            yield
        finally:
            self._release()


__all__ = [
    "MAX_IN_FLIGHT",
    "MAX_PRIORITY_WAITING",
    "MAX_WAITING",
    "MAX_WAIT_S",
    "RESERVED_FOR_PRIORITY",
    "RETRY_AFTER_HEADER",
    "OperationGate",
    "Overloaded",
    "gate_of",
    "priority_lane",
    "retry_after_header",
]
