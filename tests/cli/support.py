"""Running the real `execserver` client commands from tests: through pipes (`run_cli`) or on a
real terminal (`tests.harness.terminal.Terminal`), with a clean environment."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from tests.conftest import TIME

CLI = [sys.executable, "-m", "execserver"]
# Variables of the developer's shell that would change what the CLI does.
_CLEARED = ("EXECSERVER_TOKEN", "EXECSERVER_TOKEN_FILE", "EXECSERVER_CACERT")


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


async def run_cli(
    *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> tuple[int, bytes, bytes]:
    """Exit code, stdout and stderr of `execserver ARGS…` fed `stdin` through pipes."""
    process = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env or cli_env(),
    )
    async with asyncio.timeout(60 * TIME):
        stdout, stderr = await process.communicate(stdin)
    assert process.returncode is not None
    return process.returncode, stdout, stderr


def no_traceback(stderr: bytes) -> None:
    assert b"Traceback" not in stderr and b"Exception ignored" not in stderr, stderr.decode()
