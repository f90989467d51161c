"""WebSocket message channels, both sides, I/O by asyncio. websockets' sans-I/O core does the
client handshake, control frames and the server's frame parsing; the client's data frames
and its parsing of the server's frames are `transport.ws_frames` (fewer copies and less Python
per frame than websockets' general code: docs/BENCHMARKS.md, relay mode).

`WebSocketChannel` is the part both sides share once the handshake is done: frames in ->
whole messages to the receiver (16 MiB frames, 64 MiB messages by default; oversize input drops
the TCP connection without a close frame, as the reference does), messages out as one frame each
(small ones written together at the end of the loop turn), keepalive pings, flow control.
`WebSocketServerConnection` adds the HTTP head and upgrade of an accepted connection (see
`transport.http`); `connect_websocket()` dials out (ws:// or wss://) and completes the client
handshake. Library exceptions end here: dialling raises `ConnectError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl as ssl_module
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import cast

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus, PayloadTooBig, ProtocolError
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import OPEN, SERVER, Protocol
from websockets.uri import parse_uri

from execserver.errors import ConnectError, HandshakeRejected
from execserver.transport.base import FlowControl, MessageReceiver
from execserver.transport.http import (
    MAX_REQUEST_HEAD_BYTES,
    HttpHook,
    HttpPage,
    HttpRequest,
    HttpResponse,
    accept_key,
    format_peer,
    parse_request_head,
    parse_retry_after,
    route,
)
from execserver.transport.ws_frames import (
    BINARY_FIN,
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    TEXT_FIN,
    FrameParser,
    FrameProtocolError,
    FrameTooLarge,
    MaskSource,
    client_frame,
    frame_header,
)

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 16 * 1024 * 1024
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
PING_INTERVAL_S = 30.0
CLIENT_PING_INTERVAL_S = 20.0
CONNECT_TIMEOUT_S = 10.0
TLS_HANDSHAKE_TIMEOUT_S = 10.0
# A peer that sends nothing (not even a pong) for this many ping periods is treated as gone.
SILENT_PING_PERIODS = 2
WRITE_HIGH_WATER = 1024 * 1024
WRITE_LOW_WATER = 256 * 1024
# Messages below this are batched: every one queued in a loop turn goes out in one write at its
# end (one send syscall instead of one per message; pipelined answers share TCP segments).
_SMALL_MESSAGE_BYTES = 256 * 1024
_MAX_WRITEV_PARTS = 64
"""Frames written by one `writev` at most, times two (header, payload); IOV_MAX is 1024."""


_DATA_OPCODES = (Opcode.CONT, Opcode.TEXT, Opcode.BINARY)


def _is_utf8(data: bytes) -> bool:
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class WebSocketChannel(FlowControl, asyncio.Protocol):
    """A `MessageChannel` over one WebSocket; subclasses do the opening handshake.

    `binary` chooses the opcode of outbound messages (text for JSON-RPC, binary for relay
    frames). A server writes its (unmasked) frames itself; a client masks its data frames with
    `transport.ws_frames`.
    """

    def __init__(
        self,
        *,
        ping_interval_s: float,
        binary: bool = False,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        max_frame_bytes: int = MAX_FRAME_BYTES,
    ) -> None:
        FlowControl.__init__(self)
        self._ping_interval_s = ping_interval_s
        self._binary = binary
        self._max_message_bytes = max_message_bytes
        self._max_frame_bytes = max_frame_bytes
        self._transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop
        """Set by `connection_made` (kept: `get_running_loop()` is a `getpid` system call)."""
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

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's do not derive from asyncio.Transport).
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)
        self.peer = format_peer(transport.get_extra_info("peername"))

    def data_received(self, data: bytes) -> None:
        self._receive_frames(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._ping_handle is not None:
            self._ping_handle.cancel()
        self.resume_writing()
        if self._receiver is not None:
            receiver, self._receiver = self._receiver, None
            receiver.connection_lost()

    # -- frames --------------------------------------------------------------------------------

    def _open(self, ws: Protocol, receiver: MessageReceiver) -> None:
        """The handshake is done: frames from now on go to `receiver`."""
        self._ws = ws
        self._receiver = receiver
        self._last_heard = self._loop.time()
        self._ping_handle = self._loop.call_later(self._ping_interval_s, self._ping)

    def _receive_frames(self, data: bytes) -> None:
        ws = self._ws
        assert ws is not None
        ws.receive_data(data)
        self._last_heard = self._loop.time()
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
        if opcode is Opcode.TEXT and self._binary:
            return  # a binary protocol (relay frames): text messages are dropped, as codex does
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
        loop = self._loop
        # Slack of half a period so a pong that races the next ping still counts.
        if loop.time() - self._last_heard > (SILENT_PING_PERIODS + 0.5) * self._ping_interval_s:
            self.abort()
            return
        with contextlib.suppress(Exception):
            self._ws.send_ping(b"")
            self._flush_protocol()
        self._ping_handle = loop.call_later(self._ping_interval_s, self._ping)

    def transport_socket(self) -> socket.socket | None:
        """The underlying socket (for inspection)."""
        return None if self._transport is None else self._transport.get_extra_info("socket")

    # -- MessageChannel ------------------------------------------------------------------------

    def _writable_transport(self) -> asyncio.Transport | None:
        transport = self._transport
        if transport is None or self._closed or self._ws is None or transport.is_closing():
            return None
        return transport

    def send(self, data: bytes) -> None:
        raise NotImplementedError  # each side frames its own way

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

    def close(self) -> None:
        transport = self._writable_transport()
        if transport is None:
            if self._transport is not None and not self._closed:
                self._transport.close()
            return
        assert self._ws is not None
        with contextlib.suppress(Exception):
            self._ws.send_close(1000)
        self._flush_protocol()
        transport.close()  # asyncio writes what is buffered first

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


# -- server side ---------------------------------------------------------------------------------


class WebSocketServerConnection(WebSocketChannel):
    """One accepted TCP connection: HTTP head, then (maybe) a WebSocket."""

    def __init__(
        self,
        on_open: Callable[[WebSocketServerConnection], MessageReceiver],
        hook: HttpHook | None,
        ping_interval_s: float = PING_INTERVAL_S,
        pages: Mapping[str, HttpPage] | None = None,
    ) -> None:
        super().__init__(ping_interval_s=ping_interval_s)
        self._on_open = on_open
        self._hook = hook
        self._pages = pages
        self._head = bytearray()
        self.request: HttpRequest | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
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
            # As hyper answers a head it cannot parse: 400, no body, and the connection closes.
            self._respond(HttpResponse(400, headers=[("connection", "close")]))
            return
        self.request = request
        if self._transport is not None:
            request.peer_address = self._transport.get_extra_info("peername")
            request.local_address = self._transport.get_extra_info("sockname")
        response = route(request, self._hook, self._pages)
        if response is not None:
            self._respond(response, head_only=request.method == "HEAD")
            return
        self._upgrade(request)
        if rest:
            self._receive_frames(rest)

    def send(self, data: bytes) -> None:
        # Written here rather than by websockets: unmasked frames need no copy of the payload.
        transport = self._transport
        if transport is None or self._closed or self._ws is None or transport.is_closing():
            return
        size = len(data)
        if size < _SMALL_MESSAGE_BYTES:
            batch = self._batch
            batch.append(frame_header(TEXT_FIN, size))
            batch.append(data)
            self._batch_bytes += size
            if self._batch_bytes >= _SMALL_MESSAGE_BYTES:
                self._flush_batch()
            elif not self._batch_scheduled:
                self._batch_scheduled = True
                self._loop.call_soon(self._flush_batch)
        else:  # no joined copy of a large payload
            self._flush_batch()
            transport.write(frame_header(TEXT_FIN, size))
            transport.write(data)

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
        ws = Protocol(SERVER, state=OPEN, max_size=(self._max_message_bytes, self._max_frame_bytes))
        self._open(ws, self._on_open(self))


async def serve_websocket(
    host: str,
    port: int,
    on_open: Callable[[WebSocketServerConnection], MessageReceiver],
    *,
    hook: HttpHook | None = None,
    ping_interval_s: float = PING_INTERVAL_S,
    pages: Mapping[str, HttpPage] | None = None,
    sock: socket.socket | None = None,
    tls: ssl_module.SSLContext | None = None,
) -> asyncio.Server:
    """Listen on `host:port` (or on the listening socket `sock`, already bound; TLS with `tls`)
    and call `on_open(connection)` for every upgraded WebSocket."""
    loop = asyncio.get_running_loop()

    def factory() -> WebSocketServerConnection:
        return WebSocketServerConnection(on_open, hook, ping_interval_s, pages)

    handshake_timeout = None if tls is None else TLS_HANDSHAKE_TIMEOUT_S
    if sock is not None:
        return await loop.create_server(
            factory, sock=sock, ssl=tls, ssl_handshake_timeout=handshake_timeout
        )
    return await loop.create_server(
        factory,
        host,
        port,
        reuse_address=True,
        ssl=tls,
        ssl_handshake_timeout=handshake_timeout,
    )


# -- client side ---------------------------------------------------------------------------------


class WebSocketClientConnection(WebSocketChannel):
    """A dialled WebSocket: sends the opening handshake, then carries messages.

    websockets' client protocol does the handshake and writes the control frames (ping, close
    and pong); data frames are masked and written, and the server's frames parsed, by
    `transport.ws_frames`.
    """

    def __init__(
        self,
        protocol: ClientProtocol,
        receiver: MessageReceiver,
        *,
        ping_interval_s: float,
        binary: bool,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        super().__init__(
            ping_interval_s=ping_interval_s, binary=binary, max_message_bytes=max_message_bytes
        )
        self._client = protocol
        self._pending_receiver = receiver
        self._first = BINARY_FIN if binary else TEXT_FIN
        self._masks = MaskSource()
        self._fd: int | None = None
        self._parser = FrameParser(max_size=max_message_bytes)
        self._response_head = bytearray()
        self._response_head_fed = False
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self._lost: asyncio.Future[None] = loop.create_future()
        self.response: Response | None = None
        self.max_send_bytes = MAX_FRAME_BYTES
        """Each message goes out as one frame, and servers drop the connection for a frame
        over 16 MiB (ours and the reference): `RpcClient` refuses larger requests."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.label = f"exec-server websocket {self.peer}"
        sock = transport.get_extra_info("socket")
        if sock is not None and transport.get_extra_info("sslcontext") is None:
            # A plain TCP socket: `send_many` writes to it itself while the transport's buffer
            # is empty (never once the transport is closing or lost, so the fd is still ours).
            self._fd = sock.fileno()
        assert self._transport is not None
        self._transport.writelines(self._client.data_to_send())

    def data_received(self, data: bytes) -> None:
        if self._ws is not None:
            self._receive_server_frames(data)
            return
        client = self._client
        rest = b""
        if self._response_head_fed:  # the body of a refusal
            client.receive_data(data)
        else:
            # websockets gets the response head alone: what follows a 101 is frames, ours to parse.
            self._response_head += data
            end = self._response_head.find(b"\r\n\r\n")
            if end < 0 and len(self._response_head) <= MAX_REQUEST_HEAD_BYTES:
                return
            cut = end + 4 if end >= 0 else len(self._response_head)
            head, rest = bytes(self._response_head[:cut]), bytes(self._response_head[cut:])
            self._response_head = bytearray()
            self._response_head_fed = True
            client.receive_data(head)
        events = client.events_received()
        if not events and rest:
            client.receive_data(rest)
            rest = b""
            events = client.events_received()
        if not events:
            return
        response = events[0]
        if isinstance(response, Response):
            self.response = response
        if client.handshake_exc is not None or not isinstance(response, Response):
            if not self.opened.done():
                self.opened.set_exception(_handshake_error(client.handshake_exc, response))
            if self._transport is not None:
                self._transport.abort()
            return
        self._open(client, self._pending_receiver)
        if not self.opened.done():
            self.opened.set_result(None)
        if rest:
            self._receive_server_frames(rest)

    def _receive_server_frames(self, data: bytes) -> None:
        self._last_heard = self._loop.time()
        try:
            frames = self._parser.feed(data)
        except FrameProtocolError as exc:
            if not isinstance(exc, FrameTooLarge):
                log.debug("websocket protocol error from %s: %s", self.peer, exc)
            self.abort()
            return
        for fin, opcode, payload in frames:
            if self._closed:
                return
            if opcode <= OP_BINARY:
                if opcode == OP_CONT:
                    self._fragments.append(payload)
                    if fin:
                        assert self._fragment_opcode is not None
                        kind, self._fragment_opcode = self._fragment_opcode, None
                        joined, self._fragments = b"".join(self._fragments), []
                        self._deliver(joined, kind)
                elif fin:
                    self._deliver(payload, _DATA_OPCODES[opcode])
                else:
                    self._fragment_opcode = _DATA_OPCODES[opcode]
                    self._fragments = [payload]
            elif opcode == OP_PING:
                with contextlib.suppress(Exception):
                    assert self._ws is not None
                    self._ws.send_pong(payload)
                    self._flush_protocol()
            elif opcode == OP_CLOSE:
                self._close_received(payload)
                return

    def _close_received(self, payload: bytes) -> None:
        """Answer the server's close frame (echoing its code) and end the connection."""
        ws = self._ws
        assert ws is not None
        try:
            close = Close.parse(payload)
        except (ProtocolError, UnicodeDecodeError) as exc:
            log.debug("websocket protocol error from %s: %s", self.peer, exc)
            self.abort()
            return
        if ws.state is OPEN:
            with contextlib.suppress(Exception):
                if payload:
                    ws.send_close(close.code, close.reason)
                else:
                    ws.send_close()
        self._flush_protocol()
        if self._transport is not None:
            self._transport.close()

    def send(self, data: bytes) -> None:
        if self._can_send():
            assert self._transport is not None
            self._transport.write(b"".join(client_frame(self._first, data, self._masks)))

    def send_many(self, messages: Iterable[bytes]) -> None:
        """Send each of a few `messages` as one message (frame), written together: one
        system call for all while the socket takes them. For a handful of frames (a relay
        message of two to four records); a long run of frames goes through `send()` one by
        one (measured: writing a 43 MB message this way cost the executor more CPU)."""
        if not self._can_send():
            return
        first, masks = self._first, self._masks
        parts: list[bytes] = []
        for data in messages:
            parts.extend(client_frame(first, data, masks))
        self._write_parts(parts)

    def _can_send(self) -> bool:
        transport = self._transport
        ws = self._ws
        return not (
            transport is None
            or ws is None
            or self._closed
            or ws.state is not OPEN
            or transport.is_closing()
        )

    def _write_parts(self, parts: Sequence[bytes]) -> None:
        """Write `parts` (frame headers and masked payloads) with one `writev` while the
        socket takes them, so nothing is joined; what the socket does not take, and
        everything once the transport buffers, goes through the transport, in order."""
        transport = self._transport
        assert transport is not None
        fd = self._fd
        if fd is None or transport.get_write_buffer_size() or len(parts) > _MAX_WRITEV_PARTS:
            transport.write(b"".join(parts))
            return
        try:
            sent = os.writev(fd, parts)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            sent = 0  # the transport's own write below meets the error and reports it
        for index, part in enumerate(parts):
            if sent < len(part):
                transport.write(b"".join((part[sent:], *parts[index + 1 :])))
                return
            sent -= len(part)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            reason = exc or ConnectionResetError("connection closed during the handshake")
            self.opened.set_exception(ConnectError(f"could not connect: {reason}"))
        if not self._lost.done():
            self._lost.set_result(None)
        super().connection_lost(exc)

    async def wait_closed(self) -> None:
        """Wait until the TCP connection has ended. Cancellation: safe."""
        await asyncio.shield(self._lost)


def _handshake_error(exc: Exception | None, response: object) -> ConnectError:
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        body = exc.response.body.decode("utf-8", "replace").strip() if exc.response.body else ""
        return HandshakeRejected(
            f"the server refused the WebSocket upgrade: HTTP {status}"
            + (f": {body}" if body else ""),
            status=status,
            body=body,
            retry_after_s=parse_retry_after(exc.response.headers.get("Retry-After")),
        )
    return ConnectError(f"WebSocket handshake failed: {exc or response}")


def _connect_failure(exc: BaseException) -> str:
    """Why a connection attempt failed, in words (no errno brackets)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ssl_module.SSLCertVerificationError):
        return f"the server's TLS certificate is not trusted ({exc.verify_message})"
    if isinstance(exc, ssl_module.SSLError):
        if exc.reason == "WRONG_VERSION_NUMBER":
            return "TLS failed: the server does not speak TLS here (a ws:// server?)"
        return f"TLS failed: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.errno is not None:
        return os.strerror(exc.errno)
    return str(exc)


async def connect_websocket(
    url: str,
    receiver: MessageReceiver,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = CONNECT_TIMEOUT_S,
    binary: bool = False,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    ping_interval_s: float = CLIENT_PING_INTERVAL_S,
    ssl: ssl_module.SSLContext | None = None,
) -> WebSocketClientConnection:
    """Dial `url` (ws:// or wss://) and complete the opening handshake; `receiver` then gets
    every message. No Origin header, no compression, no subprotocol.

    Raises `ConnectError` (refused, timed out, rejected upgrade: `.status`/`.body` carry an
    HTTP rejection). Cancellation: nothing is left open.
    """
    try:
        uri = parse_uri(url)
    except Exception as exc:
        raise ConnectError(f"invalid WebSocket URL {url!r}: {exc}") from None
    protocol = ClientProtocol(uri, max_size=max_message_bytes)
    request = protocol.connect()
    for name, value in (headers or {}).items():
        request.headers[name] = value
    protocol.send_request(request)
    loop = asyncio.get_running_loop()
    context = ssl
    if uri.secure and context is None:
        context = ssl_module.create_default_context()
    connection: WebSocketClientConnection | None = None
    try:
        async with asyncio.timeout(timeout):
            _, connection = await loop.create_connection(
                lambda: WebSocketClientConnection(
                    protocol,
                    receiver,
                    ping_interval_s=ping_interval_s,
                    binary=binary,
                    max_message_bytes=max_message_bytes,
                ),
                uri.host,
                uri.port,
                ssl=context if uri.secure else None,
                server_hostname=uri.host if uri.secure else None,
            )
            await connection.opened
    except ConnectError:
        raise
    except (OSError, TimeoutError, ssl_module.SSLError) as exc:
        if connection is not None:
            connection.abort()
        raise ConnectError(f"could not connect to {url}: {_connect_failure(exc)}") from None
    except BaseException:
        if connection is not None:
            connection.abort()
        raise
    return connection
