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
import gc
import logging
import time
from collections.abc import Callable
from typing import Final

log = logging.getLogger(__name__)

FREEZE_INTERVAL_S: Final = 1.0
FULL_INTERVAL_S: Final = 600.0
"""How often everything, frozen objects too, is collected (one pause as long as before)."""


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


__all__ = ["FREEZE_INTERVAL_S", "FULL_INTERVAL_S", "CollectorTuning"]
