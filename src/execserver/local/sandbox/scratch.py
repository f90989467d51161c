"""The scratch directory of this process's sandboxes: `$TMPDIR/execserver-sandbox-<pid>-*`.

It holds the empty files mounted over denied paths. There is one per process, made on first
use and removed when the process exits; one left behind by a process that could not clean up
(SIGKILL, a crash) is removed by the next process that makes its own, once that pid is gone.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile

PREFIX = "execserver-sandbox-"

_directory: str | None = None
_registered = False


def scratch_directory() -> str:
    """This process's scratch directory (made, and stale ones swept, on first use)."""
    global _directory, _registered
    if _directory is None or not os.path.isdir(_directory):
        sweep_stale()
        _directory = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-")
        if not _registered:
            atexit.register(remove_scratch)
            _registered = True
    return _directory


def current_scratch() -> str | None:
    """This process's scratch directory, if it made one (an upgrade in place carries it)."""
    return _directory


def adopt_scratch(directory: str) -> None:
    """Use `directory` (made by this pid's previous image, before an upgrade in place: its
    files may be mounted in running sandboxes) instead of making another; removed at exit."""
    global _directory, _registered
    if _directory is None and os.path.isdir(directory):
        _directory = directory
        if not _registered:
            atexit.register(remove_scratch)
            _registered = True


def remove_scratch() -> None:
    """Remove this process's scratch directory (at exit)."""
    global _directory
    directory, _directory = _directory, None
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)


def _owner_is_gone(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


def sweep_stale(parent: str | None = None) -> list[str]:
    """Remove scratch directories of ours whose process is gone; returns their paths."""
    parent = parent or tempfile.gettempdir()
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(parent):
            pid_text = entry.name[len(PREFIX) :].split("-", 1)[0]
            if not entry.name.startswith(PREFIX) or not pid_text.isdigit():
                continue
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_uid != os.getuid():
                    continue
                if entry.is_dir(follow_symlinks=False) and _owner_is_gone(int(pid_text)):
                    shutil.rmtree(entry.path, ignore_errors=True)
                    removed.append(entry.path)
    return removed


__all__ = [
    "PREFIX",
    "adopt_scratch",
    "current_scratch",
    "remove_scratch",
    "scratch_directory",
    "sweep_stale",
]
