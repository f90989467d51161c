"""The `fs/watchMissing` watch of one connection (codex's rules, codex 0.169 and 0.171).

A connection has at most one active watch. Watch ids only grow on a connection: a request
whose id is not larger than every id seen before is ignored (`watching: false`, the current
watch keeps running); a larger one ends the current watch, even when it cannot watch itself.
A watch fires once (`fs/missingChanged {watchId}`) and is then gone. Everything ends with the
connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from execserver.environment.file_system import MissingWatch
from execserver.protocol import methods
from execserver.protocol.file_system import FsMissingChangedNotification

if TYPE_CHECKING:
    from execserver.server.connection import Connection


class MissingWatchSlot:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._highest_id: int | None = None
        self._current: tuple[MissingWatch, asyncio.Task[None]] | None = None

    def claim(self, watch_id: int) -> bool:
        """Record `watch_id`; False (ignore the request) unless it is the largest yet."""
        if self._highest_id is not None and watch_id <= self._highest_id:
            return False
        self._highest_id = watch_id
        return True

    async def replace(self, watch_id: int, watch: MissingWatch | None) -> None:
        """End the current watch, then make `watch` (if any) the connection's watch.

        Cancellation: the previous watch is released anyway.
        """
        current, self._current = self._current, None
        if current is not None:
            old, task = current
            task.cancel()
            await asyncio.shield(old.aclose())
        if watch is not None:
            task = self._connection.tasks.spawn(self._forward(watch_id, watch))
            self._current = (watch, task)

    async def _forward(self, watch_id: int, watch: MissingWatch) -> None:
        try:
            if await watch.wait():
                self._connection.notify(
                    methods.FS_MISSING_CHANGED, FsMissingChangedNotification(watch_id=watch_id)
                )
        finally:
            if self._current is not None and self._current[0] is watch:
                self._current = None
            await asyncio.shield(watch.aclose())

    async def aclose(self) -> None:
        """Release the watch. Cancellation: released anyway."""
        current, self._current = self._current, None
        if current is not None:
            watch, task = current
            task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.shield(watch.aclose())
