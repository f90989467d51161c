"""Whether a sandboxed process's failure looks like a sandbox denial (PROTOCOL.md §9.5).

The reference's heuristic, applied once at exit to the retained output: a keyword in stdout,
stderr or both together means denied; otherwise exit codes 2, 126 and 127 mean "not denied",
and 159 (SIGSYS) means denied under the seccomp-style sandbox. That answer is the wire's
`sandboxDenied` flag, kept as the reference computes it.

`termination.reason` (our extension) asks for more: `sandbox_denied` counts only the error
texts this executor's sandbox itself produces -- EROFS ("read-only file system": a write
outside the writable roots, which bubblewrap mounts read-only), EACCES ("permission denied": a
path with access `none`, masked by an unreadable file, or a denied exec) and EPERM ("operation
not permitted": a syscall the seccomp filter refuses, e.g. a non-Unix socket) -- or SIGSYS. The
bare words the reference also counts ("sandbox", "seccomp", "landlock", "failed to write
file") say nothing about this process having been denied: a test suite that prints "sandbox
tests failed" and exits 1 simply exited. Still a heuristic: an EACCES the host's own
permissions caused inside a sandbox (a non-root server reading /etc/shadow) reads the same.
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
ERRNO_TEXTS = ("read-only file system", "permission denied", "operation not permitted")
NOT_DENIED_EXIT_CODES = frozenset({2, 126, 127})
SIGSYS_EXIT_CODE = 128 + 31


def looks_denied(sandbox_type: str, exit_code: int, streams: Iterable[tuple[str, bytes]]) -> bool:
    """The reference's answer (the wire's `sandboxDenied`). `streams` is the retained output as
    (stream name, chunk) pairs in order."""
    return _denied(sandbox_type, exit_code, streams, KEYWORDS)


def sandbox_denied(sandbox_type: str, exit_code: int, streams: Iterable[tuple[str, bytes]]) -> bool:
    """Whether `termination.reason` is `sandboxDenied`: the sandbox's own error texts only."""
    return _denied(sandbox_type, exit_code, streams, ERRNO_TEXTS)


def _denied(
    sandbox_type: str,
    exit_code: int,
    streams: Iterable[tuple[str, bytes]],
    keywords: tuple[str, ...],
) -> bool:
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
        if any(keyword in lowered for keyword in keywords):
            return True
    if exit_code in NOT_DENIED_EXIT_CODES:
        return False
    return sandbox_type == "linuxSeccomp" and exit_code == SIGSYS_EXIT_CODE
