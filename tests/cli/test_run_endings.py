"""`execserver run --timeout` and how `run` reports endings: 124 for a timeout (as timeout(1)),
128+N for death by signal N, the reason on stderr; against an executor without server-side
timeouts (the pinned codex) the client ends the command itself."""

from __future__ import annotations

import pytest

from tests.cli.test_client_commands import run_cli
from tests.conftest import ServerProcess


async def test_run_timeout_exits_124_with_the_reason(ours: ServerProcess) -> None:
    code, _, stderr = await run_cli("run", ours.url, "--timeout", "300ms", "--", "sleep", "60")
    assert code == 124
    assert stderr == b"execserver: the command timed out (SIGTERM)\n"


async def test_run_signal_exits_128_plus_n(ours: ServerProcess) -> None:
    code, _, stderr = await run_cli("run", ours.url, "--", "sh", "-c", "kill -TERM $$")
    assert code == 128 + 15
    assert stderr == b"execserver: the command was killed (SIGTERM)\n"


async def test_run_plain_exit_prints_nothing(ours: ServerProcess) -> None:
    code, stdout, stderr = await run_cli(
        "run", ours.url, "--timeout", "1m", "--", "sh", "-c", "echo hi; exit 3"
    )
    assert (code, stdout, stderr) == (3, b"hi\n", b"")


@pytest.mark.reference
async def test_run_timeout_against_an_executor_without_it(reference: ServerProcess) -> None:
    code, _, stderr = await run_cli("run", reference.url, "--timeout", "300ms", "--", "sleep", "60")
    assert code == 124
    assert stderr == b"execserver: the command timed out\n"


async def test_run_bad_timeout_is_a_usage_error(ours: ServerProcess) -> None:
    code, _, stderr = await run_cli("run", ours.url, "--timeout", "soon", "--", "true")
    assert code == 2
    assert b"--timeout expects a duration" in stderr
