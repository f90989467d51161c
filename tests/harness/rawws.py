"""A byte-level WebSocket client for tests that need exact frames: sizes, fragments, opcodes,
pings that are not answered, and connections that are dropped rather than closed."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct

from websockets.utils import apply_mask

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


class RawWebSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(
        cls, url: str, extra_headers: bytes = b"", *, receive_buffer: int | None = None
    ) -> RawWebSocket:
        """`receive_buffer` fixes SO_RCVBUF (no autotuning) and the stream's own buffering, so a
        client that stops reading makes the server's socket back up after a few hundred KiB
        rather than tens of MiB."""
        host, port = url[len("ws://") :].rsplit(":", 1)
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (host.strip("[]"), int(port)))
        except BaseException:
            sock.close()
            raise
        reader, writer = await asyncio.open_connection(sock=sock, limit=receive_buffer or 2**26)
        key = base64.b64encode(os.urandom(16))
        writer.write(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "
            + key
            + b"\r\n"
            + extra_headers
            + b"\r\n"
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.decode(errors="replace"))
        return cls(reader, writer)

    async def send_frame(
        self, opcode: int, payload: bytes, *, fin: bool = True, declared_length: int | None = None
    ) -> None:
        length = len(payload) if declared_length is None else declared_length
        first = (0x80 if fin else 0) | opcode
        if length < 126:
            header = struct.pack("!BB", first, 0x80 | length)
        elif length < 65536:
            header = struct.pack("!BBH", first, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", first, 0x80 | 127, length)
        mask = os.urandom(4)
        self.writer.write(header + mask + apply_mask(payload, mask))
        await self.writer.drain()

    async def send_text(self, text: str | bytes) -> None:
        await self.send_frame(TEXT, text.encode() if isinstance(text, str) else text)

    async def recv_frame(self, timeout: float = 10.0) -> tuple[int, bytes] | None:
        """Next frame as (opcode, payload), or None when the server closed the TCP stream."""
        try:
            async with asyncio.timeout(timeout):
                head = await self.reader.readexactly(2)
                length = head[1] & 0x7F
                if length == 126:
                    (length,) = struct.unpack("!H", await self.reader.readexactly(2))
                elif length == 127:
                    (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
                payload = await self.reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        return head[0] & 0x0F, payload

    async def recv_text(self, timeout: float = 10.0) -> str | None:
        """Next text frame, skipping pings (which this client never answers)."""
        while True:
            frame = await self.recv_frame(timeout)
            if frame is None:
                return None
            if frame[0] == TEXT:
                return frame[1].decode()

    async def dropped(self, timeout: float = 10.0) -> bool:
        """True if the server ends the TCP stream (no close frame) within `timeout`."""
        while True:
            frame = await self.recv_frame(timeout)
            if frame is None:
                return True
            if frame[0] == CLOSE:
                return False

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()

    async def __aenter__(self) -> RawWebSocket:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
