"""Whether a sandboxed process's failure looks like a sandbox denial (PROTOCOL.md §9.5).

The reference's heuristic, applied once at exit to the retained output: a keyword in stdout,
stderr or both together means denied; otherwise exit codes 2, 126 and 127 mean "not denied",
and 159 (SIGSYS) means denied under the seccomp-style sandbox.
"""

from __future__ import annotations

from collections.abc import Iterable

# How long a sandboxed process's pipes may stay open after its exit before classifying.
TRAILING_OUTPUT_GRACE_S = 0.020

KEYWORDS = (
    "operation not permitted",
    "permission denied",
    "read-only file system",
    "seccomp",
    "sandbox",
    "landlock",
    "failed to write file",
)
NOT_DENIED_EXIT_CODES = frozenset({2, 126, 127})
SIGSYS_EXIT_CODE = 128 + 31


def looks_denied(sandbox_type: str, exit_code: int, streams: Iterable[tuple[str, bytes]]) -> bool:
    """`streams` is the retained output as (stream name, chunk) pairs in order."""
    if sandbox_type == "none" or exit_code == 0:
        return False
    per_stream: dict[str, list[bytes]] = {}
    combined: list[bytes] = []
    for stream, data in streams:
        per_stream.setdefault(stream, []).append(data)
        combined.append(data)
    texts = [b"".join(parts) for parts in per_stream.values()] + [b"".join(combined)]
    for text in texts:
        lowered = text.decode("utf-8", "replace").lower()
        if any(keyword in lowered for keyword in KEYWORDS):
            return True
    if exit_code in NOT_DENIED_EXIT_CODES:
        return False
    return sandbox_type == "linuxSeccomp" and exit_code == SIGSYS_EXIT_CODE
