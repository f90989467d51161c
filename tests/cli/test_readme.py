"""The README's Python example runs as written (against our server, in a scratch repository)."""

from __future__ import annotations

import os
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
    """The example runs as pasted (only the URL is the test server's): info, a command, a file
    written and read back."""
    code = readme_python_example().replace("ws://127.0.0.1:8765", ours.url)
    (tmp_path / "hello.py").write_text(code)
    result = subprocess.run(
        [sys.executable, "hello.py"], capture_output=True, timeout=60, check=False, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode() == f"linux {_login_shell()}\n0 Linux\nb'hello\\n'\n"


def _login_shell() -> str:
    import pwd

    return os.path.basename(pwd.getpwuid(os.getuid()).pw_shell) or "sh"


def test_readme_says_where_the_cli_is() -> None:
    text = (REPO_ROOT / "README.md").read_text()
    assert ".venv/bin/execserver" in text and 'export PATH="$PWD/.venv/bin:$PATH"' in text
