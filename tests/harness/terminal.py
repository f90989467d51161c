"""A real terminal for CLI tests: run a command on a fresh PTY as its controlling terminal.

    async with Terminal.spawn(["execserver", "run", "-t", url, "--", "sh"]) as term:
        await term.expect(b"$ ")
        term.send(b"exit 3\\r")
        assert await term.wait() == 3

The child gets the PTY as stdin/stdout/stderr and controlling terminal (so Ctrl-C typed into
it becomes SIGINT for the foreground process group, as in a user's terminal). Everything the
child prints is collected in `output`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import signal
import struct
import termios
from collections.abc import Mapping, Sequence
from fcntl import ioctl
from types import TracebackType

from tests.conftest import TIME


class Terminal:
    def __init__(self, pid: int, master: int) -> None:
        self.pid = pid
        self.master = master
        self.output = bytearray()
        self._changed = asyncio.Event()
        self._eof = False
        self._status: int | None = None
        os.set_blocking(master, False)
        asyncio.get_running_loop().add_reader(master, self._on_readable)

    @classmethod
    def spawn(
        cls,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        size: tuple[int, int] = (24, 80),
    ) -> Terminal:
        pid, master = pty.fork()
        if pid == 0:  # the child: exec at once (no Python cleanup in the forked interpreter)
            try:
                os.execvpe(argv[0], list(argv), dict(env if env is not None else os.environ))
            finally:
                os._exit(127)
        terminal = cls(pid, master)
        terminal.resize(*size)
        return terminal

    def resize(self, rows: int, cols: int) -> None:
        """Set the terminal's size (the kernel sends SIGWINCH to its foreground group)."""
        ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def _on_readable(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: the child side is closed
            data = b""
        if data:
            self.output += data
        else:
            self._eof = True
            asyncio.get_running_loop().remove_reader(self.master)
        self._changed.set()

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    async def expect(self, needle: bytes, timeout: float = 20.0) -> None:
        """Wait until `needle` appears in the output."""
        async with asyncio.timeout(timeout * TIME):
            while needle not in self.output:
                if self._eof:
                    raise AssertionError(f"{needle!r} never came; output: {bytes(self.output)!r}")
                self._changed.clear()
                await self._changed.wait()

    async def wait(self, timeout: float = 30.0) -> int:
        """The child's exit code (128 + N if killed by signal N), after its output ended."""
        async with asyncio.timeout(timeout * TIME):
            while not self._eof:
                self._changed.clear()
                await self._changed.wait()
            _, status = await asyncio.to_thread(os.waitpid, self.pid, 0)
            self._status = os.waitstatus_to_exitcode(status)
        assert self._status is not None
        return self._status if self._status >= 0 else 128 - self._status

    async def __aenter__(self) -> Terminal:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                await asyncio.to_thread(os.waitpid, self.pid, 0)
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(self.master)
        os.close(self.master)
