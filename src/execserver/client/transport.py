"""Client transports: a WebSocket URL or a stdio command, both moving whole messages.

Transport library exceptions are translated here and nowhere else: connecting raises
`ConnectError`, a broken connection ends `receive()` with `Disconnected`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from typing import Protocol

import websockets
from websockets.asyncio.client import ClientConnection

from execserver.errors import ConnectError, Disconnected

DEFAULT_CONNECT_TIMEOUT_S = 10.0
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class ClientTransport(Protocol):
    async def send(self, data: bytes) -> None:
        """Send one message. Raises `Disconnected` if the connection is gone."""
        ...

    async def receive(self) -> bytes:
        """The next message. Raises `Disconnected` when the connection ends."""
        ...

    async def aclose(self) -> None: ...


class WebSocketTransport:
    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        bearer_token: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
    ) -> WebSocketTransport:
        """Open the WebSocket (no Origin header, like the reference client); `bearer_token`
        becomes `Authorization: Bearer <token>`. Raises `ConnectError`."""
        extra = dict(headers or {})
        if bearer_token is not None:
            extra["Authorization"] = f"Bearer {bearer_token}"
        try:
            async with asyncio.timeout(timeout):
                ws = await websockets.connect(
                    url,
                    additional_headers=extra or None,
                    max_size=MAX_MESSAGE_BYTES,
                    compression=None,
                    ping_interval=20.0,
                    ping_timeout=20.0,
                )
        except (OSError, TimeoutError, EOFError, websockets.WebSocketException) as exc:
            raise ConnectError(f"could not connect to {url}: {exc}") from exc
        return cls(ws)

    async def send(self, data: bytes) -> None:
        try:
            await self._ws.send(data.decode("utf-8"))
        except websockets.ConnectionClosed as exc:
            raise Disconnected(f"connection closed: {exc}") from None

    async def receive(self) -> bytes:
        try:
            message = await self._ws.recv(decode=False)
        except websockets.ConnectionClosed as exc:
            raise Disconnected(f"connection closed: {exc}") from None
        return bytes(message) if not isinstance(message, bytes) else message

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self._ws.close()


class StdioTransport:
    """Speaks NDJSON with a spawned `program args…`; closing kills its process group."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    @classmethod
    async def spawn(
        cls,
        program: str,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> StdioTransport:
        try:
            process = await asyncio.create_subprocess_exec(
                program,
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=None if env is None else {**os.environ, **env},
                cwd=cwd,
                start_new_session=True,
                limit=MAX_MESSAGE_BYTES + 1,
            )
        except OSError as exc:
            raise ConnectError(f"could not start {program}: {exc}") from exc
        return cls(process)

    async def send(self, data: bytes) -> None:
        stdin = self._process.stdin
        assert stdin is not None
        try:
            stdin.write(data + b"\n")
            await stdin.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise Disconnected(f"stdio peer gone: {exc}") from None

    async def receive(self) -> bytes:
        stdout = self._process.stdout
        assert stdout is not None
        while True:
            try:
                line = await stdout.readline()
            except (ValueError, ConnectionError) as exc:
                raise Disconnected(f"stdio peer gone: {exc}") from None
            if not line:
                raise Disconnected("stdio peer closed its output")
            line = line.rstrip(b"\r\n")
            if line.strip():
                return line

    async def aclose(self) -> None:
        process = self._process
        if process.stdin is not None:
            process.stdin.close()
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(5):
                    await process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
