"""Task ownership: every background task of execserver belongs to a `TaskOwner`.

An owner starts tasks, forgets them when they finish, logs failures nobody else will see, and on
`aclose()` cancels the ones still running and waits for all of them. Connections, sessions,
clients and streams each hold one owner, so closing a thing ends exactly the work it started
(trio's nursery, usable from callbacks). Pure asyncio; imports nothing of ours.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class OwnerClosed(RuntimeError):
    """`spawn()` after `aclose()`: the owner accepts no more work."""


class TaskOwner:
    """Owns a changing set of tasks; see the module docstring."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def closed(self) -> bool:
        return self._closed

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run `coro` as a task of this owner. Raises `OwnerClosed` (and closes `coro`) once the
        owner is closed."""
        if self._closed:
            coro.close()
            raise OwnerClosed(f"{self.name} is closed")
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("task of %s failed", self.name, exc_info=exc)

    async def join(self) -> None:
        """Wait until every task (also those started meanwhile) has finished, without
        cancelling any. Cancellation: safe; the tasks go on."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    def cancel_all(self) -> None:
        """Cancel every running task (from a callback that cannot await); `aclose()` waits."""
        for task in self._tasks:
            _cancel_once(task)

    async def aclose(self) -> None:
        """Refuse new tasks, cancel the running ones and wait until every one has finished.

        Cancellation: the tasks are cancelled before the first await; if the caller is
        cancelled while waiting, the wait still completes before the cancellation propagates.
        """
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            _cancel_once(task)
        if not tasks:
            return
        waiting = asyncio.ensure_future(asyncio.wait(tasks))
        try:
            await asyncio.shield(waiting)
        except asyncio.CancelledError:
            await waiting
            raise


def _cancel_once(task: asyncio.Task[Any]) -> None:
    """Cancel `task` unless a cancellation is already on its way: a second one would land in
    the cleanup the first one started (closing a connection, reaping a child) and cut it
    short."""
    if not task.cancelling():
        task.cancel()
