"""Keep Python's full garbage collections short on a relay node.

A full collection walks every object the collector tracks; an attached executor keeps ~120 of
them on its node, so at 2,000 executors a full collection held the node for 1-1.4 s
(docs/SCALING.md). Nearly all of them are long-lived (the executors' sockets, tasks and
registrations), and walking them again and again finds nothing. `CollectorTuning` moves the
objects that survived a young collection into the collector's permanent generation
(`gc.freeze()`) once a second, so a full collection only walks what was created since; the
price is that garbage cycles among frozen objects (a closed socket's, say) are found only by
the rare full collection of everything (`gc.unfreeze()` then `gc.collect()`), every
`full_interval_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from execserver.relay.service.metrics import RelayMetrics

log = logging.getLogger(__name__)

FREEZE_INTERVAL_S: Final = 1.0
FULL_INTERVAL_S: Final = 600.0
"""How often everything, frozen objects too, is collected (one pause as long as before)."""


class CollectorProbe:
    """Times every collection of the process (`gc.callbacks`): the pauses by generation into
    `metrics` (`gc_pause_seconds`), and the longest one. `install()` once, `remove()` at the
    end."""

    def __init__(self, metrics: RelayMetrics | None = None) -> None:
        self._metrics = metrics
        self._started = 0.0
        self.longest_s = 0.0
        self.full_collections = 0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        seconds = time.perf_counter() - self._started
        generation = info.get("generation", 0)
        self.longest_s = max(self.longest_s, seconds)
        if generation == 2:
            self.full_collections += 1
        if self._metrics is not None:
            self._metrics.observe("gc_pause_seconds", seconds, generation=str(generation))

    def install(self) -> None:
        gc.callbacks.append(self._callback)

    def remove(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._callback)

    def gauges(self) -> dict[str, int]:
        return {
            "gc_longest_pause_ms": round(self.longest_s * 1000),
            "gc_objects_frozen": gc.get_freeze_count(),
        }


class CollectorTuning:
    """Freezes the surviving objects every `freeze_interval_s`, collects everything every
    `full_interval_s`. One per process (the collector is)."""

    def __init__(
        self,
        freeze_interval_s: float = FREEZE_INTERVAL_S,
        full_interval_s: float = FULL_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.freeze_interval_s = freeze_interval_s
        self.full_interval_s = full_interval_s
        self._clock = clock
        self._last_full = clock()
        self.full_collections = 0

    def freeze(self) -> None:
        """Collect the young generations, then freeze every object still tracked."""
        gc.collect(1)
        gc.freeze()

    def collect_all(self) -> None:
        """Collect every object, frozen ones too, then freeze the survivors again."""
        started = time.perf_counter()
        gc.unfreeze()
        found = gc.collect()
        gc.freeze()
        self.full_collections += 1
        self._last_full = self._clock()
        log.info(
            "full garbage collection",
            extra={"unreachable": found, "seconds": round(time.perf_counter() - started, 3)},
        )

    def tick(self) -> None:
        """One step of `run()`: a full collection when one is due, else a freeze."""
        if self._clock() - self._last_full >= self.full_interval_s:
            self.collect_all()
        else:
            self.freeze()

    async def run(self) -> None:
        """Freeze now (what start-up created), then tick forever.

        Cancellation: stops; what is frozen stays frozen (the process is ending).
        """
        self.freeze()
        while True:
            await asyncio.sleep(self.freeze_interval_s)
            self.tick()


__all__ = ["FREEZE_INTERVAL_S", "FULL_INTERVAL_S", "CollectorProbe", "CollectorTuning"]
