"""The sandbox-denial heuristic, on the cases verified against the reference (§9.5)."""

from __future__ import annotations

import pytest

from execserver.local.sandbox.denial import looks_denied, sandbox_denied


@pytest.mark.parametrize(
    ("sandbox_type", "exit_code", "streams", "denied"),
    [
        ("linuxSeccomp", 1, [], False),  # silent failure
        ("linuxSeccomp", 127, [("stderr", b"sh: x: Permission denied\n")], True),  # keyword wins
        ("linuxSeccomp", 2, [], False),
        ("linuxSeccomp", 159, [], True),  # SIGSYS
        ("linuxSeccomp", 3, [("stdout", b"Sand"), ("stdout", b"Box\n")], True),  # across chunks
        ("linuxSeccomp", 126, [], False),
        ("linuxSeccomp", 0, [("stderr", b"read-only file system")], False),  # success
        ("none", 1, [("stderr", b"Operation not permitted")], False),  # not sandboxed
        ("linuxSeccomp", 1, [("pty", b"touch: cannot touch 'x': Read-only file system\r\n")], True),
        ("linuxSeccomp", 1, [("stdout", b"permission"), ("stderr", b" denied")], True),  # combined
    ],
)
def test_sandbox_denial_heuristic(
    sandbox_type: str, exit_code: int, streams: list[tuple[str, bytes]], denied: bool
) -> None:
    """Keyword in any stream or in the combined output, then exit-code rules."""
    assert looks_denied(sandbox_type, exit_code, streams) is denied


@pytest.mark.parametrize(
    ("exit_code", "streams", "denied"),
    [
        (1, [("stderr", b"touch: cannot touch 'x': Read-only file system\n")], True),  # EROFS
        (126, [("stderr", b"sh: 1: ./tool: Permission denied\n")], True),  # EACCES
        (1, [("stderr", b"PermissionError: [Errno 1] Operation not permitted\n")], True),  # EPERM
        (159, [], True),  # SIGSYS
        (1, [("stderr", b"sandbox self-check failed\n")], False),  # talk, no denial
        (1, [("stdout", b"seccomp"), ("stderr", b" landlock\n")], False),
        (0, [("stderr", b"Read-only file system")], False),  # success
    ],
)
def test_termination_reason_counts_only_the_sandboxs_own_errors(
    exit_code: int, streams: list[tuple[str, bytes]], denied: bool
) -> None:
    assert sandbox_denied("linuxSeccomp", exit_code, streams) is denied
    assert not sandbox_denied("none", exit_code, streams)
