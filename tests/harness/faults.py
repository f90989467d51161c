"""A TCP proxy on 127.0.0.1 that cuts connections on demand, for reconnect tests.

    async with CuttingProxy(target_port) as proxy:
        url = f"ws://127.0.0.1:{proxy.port}"
        ...
        proxy.cut()                # abort every open connection (both sides, mid-stream)
        proxy.refuse_for(0.3)      # and turn new connections away for a while
        proxy.cut(hold_upstream=True); ...; proxy.release()
                                   # break only the client's side: the server keeps its end
        proxy.cut_before_reply(b'"status":"accepted"')
                                   # the next time the server sends this, drop it and cut

    CuttingProxy(target_port, chaos=Chaos(rng, max_delay_s=0.004, split=True, stall=0.01))
                                   # and delay, split and now and then stall what it forwards

Both sides of a cut connection are aborted (RST, no close handshake), so the server sees the
loss as promptly as a real network failure lets it, and bytes in flight are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import socket
import struct
from dataclasses import dataclass
from types import TracebackType


@dataclass
class Chaos:
    """How a proxy mangles the timing and framing of what it forwards (never the bytes)."""

    rng: random.Random
    max_delay_s: float = 0.0
    """Each forwarded piece waits a random time up to this."""
    split: bool = False
    """Forward each read as up to four pieces cut at random offsets (frames arrive in parts)."""
    stall_probability: float = 0.0
    """Chance that a piece waits `stall_s` instead (a congested or lossy link)."""
    stall_s: float = 0.2

    def pieces(self, data: bytes) -> list[bytes]:
        if not self.split or len(data) < 2:
            return [data]
        cuts = sorted(self.rng.sample(range(1, len(data)), min(3, len(data) - 1)))
        bounds = [0, *cuts[: self.rng.randint(0, len(cuts))], len(data)]
        return [data[a:b] for a, b in itertools.pairwise(bounds)]

    def delay(self) -> float:
        if self.stall_probability and self.rng.random() < self.stall_probability:
            return self.stall_s
        return self.rng.uniform(0, self.max_delay_s) if self.max_delay_s else 0.0


def _abort(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            # Linger 0: close() sends RST instead of FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class CuttingProxy:
    def __init__(
        self,
        target_port: int,
        target_host: str = "127.0.0.1",
        *,
        chaos: Chaos | None = None,
        chaos_only: bytes | None = None,
    ) -> None:
        self._target = (target_host, target_port)
        self._chaos = chaos
        self._chaos_only = chaos_only
        """With it, chaos applies only to connections whose first bytes contain it."""
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._refuse_until = 0.0
        self._held: list[asyncio.StreamWriter] = []
        self._heads: dict[tuple[asyncio.StreamWriter, asyncio.StreamWriter], bytes] = {}
        """The first bytes each client sent (its request line), to cut connections by kind."""
        self._reply_trigger: bytes | None = None
        self._reply_watches: list[tuple[bytes, asyncio.Event]] = []
        self.cuts = 0
        """Cuts that actually broke at least one open connection."""
        self.connections = 0

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        self.release()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def retarget(self, port: int, host: str = "127.0.0.1") -> None:
        """Forward new connections to `host:port` (for a server started after the proxy)."""
        self._target = (host, port)

    def cut(self, *, hold_upstream: bool = False, only: bytes | None = None) -> bool:
        """Abort every open connection (with `only`, those whose first bytes from the client
        contain it, e.g. a request path); True if there was one. With `hold_upstream`, the
        server's side stays open (the server still sees a live connection) until `release()`."""
        links = [link for link in self._links if only is None or only in self._heads.get(link, b"")]
        self._links.difference_update(links)
        for client, upstream in links:
            self._heads.pop((client, upstream), None)
            _abort(client)
            if hold_upstream:
                self._held.append(upstream)
            else:
                _abort(upstream)
        if links:
            self.cuts += 1
        return bool(links)

    def cut_before_reply(self, pattern: bytes) -> None:
        """Once: when the server next sends bytes containing `pattern`, drop them and cut that
        connection (the server did the work, the client never hears of it). The pattern must be
        in one read, which holds for a small unfragmented frame."""
        self._reply_trigger = pattern

    def replied(self, pattern: bytes) -> asyncio.Event:
        """An event set once the proxy has written bytes from the server containing `pattern` to
        the client's socket (the pattern must be in one read, which holds for a small frame)."""
        event = asyncio.Event()
        self._reply_watches.append((pattern, event))
        return event

    def _notice(self, data: bytes) -> None:
        for watch in list(self._reply_watches):
            if watch[0] in data:
                self._reply_watches.remove(watch)
                watch[1].set()

    def release(self) -> None:
        """Abort the server sides kept by `cut(hold_upstream=True)`."""
        held, self._held = self._held, []
        for upstream in held:
            _abort(upstream)

    def refuse_for(self, seconds: float) -> None:
        """Accept-and-reset new connections for `seconds` (the server looks unreachable)."""
        self._refuse_until = asyncio.get_running_loop().time() + seconds

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if asyncio.get_running_loop().time() < self._refuse_until:
            _abort(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            _abort(writer)
            return
        self.connections += 1
        link = (writer, up_writer)
        self._links.add(link)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._pump(source, sink, link))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        link: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        chaos = self._chaos
        try:
            while data := await source.read(65536):
                trigger = self._reply_trigger
                if trigger is not None and sink is link[0] and trigger in data:
                    self._reply_trigger = None
                    self._links.discard(link)
                    self._heads.pop(link, None)
                    for writer in link:
                        _abort(writer)
                    self.cuts += 1
                    return
                if sink is link[1] and link not in self._heads:
                    self._heads[link] = data[:512]
                if self._chaos_only is not None:
                    head = self._heads.get(link, b"")
                    chaos = self._chaos if self._chaos_only in head else None
                if chaos is None:
                    sink.write(data)
                    await sink.drain()
                else:
                    for piece in chaos.pieces(data):
                        if delay := chaos.delay():
                            await asyncio.sleep(delay)
                        sink.write(piece)
                        await sink.drain()
                if sink is link[0]:
                    self._notice(data)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            # One side ended: end the other the same way (a clean close stays clean).
            if link in self._links:
                self._links.discard(link)
                self._heads.pop(link, None)
                for writer in link:
                    with contextlib.suppress(OSError, RuntimeError):
                        writer.close()
