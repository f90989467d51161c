"""The blocking-I/O threads, shared fairly between clients, and waits kept off them.

Filesystem work runs on a few threads. Two rules keep one client from starving the others:

* **Fairness.** `BlockingPool.run(client, fn)` runs `fn` on a thread once one is free and the
  client is under its share; clients waiting for a thread are served in turn (round robin), so
  a newcomer's request runs next however many jobs another client has queued. A principal
  (everyone it authenticates as, across connections) holds at most `per_principal` threads.
* **No thread waits on a peer.** Operations that may wait on a FIFO, socket or device are
  generators (`fs_ops`): they open everything non-blocking and, where a read or write would
  block, yield a `Wait`. `BlockingPool.drive()` runs each step on a thread and waits for the
  fd on the event loop in between, so a peer that never reads holds an fd and a coroutine, not
  a thread. A wait longer than the deadline ends the operation with `WaitExpired`. The same
  generators run synchronously (`drive_sync`, poll with the deadline) in the sandbox helper.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import functools
import select
import time
from collections.abc import Callable, Generator
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any, TypeVar

from execserver.errors import WaitExpired

T = TypeVar("T")

FS_WAIT_TIMEOUT_S = 30.0
"""How long an fs operation waits for a FIFO, socket or device to become ready."""


class Ready(enum.Enum):
    READABLE = "readable"
    WRITABLE = "writable"


@dataclass(frozen=True, slots=True)
class Wait:
    """Yielded by a blocking operation: resume it once `fd` is ready (or the deadline passes).
    `path` names the file in the timeout error; a `patient` wait has no deadline (a helper
    process of ours that keeps its own)."""

    fd: int
    ready: Ready
    path: bytes
    patient: bool = False


BlockingOp = Generator[Wait, None, T]
"""An operation that may wait on an fd: its steps run on threads, its waits on the loop."""


def drive_sync(op: BlockingOp[T], timeout_s: float = FS_WAIT_TIMEOUT_S) -> T:
    """Run `op` on this thread, waiting with poll(); for processes without an event loop."""
    try:
        wait = next(op)
        while True:
            poller = select.poll()
            poller.register(
                wait.fd, select.POLLIN if wait.ready is Ready.READABLE else select.POLLOUT
            )
            if wait.patient:
                poller.poll()
            deadline = time.monotonic() + timeout_s
            while not wait.patient and not poller.poll(
                max(0.0, deadline - time.monotonic()) * 1000
            ):
                if time.monotonic() >= deadline:
                    raise WaitExpired(wait.path, wait.ready.value, timeout_s)
            wait = op.send(None)
    except StopIteration as stop:
        result: T = stop.value
        return result
    finally:
        op.close()


def _advance(op: BlockingOp[T]) -> tuple[bool, Any]:
    try:
        return False, next(op)
    except StopIteration as stop:
        return True, stop.value


@dataclass(frozen=True, slots=True)
class Client:
    """Who a blocking job is for: its connection (`key`) and its principal."""

    key: str
    principal: str | None = None
    """None: not counted against any principal's share (unauthenticated servers, where every
    client is the same principal)."""


LOCAL = Client("local")


class BlockingPool:
    """See the module docstring. Create inside the running event loop."""

    def __init__(
        self,
        executor: Executor,
        threads: int,
        *,
        per_principal: int | None = None,
        wait_timeout_s: float = FS_WAIT_TIMEOUT_S,
    ) -> None:
        self._executor = executor
        self._threads = threads
        self._per_principal = per_principal or max(1, threads // 2)
        self.wait_timeout_s = wait_timeout_s
        self._busy = 0
        self._by_principal: collections.Counter[str] = collections.Counter()
        # Clients with jobs waiting for a thread, in turn order; each with its jobs in order.
        self._queues: collections.OrderedDict[Client, collections.deque[asyncio.Future[None]]]
        self._queues = collections.OrderedDict()

    @property
    def busy(self) -> int:
        return self._busy

    def _may_run(self, client: Client) -> bool:
        if self._busy >= self._threads:
            return False
        principal = client.principal
        return principal is None or self._by_principal[principal] < self._per_principal

    def _take(self, client: Client) -> None:
        self._busy += 1
        if client.principal is not None:
            self._by_principal[client.principal] += 1

    def _release(self, client: Client) -> None:
        self._busy -= 1
        if client.principal is not None:
            self._by_principal[client.principal] -= 1
            if not self._by_principal[client.principal]:
                del self._by_principal[client.principal]
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand free threads to waiting clients in turn."""
        while self._queues and self._busy < self._threads:
            for client in self._queues:
                if self._may_run(client):
                    break
            else:
                return
            queue = self._queues[client]
            future = queue.popleft()
            # The client goes to the back of the line (or leaves it, with nothing queued).
            del self._queues[client]
            if queue:
                self._queues[client] = queue
            if not future.done():
                self._take(client)
                future.set_result(None)

    async def _acquire(self, client: Client) -> None:
        if client not in self._queues and self._may_run(client):
            self._take(client)
            return
        future = asyncio.get_running_loop().create_future()
        self._queues.setdefault(client, collections.deque()).append(future)
        try:
            await future
        except BaseException:
            if future.done() and not future.cancelled():
                self._release(client)  # the thread was ours already: give it back
            else:
                queue = self._queues.get(client)
                if queue is not None and future in queue:
                    queue.remove(future)
                    if not queue:
                        del self._queues[client]
            raise

    async def _submit(self, client: Client, function: Callable[[], T]) -> Future[T]:
        """Start `function` on a thread in the client's turn; the share is given back when
        the thread is done with it (not when a caller stops waiting)."""
        await self._acquire(client)
        loop = asyncio.get_running_loop()

        def done(_: Future[T]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to give back
                loop.call_soon_threadsafe(self._release, client)

        try:
            future = self._executor.submit(function)
        except BaseException:
            self._release(client)
            raise
        future.add_done_callback(done)
        return future

    async def run(self, client: Client, function: Callable[[], T]) -> T:
        """Run `function` on a thread, in the client's turn.

        Cancellation: while queued, the job never runs; once running, the caller stops waiting
        and the thread finishes the job."""
        return await asyncio.wrap_future(await self._submit(client, function))

    async def drive(self, client: Client, op: BlockingOp[T]) -> T:
        """Run a blocking operation: steps on threads, waits on the loop, each wait at most
        `wait_timeout_s` (then `WaitExpired`).

        Cancellation: the operation is closed (its cleanup runs: fds closed, temp files
        removed), after its running step if one runs."""
        loop = asyncio.get_running_loop()
        step: Future[tuple[bool, Any]] | None = None
        try:
            while True:
                step = await self._submit(client, functools.partial(_advance, op))
                done, value = await asyncio.wrap_future(step)
                step = None
                if done:
                    result: T = value
                    return result
                await _ready(loop, value, self.wait_timeout_s)
        finally:
            if step is not None and not step.done():
                step.add_done_callback(lambda _: op.close())  # on its thread, after the step
            else:
                op.close()


async def _ready(loop: asyncio.AbstractEventLoop, wait: Wait, timeout_s: float) -> None:
    """Return once `wait.fd` is ready; `WaitExpired` after `timeout_s`."""
    future: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not future.done():
            future.set_result(None)

    readable = wait.ready is Ready.READABLE
    try:
        if readable:
            loop.add_reader(wait.fd, wake)
        else:
            loop.add_writer(wait.fd, wake)
    except (OSError, ValueError):
        return  # epoll refuses files that are always ready: just try again
    try:
        async with asyncio.timeout(None if wait.patient else timeout_s):
            await future
    except TimeoutError:
        raise WaitExpired(wait.path, wait.ready.value, timeout_s) from None
    finally:
        if readable:
            loop.remove_reader(wait.fd)
        else:
            loop.remove_writer(wait.fd)
