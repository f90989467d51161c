"""Newline-delimited JSON over a pair of pipes: the server's own stdin/stdout
(`StdioConnection`), or a spawned child's (`spawn_stdio()`, the client side).

One message per line; a trailing `\\r` is dropped, blank lines are skipped and partial lines
are buffered. EOF on the input ends the connection. Nothing but messages is ever written.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import cast

from execserver.compat.rust import rust_trim
from execserver.errors import ConnectError
from execserver.transport.base import FlowControl, MessageReceiver

MAX_LINE_BYTES = 64 * 1024 * 1024
READ_CHUNK_BYTES = 256 * 1024
CHILD_TERM_GRACE_S = 5.0
"""After `close()`, how long a spawned peer has between SIGTERM and SIGKILL."""


def _is_blank(line: bytes) -> bool:
    rest = line.strip()
    if not rest:
        return True
    if rest[0] < 0x80:  # a message starts with ASCII (`{`): the common case ends here
        return False
    try:
        return not rust_trim(line.decode("utf-8"))
    except UnicodeDecodeError:
        return False


class LineSplitter:
    """Turns a byte stream into NDJSON messages."""

    def __init__(self, deliver: Callable[[bytes], None]) -> None:
        self._deliver = deliver
        self._buffer = bytearray()

    def feed(self, data: bytes) -> bool:
        """Feed bytes; returns False when a line exceeded `MAX_LINE_BYTES`."""
        self._buffer += data
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end < 0:
                break
            line = bytes(self._buffer[start:end])
            start = end + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if not _is_blank(line):
                self._deliver(line)
        del self._buffer[:start]
        return len(self._buffer) <= MAX_LINE_BYTES


class _WriteSide(FlowControl, asyncio.Protocol):
    def __init__(self) -> None:
        FlowControl.__init__(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.resume_writing()


class _ReadSide(asyncio.Protocol):
    def __init__(self, connection: StdioConnection) -> None:
        self._connection = connection

    def data_received(self, data: bytes) -> None:
        self._connection.feed(data)

    def eof_received(self) -> bool:
        self._connection.input_ended()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._connection.input_ended()


class StdioConnection:
    """A MessageChannel over an input fd and an output fd."""

    label = "JSON-RPC message from exec-server stdio"

    def __init__(self) -> None:
        self._receiver: MessageReceiver | None = None
        self._splitter = LineSplitter(self._on_line)
        self._writer: asyncio.WriteTransport | None = None
        self._write_side = _WriteSide()
        self._read_transport: asyncio.ReadTransport | None = None
        self._ended = False
        self.closed = asyncio.get_running_loop().create_future()

    async def open(self, receiver: MessageReceiver, input_fd: int, output_fd: int) -> None:
        """Start reading `input_fd` and writing `output_fd` (both kept open by the caller)."""
        loop = asyncio.get_running_loop()
        self._receiver = receiver
        out_file = os.fdopen(os.dup(output_fd), "wb", buffering=0)
        self._writer, _ = await loop.connect_write_pipe(lambda: self._write_side, out_file)
        in_file = os.fdopen(os.dup(input_fd), "rb", buffering=0)
        try:
            self._read_transport, _ = await loop.connect_read_pipe(lambda: _ReadSide(self), in_file)
        except ValueError:  # a regular file: epoll cannot watch it, read it from a thread
            threading.Thread(target=self._read_file, args=(in_file, loop), daemon=True).start()

    def _read_file(self, file: object, loop: asyncio.AbstractEventLoop) -> None:
        read = file.read  # type: ignore[attr-defined]
        with contextlib.suppress(RuntimeError):
            while chunk := read(READ_CHUNK_BYTES):
                loop.call_soon_threadsafe(self.feed, chunk)
            loop.call_soon_threadsafe(self.input_ended)

    def feed(self, data: bytes) -> None:
        if not self._ended and not self._splitter.feed(data):
            self.input_ended()

    def _on_line(self, line: bytes) -> None:
        if self._receiver is not None and not self._ended:
            self._receiver.message_received(line)

    def input_ended(self) -> None:
        if self._ended:
            return
        self._ended = True
        receiver, self._receiver = self._receiver, None
        if receiver is not None:
            receiver.connection_lost()
        if not self.closed.done():
            self.closed.set_result(None)

    # -- MessageChannel ------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.writelines((data, b"\n"))

    def is_congested(self) -> bool:
        return self._write_side.is_congested()

    def call_when_writable(self, callback: Callable[[], None]) -> None:
        self._write_side.call_when_writable(callback)

    def abort(self) -> None:
        if self._read_transport is not None:
            self._read_transport.close()
        self.input_ended()

    def pause_reading(self) -> None:
        if self._read_transport is not None:
            self._read_transport.pause_reading()

    def resume_reading(self) -> None:
        if self._read_transport is not None:
            self._read_transport.resume_reading()

    def close(self) -> None:
        """Flush and close the output, stop reading."""
        if self._read_transport is not None:
            self._read_transport.close()
        if self._writer is not None:
            self._writer.close()
        self.input_ended()


class StdioChildConnection(FlowControl, asyncio.SubprocessProtocol):
    """The client side of stdio: a spawned `program args…` speaking NDJSON on its stdin/stdout.

    `close()` ends its stdin and sends SIGTERM to its process group, SIGKILL after
    `CHILD_TERM_GRACE_S`; the receiver hears `connection_lost()` once the child's output ends.
    asyncio reaps the child.
    """

    def __init__(self, receiver: MessageReceiver, label: str) -> None:
        FlowControl.__init__(self)
        self.label = label
        self._receiver: MessageReceiver | None = receiver
        self._splitter = LineSplitter(self._on_line)
        self._transport: asyncio.SubprocessTransport | None = None
        self._stdin: asyncio.WriteTransport | None = None
        self._kill_timer: asyncio.TimerHandle | None = None
        self._ended = False
        self._exited: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pid = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Casts, not isinstance checks: uvloop's transports do not derive from asyncio's classes.
        process = self._transport = cast(asyncio.SubprocessTransport, transport)
        self.pid = process.get_pid()
        self._stdin = cast(asyncio.WriteTransport, process.get_pipe_transport(0))

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1 and not self._ended and not self._splitter.feed(data):
            self.abort()

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            self._end()

    def process_exited(self) -> None:
        if self._kill_timer is not None:
            self._kill_timer.cancel()
        if not self._exited.done():
            self._exited.set_result(None)
        self._end()
        if self._transport is not None:
            self._transport.close()  # the pipes; asyncio has reaped the child

    def _on_line(self, line: bytes) -> None:
        if self._receiver is not None and not self._ended:
            self._receiver.message_received(line)

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        self.resume_writing()
        receiver, self._receiver = self._receiver, None
        if receiver is not None:
            receiver.connection_lost()

    # -- MessageChannel ------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        if self._stdin is not None and not self._stdin.is_closing() and not self._ended:
            self._stdin.writelines((data, b"\n"))

    def _stdout(self) -> asyncio.ReadTransport | None:
        stdout = None if self._transport is None else self._transport.get_pipe_transport(1)
        return cast(asyncio.ReadTransport | None, stdout)

    def pause_reading(self) -> None:
        if (stdout := self._stdout()) is not None:
            stdout.pause_reading()

    def resume_reading(self) -> None:
        if (stdout := self._stdout()) is not None:
            stdout.resume_reading()

    def close(self) -> None:
        if self._stdin is not None:
            self._stdin.close()
        self._signal(signal.SIGTERM)
        if self._kill_timer is None and self._transport is not None:
            loop = asyncio.get_running_loop()
            self._kill_timer = loop.call_later(CHILD_TERM_GRACE_S, self._signal, signal.SIGKILL)

    def abort(self) -> None:
        self._signal(signal.SIGKILL)
        self._end()

    def _signal(self, signum: int) -> None:
        if self._transport is None or self._exited.done():
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    async def wait_closed(self) -> None:
        """Wait until the child has exited (after `close()` or on its own).

        Cancellation: safe; the child is unaffected.
        """
        if self._transport is not None:
            await asyncio.shield(self._exited)


async def spawn_stdio(
    program: str,
    args: Sequence[str],
    receiver: MessageReceiver,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> StdioChildConnection:
    """Start `program args…` in a new session and speak NDJSON with it; its stderr is inherited.

    Raises `ConnectError` if it cannot be started. Cancellation: the child is killed.
    """
    loop = asyncio.get_running_loop()
    label = " ".join([program, *args])
    try:
        _, connection = await loop.subprocess_exec(
            lambda: StdioChildConnection(receiver, label),
            program,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,
            env=None if env is None else {**os.environ, **env},
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        raise ConnectError(f"could not start {program}: {exc}") from exc
    return connection
