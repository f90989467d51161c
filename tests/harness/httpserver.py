"""A scripted HTTP/1.1 server on 127.0.0.1 for `http/request` tests (stdlib asyncio only).

Start it inside a case or test and register routes; every request it receives is recorded as
sent (method, target, the ordered raw header list with names' case, body):

    async with http_test_server() as server:
        server.route("/ok", respond(200, [("X-Multi", "a"), ("X-Multi", "b")], b"hi"))
        ... http/request to server.url("/ok") ...
        server.requests[0].headers

Routes are coroutines `handler(request, exchange)` that write the response themselves through
the `Exchange`; the builders below cover fixed responses, redirects, chunked and large bodies,
bodies that stall half-way, responses whose headers are held back, connections closed without
a response, and raw bytes. Nothing sleeps: whatever waits, waits on an `asyncio.Event` or for
the client to disconnect, and leaving the context closes every connection and cancels every
handler still waiting. Keep-alive is supported (the client may reuse a connection), so each
recorded request also carries the index of the connection it came on.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import random
import re
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

HeaderList = Sequence[tuple[str, str | bytes]]

_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    301: "Moved Permanently",
    302: "Found",
    303: "See Other",
    304: "Not Modified",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    400: "Bad Request",
    404: "Not Found",
    418: "I'm a teapot",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def text(data: bytes) -> str:
    """`data` as UTF-8 text, or `hex:<hex digits>` when it is not UTF-8."""
    try:
        return data.decode()
    except UnicodeDecodeError:
        return "hex:" + data.hex()


@dataclass
class RecordedRequest:
    """One request as the server read it off the socket."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    connection: int

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def header(self, name: str) -> list[str]:
        """All values of a header (name compared case-insensitively, values stripped), in order."""
        return [v.strip(" \t") for k, v in self.headers if k.lower() == name.lower()]

    def view(self) -> dict[str, Any]:
        """A JSON-able picture of the request (body as text when it is UTF-8, else its hex)."""
        return {
            "requestLine": f"{self.method} {self.target} {self.version}",
            "headers": [[k, text(v.encode("latin-1"))] for k, v in self.headers],
            "body": text(self.body),
        }


class Exchange:
    """The connection a handler answers on."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: RecordedRequest
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.request = request
        self.keep_alive = True

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send_head(
        self, status: int, headers: HeaderList, *, reason: str | None = None
    ) -> None:
        reason = _REASONS.get(status, "Status") if reason is None else reason
        lines = [f"HTTP/1.1 {status} {reason}".encode()]
        for name, value in headers:
            lines.append(
                name.encode() + b": " + (value if isinstance(value, bytes) else value.encode())
            )
        await self.write(b"\r\n".join(lines) + b"\r\n\r\n")

    async def wait_disconnect(self) -> None:
        """Return once the client has closed its side (or reset the connection)."""
        with contextlib.suppress(ConnectionError):
            while await self.reader.read(65536):
                pass

    def close(self) -> None:
        self.keep_alive = False
        self.writer.close()

    def abort(self) -> None:
        """Drop the connection with a reset (RST, via SO_LINGER 0) instead of a FIN."""
        self.keep_alive = False
        sock = self.writer.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


Handler = Callable[[RecordedRequest, Exchange], Awaitable[None]]


# -- route builders ----------------------------------------------------------------------------


def _has(headers: HeaderList, name: str) -> bool:
    return any(k.lower() == name.lower() for k, _ in headers)


def respond(
    status: int = 200,
    headers: HeaderList = (),
    body: bytes = b"",
    *,
    reason: str | None = None,
    content_length: bool = True,
) -> Handler:
    """A fixed response: status, headers in the given order (repeats kept), body.

    `content-length` is added (last) unless the headers carry one or `content_length` is false,
    in which case the body is delimited by closing the connection. HEAD gets no body."""

    async def handler(request: RecordedRequest, exchange: Exchange) -> None:
        head = list(headers)
        delimited = content_length or _has(head, "content-length")
        if content_length and not _has(head, "content-length"):
            head.append(("content-length", str(len(body))))
        await exchange.send_head(status, head, reason=reason)
        if request.method != "HEAD" and status not in (204, 304):
            await exchange.write(body)
        if not delimited:
            exchange.close()

    return handler


def echo() -> Handler:
    """200 with the request's method, target, headers and body as text (content-type text)."""

    async def handler(request: RecordedRequest, exchange: Exchange) -> None:
        lines = [f"{request.method} {request.target}"]
        lines += [f"{k}: {v}" for k, v in request.headers]
        body = ("\n".join(lines) + "\n\n").encode() + request.body
        await respond(200, [("content-type", "text/plain")], body)(request, exchange)

    return handler


def redirect(status: int, location: str, headers: HeaderList = (), body: bytes = b"") -> Handler:
    """A redirect to `location` (relative or absolute, used verbatim)."""
    return respond(status, [("location", location), *headers], body)


def chunked(chunks: Iterable[bytes], headers: HeaderList = ()) -> Handler:
    """`transfer-encoding: chunked`, one chunk per element (each written and drained)."""
    parts = [c for c in chunks if c]

    async def handler(request: RecordedRequest, exchange: Exchange) -> None:
        await exchange.send_head(200, [*headers, ("transfer-encoding", "chunked")])
        for part in parts:
            await exchange.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        await exchange.write(b"0\r\n\r\n")

    return handler


def large(data: bytes, *, write_size: int = 65536, headers: HeaderList = ()) -> Handler:
    """A big body with content-length, sent in many writes of `write_size` bytes."""

    async def handler(request: RecordedRequest, exchange: Exchange) -> None:
        await exchange.send_head(200, [*headers, ("content-length", str(len(data)))])
        view = memoryview(data)
        for start in range(0, len(data), write_size):
            await exchange.write(bytes(view[start : start + write_size]))

    return handler


def gzipped(body: bytes, headers: HeaderList = ()) -> Handler:
    """`body` gzip-compressed (mtime 0, deterministic) with `content-encoding: gzip`."""
    compressed = gzip.compress(body, mtime=0)
    return respond(200, [("content-encoding", "gzip"), *headers], compressed)


def raw(data: bytes, *, close: bool = True) -> Handler:
    """Write these exact bytes as the response (then close the connection)."""

    async def handler(request: RecordedRequest, exchange: Exchange) -> None:
        await exchange.write(data)
        if close:
            exchange.close()

    return handler


def close_without_response() -> Handler:
    """Read the request, then close the connection without a byte of response."""

    async def handler(request: RecordedRequest, exchange: Exchange) -> None:
        exchange.close()

    return handler


async def _released_or_gone(release: asyncio.Event, exchange: Exchange) -> str:
    """Wait for `release` or for the client to disconnect, whichever comes first."""
    gone = asyncio.ensure_future(exchange.wait_disconnect())
    released = asyncio.ensure_future(release.wait())
    try:
        await asyncio.wait([gone, released], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (gone, released):
            task.cancel()
        # The reader must be free again before the next request is read from it.
        await asyncio.gather(gone, released, return_exceptions=True)
    return "released" if release.is_set() else "gone"


class HoldHeaders:
    """A route that sends nothing until `release` is set (or the client gives up).

    `arrived` is set when a request reached it, `disconnected` when the client closed the
    connection while waiting (e.g. its timeout fired). After `release`, `then` answers."""

    def __init__(self, then: Handler | None = None) -> None:
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()
        self.disconnected = asyncio.Event()
        self.then = then or respond(200, [], b"late")

    async def __call__(self, request: RecordedRequest, exchange: Exchange) -> None:
        self.arrived.set()
        if await _released_or_gone(self.release, exchange) == "gone":
            self.disconnected.set()
            exchange.close()
            return
        await self.then(request, exchange)


class StalledBody:
    """Headers announcing `total` bytes (or chunked), the first `head` bytes, then a stall.

    `stalled` is set once `head` is written. Then it waits for `release` (or the client to
    disconnect, which sets `disconnected`); on release it either sends the rest (`then="finish"`),
    closes the socket cleanly mid-body (`then="close"`) or resets it (`then="reset"`)."""

    def __init__(
        self,
        head: bytes,
        rest: bytes = b"",
        *,
        then: str = "close",
        chunked: bool = False,
        headers: HeaderList = (),
    ) -> None:
        assert then in ("finish", "close", "reset")
        self.head = head
        self.rest = rest
        self.then = then
        self.chunked = chunked
        self.headers = list(headers)
        self.stalled = asyncio.Event()
        self.release = asyncio.Event()
        self.disconnected = asyncio.Event()

    def _frame(self, data: bytes) -> bytes:
        if not self.chunked or not data:
            return data
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    async def __call__(self, request: RecordedRequest, exchange: Exchange) -> None:
        framing = (
            ("transfer-encoding", "chunked")
            if self.chunked
            else ("content-length", str(len(self.head) + len(self.rest)))
        )
        await exchange.send_head(200, [*self.headers, framing])
        await exchange.write(self._frame(self.head))
        self.stalled.set()
        if await _released_or_gone(self.release, exchange) == "gone":
            self.disconnected.set()
            exchange.close()
        elif self.then == "finish":
            await exchange.write(self._frame(self.rest) + (b"0\r\n\r\n" if self.chunked else b""))
        elif self.then == "close":
            exchange.close()
        else:
            exchange.abort()


def deterministic_bytes(size: int, seed: int = 0) -> bytes:
    """`size` pseudo-random bytes, the same on every run."""
    return random.Random(seed).randbytes(size)


# -- the server --------------------------------------------------------------------------------


class HttpTestServer:
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        """Serve HTTPS with this context (plain HTTP without)."""
        self.routes: dict[str, Handler] = {}
        self.requests: list[RecordedRequest] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._changed = asyncio.Condition()
        self._connections = 0

    # -- configuration and queries

    def route(self, path: str, handler: Handler) -> None:
        """Serve `handler` for requests whose path (target without query) is `path`."""
        self.routes[path] = handler

    @property
    def authority(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str = "/") -> str:
        return f"http://{self.authority}{path}"

    def mask(self, value: Any, *, ports: Iterable[int] = ()) -> Any:
        """Replace this server's port (and any in `ports`) by `<port>` in strings, recursively.

        Only a port right after a colon is replaced (`127.0.0.1:<port>`), so digits inside
        digests or bodies stay as they are."""
        numbers = "|".join(str(p) for p in (self.port, *ports))
        pattern = re.compile(rf"(?<=:)({numbers})(?![0-9])")

        def walk(item: Any) -> Any:
            if isinstance(item, str):
                return pattern.sub("<port>", item)
            if isinstance(item, dict):
                return {k: walk(v) for k, v in item.items()}
            if isinstance(item, list | tuple):
                return [walk(v) for v in item]
            return item

        return walk(value)

    def views(self) -> list[dict[str, Any]]:
        """Every recorded request as a JSON-able view, port masked."""
        return [self.mask(r.view()) for r in self.requests]

    async def wait_requests(self, count: int, *, timeout: float = 10.0) -> list[RecordedRequest]:
        """Wait until at least `count` requests were recorded."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.requests) >= count)
        return self.requests

    # -- lifecycle

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", 0, limit=1 << 20, reuse_address=True, ssl=self.tls
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        index = self._connections
        self._connections += 1
        try:
            await self._exchanges(reader, writer, index)
            writer.close()
            await writer.wait_closed()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            # Cancelled by close(): end quietly (asyncio's stream callback would log it).
            pass
        finally:
            writer.close()
            self._writers.discard(writer)
            self._tasks.discard(task)

    async def _exchanges(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        """Serve requests on one connection until either side closes it."""
        while True:
            request = await self._read_request(reader, index)
            if request is None:
                return
            async with self._changed:
                self.requests.append(request)
                self._changed.notify_all()
            exchange = Exchange(reader, writer, request)
            handler = self.routes.get(request.path) or respond(404, [], b"no route")
            await handler(request, exchange)
            wants_close = any(v.lower() == "close" for v in request.header("connection"))
            if not exchange.keep_alive or wants_close or writer.is_closing():
                return

    @staticmethod
    async def _read_request(reader: asyncio.StreamReader, index: int) -> RecordedRequest | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        lines = head[:-4].decode("latin-1").split("\r\n")
        method, target, version = [*lines[0].split(" ", 2), "", ""][:3]
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            # Kept as sent: only the one space after the colon is dropped (values are latin-1
            # decoded, i.e. byte for byte; `view()` shows them as UTF-8).
            name, _, value = line.partition(":")
            headers.append((name, value.removeprefix(" ")))
        # Deliberate difference `http_host_header_first`: our client (h11) always sends Host
        # first, as RFC 9112 recommends; the reference sends it after the other headers. Host is
        # recorded first for both, so the rest of the order is still compared.
        hosts = [h for h in headers if h[0].lower() == "host"][:1]
        headers = hosts + [h for h in headers if h not in hosts or h is not hosts[0]]
        lowered = {k.lower(): v.strip(" \t") for k, v in headers}
        body = b""
        if "chunked" in lowered.get("transfer-encoding", "").lower():
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    # trailers until the empty line
                    while await reader.readuntil(b"\r\n") != b"\r\n":
                        pass
                    break
                body += await reader.readexactly(size)
                await reader.readexactly(2)
        elif "content-length" in lowered:
            body = await reader.readexactly(int(lowered["content-length"]))
        return RecordedRequest(method, target, version, headers, body, index)


@contextlib.asynccontextmanager
async def http_test_server(
    routes: dict[str, Handler] | None = None, *, tls: ssl.SSLContext | None = None
) -> AsyncIterator[HttpTestServer]:
    """A started `HttpTestServer` (HTTPS with `tls`), closed (every connection and handler) on
    exit."""
    server = HttpTestServer(tls)
    for path, handler in (routes or {}).items():
        server.route(path, handler)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def unused_port() -> int:
    """A port on 127.0.0.1 that nobody listens on (bound, then closed without listening)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


__all__ = [
    "Exchange",
    "Handler",
    "HoldHeaders",
    "HttpTestServer",
    "RecordedRequest",
    "StalledBody",
    "chunked",
    "close_without_response",
    "deterministic_bytes",
    "echo",
    "gzipped",
    "http_test_server",
    "large",
    "raw",
    "redirect",
    "respond",
    "text",
    "unused_port",
]
