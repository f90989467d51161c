"""A fake cgroup v2 filesystem: a real directory tree under a temporary root, with the kernel's
rules applied by `FakeCgroupFs` (the `CgroupFs` that local/cgroup_v2.py writes through).

Modelled rules (from the kernel's cgroup-v2 documentation):

* `mkdir` creates the interface files: `cgroup.procs`, `cgroup.controllers` (the parent's
  `cgroup.subtree_control`), an empty `cgroup.subtree_control`, `cgroup.kill`, and the files
  of each available controller (`memory.max`, `memory.events`, `memory.peak`, `pids.max`,
  `cpu.max`).
* Writing `+c` to `cgroup.subtree_control` needs `c` in `cgroup.controllers` (else ENOENT) and
  no processes in the cgroup unless it is the root (else EBUSY: no internal processes).
* Writing a pid to `cgroup.procs` moves it there from wherever it was.
* Writing `1` to `cgroup.kill` empties the cgroup and its descendants (recorded in `killed`).
* `rmdir` fails with EBUSY while the cgroup has processes or children.
* A file that the kernel would not have (e.g. `memory.max` without the memory controller)
  cannot be written (ENOENT), as in cgroupfs where files cannot be created.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

CONTROLLER_FILES = {
    "memory": {
        "memory.max": "max\n",
        "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
        "memory.peak": "0\n",
        "memory.swap.max": "max\n",
    },
    "pids": {"pids.max": "max\n"},
    "cpu": {"cpu.max": "max 100000\n"},
}


class FakeCgroupFs:
    def __init__(self, root: Path, controllers: list[str]) -> None:
        self.root = root
        self.killed: list[Path] = []
        self.writes: list[tuple[Path, str]] = []
        root.mkdir(parents=True, exist_ok=True)
        self._files(root, controllers)
        (root / "cgroup.controllers").write_text(" ".join(controllers) + "\n")

    # -- set-up helpers for tests ------------------------------------------------------------

    def make(self, path: Path, procs: list[int] = ()) -> Path:  # type: ignore[assignment]
        """Create the cgroup `path` (and its parents) holding `procs`."""
        for parent in reversed(path.relative_to(self.root).parents):
            directory = self.root / parent
            if not directory.exists():
                self.mkdir(directory)
        if not path.exists():
            self.mkdir(path)
        for pid in procs:
            self.write(path / "cgroup.procs", str(pid))
        return path

    def procs(self, path: Path) -> list[int]:
        return [int(p) for p in (path / "cgroup.procs").read_text().split()]

    def set_file(self, path: Path, text: str) -> None:
        """What the kernel would change by itself (e.g. `memory.events` after an OOM kill)."""
        path.write_text(text)

    # -- CgroupFs ----------------------------------------------------------------------------

    def read(self, path: Path) -> str:
        return path.read_text()

    def write(self, path: Path, text: str) -> None:
        self.writes.append((path, text))
        if not path.exists():
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
        directory, name = path.parent, path.name
        if name == "cgroup.subtree_control":
            self._subtree_control(directory, text)
        elif name == "cgroup.procs":
            self._move(int(text), directory)
        elif name == "cgroup.kill":
            self._kill(directory)
        else:
            path.write_text(text)

    def mkdir(self, path: Path) -> None:
        path.mkdir()
        enabled = (path.parent / "cgroup.subtree_control").read_text().split()
        (path / "cgroup.controllers").write_text(" ".join(enabled) + "\n")
        self._files(path, enabled)

    def rmdir(self, path: Path) -> None:
        if not path.exists():
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
        if self.procs(path) or any(entry.is_dir() for entry in path.iterdir()):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(path))
        shutil.rmtree(path)

    def children(self, path: Path) -> list[Path]:
        return [entry for entry in path.iterdir() if entry.is_dir()]

    def open_dir(self, path: Path) -> int:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    # -- the rules ---------------------------------------------------------------------------

    def _files(self, path: Path, controllers: list[str]) -> None:
        (path / "cgroup.procs").write_text("")
        (path / "cgroup.subtree_control").write_text("")
        if path != self.root:
            (path / "cgroup.kill").write_text("")
        for controller in controllers:
            for name, text in CONTROLLER_FILES.get(controller, {}).items():
                (path / name).write_text(text)

    def _subtree_control(self, directory: Path, text: str) -> None:
        available = set((directory / "cgroup.controllers").read_text().split())
        enabled = set((directory / "cgroup.subtree_control").read_text().split())
        for word in text.split():
            sign, controller = word[0], word[1:]
            if controller not in available:
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
            if sign == "+":
                if directory != self.root and self.procs(directory):
                    raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
                enabled.add(controller)
            else:
                enabled.discard(controller)
        (directory / "cgroup.subtree_control").write_text(" ".join(sorted(enabled)))

    def _move(self, pid: int, target: Path) -> None:
        for procs in self.root.rglob("cgroup.procs"):
            pids = [p for p in procs.read_text().split() if int(p) != pid]
            procs.write_text("".join(f"{p}\n" for p in pids))
        with open(target / "cgroup.procs", "a") as f:
            f.write(f"{pid}\n")

    def _kill(self, directory: Path) -> None:
        self.killed.append(directory)
        for procs in [directory / "cgroup.procs", *directory.rglob("*/cgroup.procs")]:
            procs.write_text("")
