"""A minimal asyncio WebSocket JSON-RPC client for benchmarks (used by bench/compare.py).

One implementation for every server under test, so the client's cost is the same for all of them.
It is deliberately small: an `asyncio.Protocol` that does the HTTP upgrade, sends masked text
frames (`websockets.speedups.apply_mask`, C), parses unmasked server frames from one buffer, and
decodes JSON with msgspec. Responses are matched to requests by id without decoding the whole
message when the caller only wants the raw frame (`raw=True`), which keeps large `fs/readFile`
results cheap. Process notifications (`process/output`, `process/exited`, `process/closed`) go to
a per-process callback, decoded into a small typed struct.

`quickack=True` sets TCP_NODELAY at connect and TCP_QUICKACK after every receive (the option is
not sticky), so the client acknowledges every segment at once instead of after the delayed-ACK
timer. That matters for servers that keep Nagle's algorithm on: a second small message waits for
the ACK of the first. Without it the client uses asyncio's defaults (TCP_NODELAY on, delayed ACKs).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import msgspec

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - pure Python fallback
    from websockets.utils import apply_mask

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# Client frames are split at this size: servers drop frames over 16 MiB (messages up to 64 MiB).
FRAGMENT_SIZE = 4 * 1024 * 1024
_OP_CONT, _OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class RpcError(Exception):
    """A JSON-RPC error response."""

    def __init__(self, method: str, error: dict[str, Any]) -> None:
        super().__init__(f"{method}: {error.get('code')} {error.get('message')}")
        self.code = error.get("code")


class ConnectionLost(Exception):
    """The server closed the connection (or it failed) while requests were pending."""


class ProcessParams(msgspec.Struct):
    processId: str = ""
    seq: int = 0
    stream: str = ""
    chunk: str = ""
    exitCode: int | None = None


class Notification(msgspec.Struct):
    method: str
    params: ProcessParams | None = None


_decode_any = msgspec.json.Decoder().decode
_decode_notification = msgspec.json.Decoder(Notification).decode
_encode = msgspec.json.Encoder().encode

ProcessCallback = Callable[[str, ProcessParams], None]


def b64_decoded_len(chunk: str) -> int:
    """Size of the data a padded base64 string encodes, without decoding it."""
    n = len(chunk)
    if n == 0:
        return 0
    return n // 4 * 3 - (2 if chunk.endswith("==") else 1 if chunk.endswith("=") else 0)


def retrieve(future: asyncio.Future[Any]) -> None:
    """Done callback marking a future's exception as retrieved: callers that await it still get
    the exception, but futures nobody awaits any more (after an earlier failure) stay quiet."""
    if not future.cancelled():
        future.exception()


def frame_header(buf: bytes | bytearray, pos: int, size: int) -> tuple[int, int, int] | None:
    """The WebSocket frame header at `buf[pos:size]`: (first byte, header length with any
    masking key, payload length), or None while the header is incomplete."""
    if size - pos < 2:
        return None
    length = buf[pos + 1] & 0x7F
    header = 2
    if length == 126:
        if size - pos < 4:
            return None
        length = (buf[pos + 2] << 8) | buf[pos + 3]
        header = 4
    elif length == 127:
        if size - pos < 10:
            return None
        length = struct.unpack_from("!Q", buf, pos + 2)[0]
        header = 10
    if buf[pos + 1] & 0x80:
        header += 4  # servers must not mask, but cope with it
    return buf[pos], header, length


class RpcPeer:
    """The JSON-RPC half of a bench connection; subclasses carry the messages (`send_text`,
    `close`) and feed what arrives to `_message` and the end to `_lost`."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._pending: dict[int, tuple[asyncio.Future[Any], bool, str]] = {}
        self._next_id = 0
        self.process_callbacks: dict[str, ProcessCallback] = {}
        self.session_id: str | None = None

    def send_text(self, message: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    async def initialize(self, timeout: float) -> None:
        """`initialize` + `initialized`, as every exec-server client starts."""
        result = await self.call("initialize", {"clientName": "bench"}, timeout)
        self.session_id = result.get("sessionId")
        self.notify("initialized", {})

    # -- receiving --------------------------------------------------------------------------

    def _lost(self, error: Exception) -> None:
        for future, _, _ in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()
        for callback in list(self.process_callbacks.values()):
            callback("connection/lost", ProcessParams())
        if not self.closed.done():
            self.closed.set_result(None)

    def _message(self, message: bytes) -> None:
        if message.startswith(b'{"id":'):
            comma = message.find(b",", 6)
            try:
                request_id = int(message[6:comma])
            except ValueError:
                request_id = -1
            entry = self._pending.pop(request_id, None)
            if entry is None:
                return
            future, raw, method = entry
            if future.done():
                return
            if raw:
                future.set_result(message)
            else:
                future.set_result(_decode_any(message).get("result"))
        elif message.startswith(b'{"method":'):
            note = _decode_notification(message)
            params = note.params
            if params is not None:
                callback = self.process_callbacks.get(params.processId)
                if callback is not None:
                    callback(note.method, params)
        else:
            decoded = _decode_any(message)
            if isinstance(decoded, dict) and "error" in decoded:
                entry = self._pending.pop(decoded.get("id"), None)  # type: ignore[arg-type]
                if entry is not None and not entry[0].done():
                    entry[0].set_exception(RpcError(entry[2], decoded["error"]))
                elif entry is None and decoded.get("id") == -1:
                    # A parse error the server could not attribute: fail everything pending.
                    for future, _, method in self._pending.values():
                        if not future.done():
                            future.set_exception(RpcError(method, decoded["error"]))
                    self._pending.clear()

    # -- sending ----------------------------------------------------------------------------

    def notify(self, method: str, params: dict[str, Any]) -> None:
        self.send_text(_encode({"method": method, "params": params}))

    def request(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        raw: bool = False,
        params_json: bytes | None = None,
    ) -> asyncio.Future[Any]:
        """Send a request; the future gets the decoded `result` (or, with `raw`, the whole
        response frame as bytes) or an `RpcError`. `params_json` sends pre-encoded params."""
        self._next_id += 1
        request_id = self._next_id
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.add_done_callback(retrieve)
        self._pending[request_id] = (future, raw, method)
        if params_json is None:
            message = _encode({"id": request_id, "method": method, "params": params})
        else:
            message = b'{"id":%d,"method":"%s","params":%s}' % (
                request_id,
                method.encode(),
                params_json,
            )
        try:
            self.send_text(message)
        except BaseException:
            self._pending.pop(request_id, None)
            raise
        return future

    async def call(
        self, method: str, params: dict[str, Any] | None = None, timeout: float = 30.0
    ) -> Any:
        return await asyncio.wait_for(self.request(method, params), timeout)

    async def call_raw(
        self, method: str, params: dict[str, Any] | None = None, timeout: float = 30.0
    ) -> bytes:
        result: bytes = await asyncio.wait_for(self.request(method, params, raw=True), timeout)
        return result


class WsRpc(RpcPeer, asyncio.Protocol):
    """One WebSocket connection speaking the exec-server JSON-RPC dialect."""

    def __init__(self, quickack: bool = False) -> None:
        super().__init__()
        self.quickack = quickack
        self.transport: asyncio.Transport | None = None
        self._sock: Any = None
        self._buf = bytearray()
        self._upgraded = False
        self._key = base64.b64encode(os.urandom(16))
        self._handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._fragments: list[bytes] = []
        self._fragment_op = 0

    # -- connection -------------------------------------------------------------------------

    @classmethod
    async def open(
        cls, url: str, *, quickack: bool = False, initialize: bool = True, timeout: float = 10.0
    ) -> WsRpc:
        """Connect, upgrade and (by default) `initialize` + `initialized`."""
        parts = urlsplit(url)
        if parts.scheme != "ws" or parts.hostname is None or parts.port is None:
            raise ValueError(f"expected ws://HOST:PORT, got {url!r}")
        loop = asyncio.get_running_loop()
        _, protocol = await asyncio.wait_for(
            loop.create_connection(lambda: cls(quickack), parts.hostname, parts.port), timeout
        )
        assert protocol.transport is not None
        host = f"{parts.hostname}:{parts.port}".encode()
        protocol.transport.write(
            b"GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (host, protocol._key)
        )
        try:
            await asyncio.wait_for(asyncio.shield(protocol._handshake), timeout)
            if initialize:
                await protocol.initialize(timeout)
        except BaseException:
            protocol.close()
            raise
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._sock = transport.get_extra_info("socket")
        if self.quickack:
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        error = ConnectionLost(f"connection lost: {exc}" if exc else "connection closed by peer")
        if not self._handshake.done():
            self._handshake.set_exception(error)
        self._lost(error)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            if self._upgraded:
                self._send_frame(_OP_CLOSE, struct.pack("!H", 1000))
            self.transport.close()

    # -- receiving --------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if self.quickack:
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        if not self._upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end])
            del buf[: end + 4]
            self._check_upgrade(head)
            if not self._upgraded:
                return
        pos = 0
        size = len(buf)
        while (parsed := frame_header(buf, pos, size)) is not None:
            b0, header, length = parsed
            end = pos + header + length
            if end > size:
                break
            payload = bytes(buf[pos + header : end])
            if buf[pos + 1] & 0x80:
                payload = apply_mask(payload, bytes(buf[pos + header - 4 : pos + header]))
            pos = end
            self._frame(b0 & 0x80 != 0, b0 & 0x0F, payload)
        if pos:
            del buf[:pos]

    def _check_upgrade(self, head: bytes) -> None:
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            error = ConnectionLost(f"upgrade refused: {head.decode(errors='replace')[:300]}")
            self._handshake.set_exception(error)
            assert self.transport is not None
            self.transport.close()
            return
        expected = base64.b64encode(hashlib.sha1(self._key + _GUID).digest())
        if expected.lower() not in head.lower():
            self._handshake.set_exception(ConnectionLost("bad Sec-WebSocket-Accept"))
            assert self.transport is not None
            self.transport.close()
            return
        self._upgraded = True
        self._handshake.set_result(None)

    def _frame(self, fin: bool, opcode: int, payload: bytes) -> None:
        if opcode >= 0x8:
            if opcode == _OP_PING:
                self._send_frame(_OP_PONG, payload)
            elif opcode == _OP_CLOSE:
                assert self.transport is not None
                self.transport.close()
            return
        if opcode == _OP_CONT:
            self._fragments.append(payload)
            if not fin:
                return
            payload = b"".join(self._fragments)
            self._fragments = []
        elif not fin:
            self._fragments = [payload]
            self._fragment_op = opcode
            return
        self._message(payload)

    # -- sending ----------------------------------------------------------------------------

    def _send_frame(self, opcode: int, payload: bytes | memoryview, fin: bool = True) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionLost("connection is closed")
        n = len(payload)
        first = (0x80 if fin else 0) | opcode
        if n < 126:
            header = struct.pack("!BB", first, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", first, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", first, 0x80 | 127, n)
        mask = os.urandom(4)
        masked = apply_mask(payload, mask)
        if n < 65536:
            transport.write(header + mask + masked)
        else:
            transport.writelines((header + mask, masked))

    def send_text(self, message: bytes) -> None:
        if len(message) <= FRAGMENT_SIZE:
            self._send_frame(_OP_TEXT, message)
            return
        view = memoryview(message)
        for start in range(0, len(message), FRAGMENT_SIZE):
            piece = view[start : start + FRAGMENT_SIZE]
            last = start + FRAGMENT_SIZE >= len(message)
            self._send_frame(_OP_TEXT if start == 0 else _OP_CONT, piece, fin=last)


class ChannelRpc(RpcPeer):
    """A bench connection over a message channel (anything with `send(bytes)` and `close()`
    that feeds its receiver whole messages): the receiver is this object."""

    def __init__(self) -> None:
        super().__init__()
        self.channel: Any = None

    @classmethod
    async def open(
        cls,
        connector: Callable[[ChannelRpc], Awaitable[Any]],
        *,
        initialize: bool = True,
        timeout: float = 10.0,
    ) -> ChannelRpc:
        """`connector(receiver)` opens the channel; then (by default) `initialize`."""
        peer = cls()
        peer.channel = await asyncio.wait_for(connector(peer), timeout)
        try:
            if initialize:
                await peer.initialize(timeout)
        except BaseException:
            peer.close()
            raise
        return peer

    def message_received(self, data: bytes) -> None:
        self._message(data)

    def connection_lost(self) -> None:
        self._lost(ConnectionLost("connection closed"))

    def send_text(self, message: bytes) -> None:
        if self.closed.done():
            raise ConnectionLost("connection is closed")
        self.channel.send(message)

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()


async def connect(url: str, *, quickack: bool = False, timeout: float = 10.0) -> WsRpc:
    return await WsRpc.open(url, quickack=quickack, timeout=timeout)
