"""A small TCP load balancer for fleet tests: round robin over backends, skipping those that
refuse (a killed relay node), bytes forwarded unchanged.

    async with TcpBalancer([port1, port2, port3]) as lb:
        url = f"http://127.0.0.1:{lb.port}"
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Sequence
from types import TracebackType

from tests.harness.faults import _abort


class TcpBalancer:
    def __init__(self, backends: Sequence[int], host: str = "127.0.0.1") -> None:
        self.backends = list(backends)
        self._host = host
        self._next = itertools.count()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections: dict[int, int] = {}
        """Backend port -> connections sent to it."""
        self.preferred: int | None = None
        """A backend port tried first while it answers (tests steer a socket to a node)."""

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def __aenter__(self) -> TcpBalancer:
        self._server = await asyncio.start_server(self._accept, self._host, 0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            _abort(writer)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int] | None:
        start = next(self._next)
        order = [self.backends[(start + i) % len(self.backends)] for i in range(len(self.backends))]
        if self.preferred in order:
            order.remove(self.preferred)
            order.insert(0, self.preferred)
        for port in order:
            try:
                reader, writer = await asyncio.open_connection(self._host, port)
            except OSError:
                continue
            self.connections[port] = self.connections.get(port, 0) + 1
            return reader, writer, port
        return None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await self._connect()
        if upstream is None:
            _abort(writer)
            return
        up_reader, up_writer, _ = upstream
        self._writers.update((writer, up_writer))
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._pump(source, sink, (writer, up_writer)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            # A reset on one side is a reset on the other (a killed node looks killed).
            for writer in pair:
                _abort(writer)
            return
        finally:
            for writer in pair:
                self._writers.discard(writer)
        for writer in pair:  # one side ended cleanly: end the other the same way
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()
