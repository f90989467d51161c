"""The README's Python example runs as written (against our server, in a scratch repository)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ServerProcess
from tests.harness.servers import REPO_ROOT


def readme_python_example() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## From Python", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "README has no Python example"
    return match.group(1)


def test_readme_example_is_short() -> None:
    """The example stays a ten-line-or-so example."""
    lines = [line for line in readme_python_example().splitlines() if line.strip()]
    assert len(lines) <= 12


def test_readme_example_runs(ours: ServerProcess, tmp_path: Path) -> None:
    """The example connects, runs `git status`, writes and reads a file."""
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    code = readme_python_example()
    code = code.replace("ws://127.0.0.1:8765", ours.url).replace("/work/repo", str(repo))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"0 \nb'hello\\n'\n"
    assert (repo / "NOTES.md").read_bytes() == b"hello\n"
