"""A transfer's progress line on stderr: percent, bytes in binary units, rate and ETA."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
REDRAW_INTERVAL_S = 0.25


def human_bytes(size: float) -> str:
    """`1536` -> `1.5 KiB`; bytes below 1 KiB as integers (`512 B`)."""
    if size < 1024:
        return f"{int(size)} B"
    for unit in UNITS[1:]:
        size /= 1024
        if size < 1024 or unit == UNITS[-1]:
            return f"{size:.1f} {unit}"
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    """`75` -> `1:15`, `3725` -> `1:02:05`."""
    whole = int(seconds + 0.5)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


class Progress:
    """Redrawn in place (`\\r`) at most every `REDRAW_INTERVAL_S`; the last call ends the line."""

    def __init__(
        self,
        total: int,
        *,
        out: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self._out = out
        self._clock = clock
        self.started = clock()
        self._drawn = float("-inf")

    def line(self, done: int, now: float, *, final: bool = False) -> str:
        elapsed = max(now - self.started, 1e-6)
        rate = done / elapsed
        percent = 100.0 * done / self.total if self.total else 100.0
        head = f"{percent:5.1f}% {human_bytes(done)} of {human_bytes(self.total)}"
        if final:
            return f"{head} in {human_duration(elapsed)} ({human_bytes(rate)}/s)"
        eta = human_duration((self.total - done) / rate) if rate > 0 else "?"
        return f"{head} {human_bytes(rate)}/s ETA {eta}"

    def update(self, done: int, *, final: bool = False) -> None:
        now = self._clock()
        if not final and now - self._drawn < REDRAW_INTERVAL_S:
            return
        self._drawn = now
        out = self._out or sys.stderr
        out.write(f"\r{self.line(done, now, final=final):<60}" + ("\n" if final else ""))
        out.flush()


__all__ = ["Progress", "human_bytes", "human_duration"]
