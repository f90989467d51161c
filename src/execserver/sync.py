"""A blocking facade over `Environment`, for scripts and notebooks.

    from execserver.sync import SyncEnvironment

    with SyncEnvironment.connect("ws://127.0.0.1:8765") as env:
        print(env.process.run(["uname", "-a"]).stdout)
        env.fs.write_file("/tmp/x", b"data")
        for event in env.process.start(["sh", "-c", "echo a; echo b"]):
            print(event)

The asynchronous environment runs on an event loop in a private thread; every call blocks
until its coroutine finishes there. Methods and results are those of the async API
(`env.fs.*`, `env.http.request`, `env.info()`); processes and file handles come back wrapped.
Works inside a running event loop too (e.g. Jupyter), since the loop is a separate thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar

from execserver.environment import Environment, ProcessEvent
from execserver.environment.process import ExecProcess

T = TypeVar("T")


class _Portal:
    """An event loop in a daemon thread, and a way to run coroutines on it from outside."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="execserver-sync")
        self._thread.daemon = True
        self._thread.start()

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class _Blocking:
    """Calls the async methods of `target` on the portal and waits for them."""

    def __init__(self, portal: _Portal, target: object) -> None:
        self._portal = portal
        self._target = target

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._target, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            result = self._portal.call(_await(method(*args, **kwargs)))
            if hasattr(result, "read_block") and hasattr(result, "aclose"):
                return SyncFileHandle(self._portal, result)
            return result

        return call


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


class SyncFileHandle(_Blocking):
    """A file handle: `read_block()`, `write_block()`, `close()`; a context manager."""

    def close(self) -> None:
        self.aclose()

    def __enter__(self) -> SyncFileHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SyncProcess(_Blocking):
    """A started process; iterating yields its events in order (once)."""

    def __init__(self, portal: _Portal, process: ExecProcess) -> None:
        super().__init__(portal, process)
        self._process = process

    @property
    def process_id(self) -> str:
        return self._process.process_id

    def __iter__(self) -> Iterator[ProcessEvent]:
        events = self._process.__aiter__()
        while True:
            try:
                yield self._portal.call(_await(events.__anext__()))
            except StopAsyncIteration:
                return

    def __enter__(self) -> SyncProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.aclose()


class SyncProcessBackend(_Blocking):
    def start(self, argv: Sequence[str], **options: Any) -> SyncProcess:
        target: Any = self._target
        return SyncProcess(self._portal, self._portal.call(target.start(argv, **options)))


class SyncEnvironment:
    def __init__(self, open_environment: Callable[[], Awaitable[Environment]]) -> None:
        self._portal = _Portal()
        try:
            self._env = self._portal.call(_await(open_environment()))
        except BaseException:
            self._portal.close()
            raise
        self.process = SyncProcessBackend(self._portal, self._env.process)
        self.fs = _Blocking(self._portal, self._env.fs)
        self.http = _Blocking(self._portal, self._env.http)

    @classmethod
    def connect(cls, url: str, **options: Any) -> SyncEnvironment:
        """`connect_environment(url, ...)`: a WebSocket exec-server."""
        from execserver.remote import connect_environment

        return cls(lambda: connect_environment(url, **options))

    @classmethod
    def spawn(cls, program: str, args: Sequence[str] = (), **options: Any) -> SyncEnvironment:
        """`spawn_environment(program, args, ...)`: an exec-server speaking stdio."""
        from execserver.remote import spawn_environment

        return cls(lambda: spawn_environment(program, args, **options))

    @classmethod
    def local(cls) -> SyncEnvironment:
        """This host, in-process."""
        from execserver.local.environment import local_environment

        async def open_local() -> Environment:
            return local_environment()

        return cls(open_local)

    def info(self) -> Any:
        return self._portal.call(self._env.info())

    def run(self, argv: Sequence[str], **options: Any) -> Any:
        """Shortcut for `process.run(argv, ...)`."""
        return self.process.run(argv, **options)

    def close(self) -> None:
        """Close the environment and stop the loop thread."""
        try:
            self._portal.call(self._env.aclose())
        finally:
            self._portal.close()

    def __enter__(self) -> SyncEnvironment:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


__all__ = ["SyncEnvironment", "SyncFileHandle", "SyncProcess"]
