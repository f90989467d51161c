"""Status lines on stderr while a command's executor is lost and found again, and the local
terminal's raw mode (so that such a line, and every final message, is printed sanely)."""

from __future__ import annotations

import contextlib
import sys
import termios
import tty
from collections.abc import Iterator

import msgspec

from execserver.errors import ExecServerError

_raw = False


def say(message: str) -> None:
    """One `execserver: …` line on stderr, correct in raw mode too (CR LF, own line)."""
    text = f"execserver: {message}"
    if _raw:
        text = f"\r\n{text}\r\n"
    else:
        text += "\n"
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # stderr is gone: nothing to tell


@contextlib.contextmanager
def raw_terminal(enabled: bool, fd: int = 0) -> Iterator[None]:
    """The terminal on `fd` in raw mode for the block (if `enabled`), restored on any exit
    before anything else is printed."""
    global _raw
    if not enabled:
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    _raw = True
    try:
        yield
    finally:
        _raw = False
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


class ConnectionStatus:
    """A `ClientListener` that tells the user about a lost and a resumed connection."""

    def __init__(self, description: str, timeout_s: float, *, resumable: bool = True) -> None:
        self._description = description
        self._timeout_s = timeout_s
        self._resumable = resumable

    def on_notification(self, method: str, params: msgspec.Raw) -> None:
        pass

    def on_disconnected(self) -> None:
        if self._resumable and self._timeout_s > 0:
            say(
                f"lost the connection to {self._description}; reconnecting for up to "
                f"{self._timeout_s:g} s (--reconnect-timeout)"
            )
        else:
            say(f"lost the connection to {self._description}")

    def on_resumed(self) -> None:
        say(f"reconnected to {self._description}")

    def on_failed(self, error: ExecServerError) -> None:
        pass  # the command reports the outcome, after restoring the terminal


__all__ = ["ConnectionStatus", "raw_terminal", "say"]
