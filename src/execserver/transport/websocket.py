"""WebSocket listener: HTTP routing and upgrade by hand, frames by websockets' sans-I/O core.

Routes follow the reference: any request carrying `Origin` -> 403 (checked first); `/readyz`
GET/HEAD -> 200, other methods -> 405; `/` -> WebSocket upgrade with axum's rejection texts,
then authentication (the hook); anything else -> 404. After the upgrade, frames are parsed by
`websockets.protocol.Protocol` (16 MiB frames, 64 MiB messages); oversize input drops the TCP
connection without a close frame, as the reference does. Outbound text frames are written
directly (one message per frame).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import hashlib
import logging
import socket
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from websockets.exceptions import PayloadTooBig
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN, SERVER, Protocol

from execserver.transport.base import FlowControl, MessageReceiver

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 16 * 1024 * 1024
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MAX_REQUEST_HEAD_BYTES = 64 * 1024
PING_INTERVAL_S = 30.0
# A peer that sends nothing (not even a pong) for this many ping periods is treated as gone.
SILENT_PING_PERIODS = 2
WRITE_HIGH_WATER = 1024 * 1024
WRITE_LOW_WATER = 256 * 1024

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# Messages below this are batched: every one queued in a loop turn goes out in one write at its
# end (one send syscall instead of one per message; pipelined answers share TCP segments).
_SMALL_MESSAGE_BYTES = 256 * 1024

_REASONS = {
    101: "Switching Protocols",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
}


@dataclass(slots=True)
class HttpRequest:
    """A parsed request head. Header names are lower-cased; repeats are joined with `,`."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    principal: str | None = None
    """Who the request comes from, as the authentication hook established it."""

    def has_token(self, name: str, token: str) -> bool:
        value = self.headers.get(name, "")
        return any(part.strip().lower() == token for part in value.split(","))


@dataclass(slots=True)
class HttpResponse:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)

    def serialize(self, *, head_only: bool = False) -> bytes:
        lines = [f"HTTP/1.1 {self.status} {_REASONS.get(self.status, 'Unknown')}"]
        names = {name for name, _ in self.headers}
        lines.extend(f"{name}: {value}" for name, value in self.headers)
        if self.status != 101:
            if self.body and "content-type" not in names:
                lines.append("content-type: text/plain; charset=utf-8")
            lines.append(f"content-length: {len(self.body)}")
        lines.append(f"date: {email.utils.formatdate(usegmt=True)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + self.body


HttpHook = Callable[[HttpRequest], HttpResponse | None]
HttpPage = Callable[[HttpRequest], HttpResponse]
"""Authentication of an upgrade request that passed every other check: a rejection, or None
to upgrade (the hook records `request.principal`)."""


def parse_request_head(head: bytes) -> HttpRequest | None:
    try:
        text = head.decode("latin-1")
        request_line, *header_lines = text.split("\r\n")
        method, target, _version = request_line.split(" ", 2)
    except ValueError:
        return None
    headers: dict[str, str] = {}
    for line in header_lines:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            return None
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    path = target.split("?", 1)[0]
    return HttpRequest(method, path, headers)


def upgrade_rejection(request: HttpRequest) -> HttpResponse | None:
    """axum's WebSocketUpgrade checks, in its order and with its texts."""
    if request.method != "GET":
        return HttpResponse(405, b"Request method must be `GET`")
    if not request.has_token("connection", "upgrade"):
        return HttpResponse(400, b"Connection header did not include 'upgrade'")
    if request.headers.get("upgrade", "").lower() != "websocket":
        return HttpResponse(400, b"`Upgrade` header did not include 'websocket'")
    if "sec-websocket-key" not in request.headers:
        return HttpResponse(400, b"`Sec-WebSocket-Key` header missing")
    if request.headers.get("sec-websocket-version", "") != "13":
        return HttpResponse(400, b"`Sec-WebSocket-Version` header did not include '13'")
    return None


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode("latin-1") + _GUID).digest()).decode()


def route(
    request: HttpRequest, hook: HttpHook | None, pages: Mapping[str, HttpPage] | None = None
) -> HttpResponse | None:
    """The response for a plain HTTP request, or None to upgrade to a WebSocket.

    `pages` are extra GET/HEAD pages (such as `/metrics`): after the Origin check and behind the
    same authentication hook as the WebSocket."""
    if "origin" in request.headers:
        return HttpResponse(403)
    if request.path == "/readyz":
        if request.method in ("GET", "HEAD"):
            return HttpResponse(200)
        return HttpResponse(405, headers=[("allow", "GET,HEAD")])
    page = pages.get(request.path) if pages else None
    if page is not None:
        if request.method not in ("GET", "HEAD"):
            return HttpResponse(405, headers=[("allow", "GET,HEAD")])
        return (hook(request) if hook is not None else None) or page(request)
    if request.path != "/":
        return HttpResponse(404)
    rejection = upgrade_rejection(request)
    if rejection is None and hook is not None:
        # Like the reference, authentication runs only once the upgrade itself is valid.
        rejection = hook(request)
    return rejection


def _frame_header(length: int) -> bytes:
    if length < 126:
        return bytes((0x81, length))
    if length < 65536:
        return struct.pack("!BBH", 0x81, 126, length)
    return struct.pack("!BBQ", 0x81, 127, length)


def format_peer(address: object) -> str:
    """`ip:port` like Rust's SocketAddr (`[v6]:port`)."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)


class WebSocketServerConnection(FlowControl, asyncio.Protocol):
    """One accepted TCP connection: HTTP head, then (maybe) a WebSocket."""

    def __init__(
        self,
        on_open: Callable[[WebSocketServerConnection], MessageReceiver],
        hook: HttpHook | None,
        ping_interval_s: float = PING_INTERVAL_S,
        pages: Mapping[str, HttpPage] | None = None,
    ) -> None:
        FlowControl.__init__(self)
        self._on_open = on_open
        self._hook = hook
        self._pages = pages
        self._ping_interval_s = ping_interval_s
        self._transport: asyncio.Transport | None = None
        self._head = bytearray()
        self._ws: Protocol | None = None
        self._receiver: MessageReceiver | None = None
        self._fragments: list[bytes] = []
        self._fragment_opcode: Opcode | None = None
        self._ping_handle: asyncio.TimerHandle | None = None
        self._last_heard = 0.0
        self._closed = False
        self._batch: list[bytes] = []
        self._batch_bytes = 0
        self._batch_scheduled = False
        self.peer = ""
        self.label = ""
        self.request: HttpRequest | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)
        self.peer = format_peer(transport.get_extra_info("peername"))
        self.label = f"websocket JSON-RPC message from exec-server websocket {self.peer}"

    def data_received(self, data: bytes) -> None:
        if self._ws is not None:
            self._receive_frames(data)
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_REQUEST_HEAD_BYTES:
                self._respond(HttpResponse(431))
            return
        rest = bytes(self._head[end + 4 :])
        request = parse_request_head(bytes(self._head[:end]))
        self._head.clear()
        if request is None:
            self._respond(HttpResponse(400, b"invalid HTTP request"))
            return
        self.request = request
        response = route(request, self._hook, self._pages)
        if response is not None:
            self._respond(response, head_only=request.method == "HEAD")
            return
        self._upgrade(request)
        if rest:
            self._receive_frames(rest)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._ping_handle is not None:
            self._ping_handle.cancel()
        self.resume_writing()
        if self._receiver is not None:
            receiver, self._receiver = self._receiver, None
            receiver.connection_lost()

    # -- HTTP ----------------------------------------------------------------------------------

    def _respond(self, response: HttpResponse, *, head_only: bool = False) -> None:
        assert self._transport is not None
        self._transport.write(response.serialize(head_only=head_only))
        self._transport.close()

    def _upgrade(self, request: HttpRequest) -> None:
        assert self._transport is not None
        key = request.headers["sec-websocket-key"]
        response = HttpResponse(
            101,
            headers=[
                ("connection", "upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-accept", accept_key(key)),
            ],
        )
        self._transport.write(response.serialize())
        self._ws = Protocol(SERVER, state=OPEN, max_size=(MAX_MESSAGE_BYTES, MAX_FRAME_BYTES))
        loop = asyncio.get_running_loop()
        self._last_heard = loop.time()
        self._ping_handle = loop.call_later(self._ping_interval_s, self._ping)
        self._receiver = self._on_open(self)

    # -- WebSocket -----------------------------------------------------------------------------

    def _receive_frames(self, data: bytes) -> None:
        ws = self._ws
        assert ws is not None
        ws.receive_data(data)
        self._last_heard = asyncio.get_running_loop().time()
        for event in ws.events_received():
            if isinstance(event, Frame):
                self._on_frame(event)
        if ws.parser_exc is not None:
            if not isinstance(ws.parser_exc, PayloadTooBig):
                log.debug("websocket protocol error from %s: %s", self.peer, ws.parser_exc)
            self.abort()
            return
        self._flush_protocol()
        if ws.close_expected() or ws.state is not OPEN:
            self._flush_protocol()
            if self._transport is not None:
                self._transport.close()

    def _on_frame(self, frame: Frame) -> None:
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            if frame.fin:
                self._deliver(frame.data, frame.opcode)
            else:
                self._fragment_opcode = frame.opcode
                self._fragments = [bytes(frame.data)]
        elif frame.opcode is Opcode.CONT and self._fragment_opcode is not None:
            self._fragments.append(bytes(frame.data))
            if frame.fin:
                opcode, self._fragment_opcode = self._fragment_opcode, None
                data, self._fragments = b"".join(self._fragments), []
                self._deliver(data, opcode)

    def _deliver(self, data: bytes | bytearray | memoryview, opcode: Opcode) -> None:
        if self._receiver is None or self._closed:
            return
        payload = bytes(data)
        if opcode is Opcode.TEXT and not _is_utf8(payload):
            self.abort()
            return
        self._receiver.message_received(payload)

    def _flush_protocol(self) -> None:
        ws = self._ws
        if ws is None or self._transport is None:
            return
        self._flush_batch()
        chunks = ws.data_to_send()
        if chunks:
            self._transport.writelines([c for c in chunks if c])

    def _ping(self) -> None:
        if self._closed or self._ws is None:
            return
        loop = asyncio.get_running_loop()
        # Slack of half a period so a pong that races the next ping still counts.
        if loop.time() - self._last_heard > (SILENT_PING_PERIODS + 0.5) * self._ping_interval_s:
            self.abort()
            return
        with contextlib.suppress(Exception):
            self._ws.send_ping(b"")
            self._flush_protocol()
        self._ping_handle = loop.call_later(self._ping_interval_s, self._ping)

    def transport_socket(self) -> socket.socket | None:
        """The accepted socket (for inspection)."""
        return None if self._transport is None else self._transport.get_extra_info("socket")

    # -- MessageChannel ------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or self._closed or transport.is_closing():
            return
        if len(data) < _SMALL_MESSAGE_BYTES:
            self._batch.append(_frame_header(len(data)))
            self._batch.append(data)
            self._batch_bytes += len(data)
            if self._batch_bytes >= _SMALL_MESSAGE_BYTES:
                self._flush_batch()
            elif not self._batch_scheduled:
                self._batch_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush_batch)
        else:  # no joined copy of a large payload
            self._flush_batch()
            transport.write(_frame_header(len(data)))
            transport.write(data)

    def _flush_batch(self) -> None:
        """Write the queued small messages (before any other write, to keep the order)."""
        self._batch_scheduled = False
        if not self._batch:
            return
        data = b"".join(self._batch)
        self._batch.clear()
        self._batch_bytes = 0
        transport = self._transport
        if transport is not None and not self._closed and not transport.is_closing():
            transport.write(data)

    def abort(self) -> None:
        if self._transport is not None and not self._closed:
            self._closed = True
            self._transport.abort()

    def pause_reading(self) -> None:
        if self._transport is not None and not self._closed:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and not self._closed:
            self._transport.resume_reading()


def _is_utf8(data: bytes) -> bool:
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


async def serve_websocket(
    host: str,
    port: int,
    on_open: Callable[[WebSocketServerConnection], MessageReceiver],
    *,
    hook: HttpHook | None = None,
    ping_interval_s: float = PING_INTERVAL_S,
    pages: Mapping[str, HttpPage] | None = None,
) -> asyncio.Server:
    """Listen on `host:port` and call `on_open(connection)` for every upgraded WebSocket."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: WebSocketServerConnection(on_open, hook, ping_interval_s, pages),
        host,
        port,
        reuse_address=True,
    )
