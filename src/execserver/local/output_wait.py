"""`process/wait`: until new output matches a pattern, output goes idle, the process exits, or
a timeout, whichever comes first.

Patterns are RE2 (google-re2): linear time, so a client's pattern cannot stall the event loop
the way a backtracking `re` pattern can. They match the process's output streams together, in
seq order, as bytes (UTF-8 pattern text), over a sliding window of the newest 64 KiB: a match
must fit in that window. Nothing is consumed: the answer says where the match ended (`seq`) and
reads go on as before.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections.abc import Callable

import re2  # type: ignore[import-untyped]

from execserver.errors import InvalidParams
from execserver.local.output_log import OutputLog
from execserver.protocol.process import ProcessWaitResponse, WaitReason

MATCH_WINDOW_BYTES = 64 * 1024
MAX_PATTERN_CHARS = 4096
MAX_MATCH_TEXT = 1024
MAX_WAIT_S = 24 * 3600.0


def compile_pattern(pattern: str) -> re2._Regexp:
    if len(pattern) > MAX_PATTERN_CHARS:
        raise InvalidParams(f"process/wait pattern is longer than {MAX_PATTERN_CHARS} characters")
    try:
        return re2.compile(pattern.encode())
    except re2.error as exc:
        raise InvalidParams(f"process/wait pattern is not a valid RE2 expression: {exc}") from None


class _Window:
    """The newest output bytes and which chunk (seq) ends where."""

    def __init__(self) -> None:
        self.data = bytearray()
        self._ends: list[int] = []
        self._seqs: list[int] = []

    def add(self, seq: int, chunk: bytes) -> None:
        self.data += chunk
        self._ends.append(len(self.data))
        self._seqs.append(seq)
        excess = len(self.data) - MATCH_WINDOW_BYTES
        if excess > 0:
            del self.data[:excess]
            self._ends = [end - excess for end in self._ends]
            keep = bisect_left(self._ends, 1)
            del self._ends[:keep], self._seqs[:keep]

    def seq_at(self, offset: int) -> int:
        """The seq of the chunk holding byte `offset - 1` (where a match ending at `offset`
        ended)."""
        return self._seqs[min(bisect_left(self._ends, offset), len(self._seqs) - 1)]


async def wait_on_output(
    log: OutputLog,
    *,
    pattern: re2._Regexp | None,
    idle_s: float | None,
    timeout_s: float,
    after_seq: int | None,
    last_output: Callable[[], float],
) -> ProcessWaitResponse:
    """See the module docstring. Cancellation: safe; nothing is consumed."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + min(timeout_s, MAX_WAIT_S)
    seen = log.next_seq - 1 if after_seq is None else after_seq
    window = _Window()

    def answer(
        reason: WaitReason, seq: int | None = None, text: str | None = None
    ) -> ProcessWaitResponse:
        return ProcessWaitResponse(
            reason=reason,
            seq=seq,
            match=text,
            next_seq=log.next_seq,
            exited=log.exited,
            exit_code=log.exit_code,
        )

    while True:
        fresh = False
        for chunk in log.read(seen).chunks:
            seen = chunk.seq
            if pattern is not None:
                window.add(chunk.seq, chunk.chunk)
                fresh = True
        if fresh and pattern is not None:
            found = pattern.search(bytes(window.data))
            if found is not None:
                text = found.group(0)[:MAX_MATCH_TEXT].decode("utf-8", "replace")
                return answer("match", window.seq_at(found.end()), text)
        if log.exited:
            return answer("exited")
        now = loop.time()
        if now >= deadline:
            return answer("timeout")
        wake = deadline
        if idle_s is not None:
            idle_due = max(started, last_output()) + idle_s
            if now >= idle_due:
                return answer("idle")
            wake = min(wake, idle_due)
        await log.wait_changed(wake - now)
