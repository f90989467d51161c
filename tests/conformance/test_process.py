"""The process capability, identically on every environment (see conftest.py)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import msgspec
import pytest

from execserver.environment import (
    ClosedEvent,
    Environment,
    ExitedEvent,
    OutputEvent,
    ProcessEvent,
    ProcessExitError,
    Unsupported,
)
from execserver.environment.process import ExecProcess
from execserver.errors import RpcError
from execserver.protocol.base import dec_hook
from execserver.protocol.pathuri import PathUri
from execserver.protocol.sandbox import SandboxContext
from tests.conformance.conftest import Target
from tests.conftest import TIME, require_bwrap

PY = sys.executable


async def events_of(process: ExecProcess, timeout: float = 20 * TIME) -> list[ProcessEvent]:
    async with asyncio.timeout(timeout):
        return [event async for event in process]


def output(events: list[ProcessEvent], stream: str | None = None) -> bytes:
    return b"".join(
        e.data for e in events if isinstance(e, OutputEvent) and stream in (None, e.stream)
    )


async def test_process_run_collects_output_and_exit_code(environment: Environment) -> None:
    """run() returns stdout, stderr and the exit code of a finished command."""
    result = await environment.process.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (result.stdout, result.stderr, result.exit_code) == (b"out\n", b"err\n", 3)
    assert result.sandbox_type == "none"
    assert not result.sandbox_denied


async def test_process_run_check_raises_with_the_result(environment: Environment) -> None:
    """run(check=True) raises ProcessExitError carrying the whole result."""
    with pytest.raises(ProcessExitError) as info:
        await environment.process.run(["sh", "-c", "echo partial; exit 7"], check=True)
    assert info.value.result.exit_code == 7
    assert info.value.result.stdout == b"partial\n"


async def test_process_events_are_ordered_exactly_once(environment: Environment) -> None:
    """Events come in seq order 1, 2, 3, ...: output, one exit, then the close, last."""
    script = "for i in $(seq 1 200); do echo line $i; echo err $i >&2; done; exit 4"
    process = await environment.process.start(["sh", "-c", script])
    events = await events_of(process)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert isinstance(events[-1], ClosedEvent)
    exits = [e for e in events if isinstance(e, ExitedEvent)]
    assert len(exits) == 1
    assert exits[0].exit_code == 4
    expected_out = "".join(f"line {i}\n" for i in range(1, 201)).encode()
    expected_err = "".join(f"err {i}\n" for i in range(1, 201)).encode()
    assert output(events, "stdout") == expected_out
    assert output(events, "stderr") == expected_err
    assert await process.wait() == 4


async def test_process_large_output_arrives_complete(environment: Environment) -> None:
    """Several MiB of output are delivered whole and in order (more than the server retains)."""
    size = 4 * 1024 * 1024
    code = f"import sys; sys.stdout.buffer.write(bytes(range(256)) * ({size} // 256))"
    result = await environment.process.run([PY, "-c", code])
    assert result.exit_code == 0
    assert result.stdout == bytes(range(256)) * (size // 256)


async def test_process_stdin_writes_reach_the_child(environment: Environment) -> None:
    """write() feeds a pipe_stdin process; each write is applied once, in order."""
    process = await environment.process.start(["cat"], pipe_stdin=True)
    for piece in (b"one ", b"two ", b"three\n"):
        assert await process.write(piece) == "accepted"
    received = b""
    async for event in process:
        if isinstance(event, OutputEvent):
            received += event.data
            if received.endswith(b"\n"):
                assert await process.terminate() is True
    assert received == b"one two three\n"


async def test_process_write_without_pipe_stdin_is_refused(environment: Environment) -> None:
    """A process started without pipe_stdin reports stdinClosed for writes."""
    process = await environment.process.start(["sleep", "30"])
    async with process:
        assert await process.write(b"x") == "stdinClosed"


async def test_process_close_stdin_ends_input(target: Target) -> None:
    """close_stdin() gives the child EOF where the environment can; otherwise Unsupported."""
    process = await target.env.process.start(["cat"], pipe_stdin=True)
    async with process:
        await process.write(b"last words\n")
        if not target.capabilities.close_stdin:
            with pytest.raises(Unsupported):
                await process.close_stdin()
            return
        await process.close_stdin()
        events = await events_of(process)
        assert output(events) == b"last words\n"
        assert await process.wait() == 0


async def test_process_signal_interrupts(environment: Environment) -> None:
    """signal() sends SIGINT: a sleeping child dies with 128 + 2."""
    process = await environment.process.start(
        [PY, "-c", "import time; print('ready', flush=True); time.sleep(60)"]
    )
    async for event in process:
        if isinstance(event, OutputEvent) and b"ready" in event.data:
            await process.signal()
        if isinstance(event, ExitedEvent):
            assert event.exit_code in (130, 1)  # Python turns SIGINT into KeyboardInterrupt


async def test_process_terminate_kills_and_reports_running(environment: Environment) -> None:
    """terminate() kills a running process (True), and reports False once it has exited."""
    process = await environment.process.start(["sleep", "60"])
    assert await process.terminate() is True
    assert await asyncio.wait_for(process.wait(), 20 * TIME) == 137
    await events_of(process)
    assert await process.terminate() is False


async def test_process_tty_output_comes_from_a_terminal(environment: Environment) -> None:
    """tty=True runs the child on a terminal: `pty` stream, CRLF line endings."""
    result = await environment.process.run(["sh", "-c", "test -t 1 && echo is-a-tty"], tty=True)
    assert result.exit_code == 0
    assert result.stdout == b"is-a-tty\r\n"


async def test_process_env_mapping_is_exact(environment: Environment) -> None:
    """An env mapping is the child's whole environment."""
    result = await environment.process.run(["/usr/bin/env"], env={"ONLY": "this"})
    assert result.stdout == b"ONLY=this\n"


async def test_process_default_env_inherits_without_secrets(environment: Environment) -> None:
    """env=None inherits the executor's variables (PATH, HOME) minus secret-looking names."""
    result = await environment.process.run(["/usr/bin/env"])
    names = {line.split(b"=", 1)[0] for line in result.stdout.splitlines()}
    assert b"PATH" in names
    assert not any(b"SECRET" in n or b"TOKEN" in n or n.endswith(b"_KEY") for n in names)


async def test_process_cwd_is_honoured(environment: Environment, tmp_path: Path) -> None:
    """cwd sets the child's working directory."""
    result = await environment.process.run(["pwd"], cwd=tmp_path)
    assert result.stdout == f"{tmp_path}\n".encode()


async def test_process_missing_program_fails_to_start(environment: Environment) -> None:
    """A program that does not exist is an RpcError with the executor's wording."""
    with pytest.raises(RpcError) as info:
        await environment.process.start(["/nonexistent/program"])
    assert info.value.message == "No such file or directory (os error 2)"


async def test_process_read_returns_retained_output(environment: Environment) -> None:
    """read() returns the retained output after a seq, without consuming anything."""
    process = await environment.process.start(["sh", "-c", "echo a; echo b"])
    events = await events_of(process)
    first = await process.read(0)
    again = await process.read(0)
    assert first == again
    assert b"".join(c.data for c in first.chunks) == output(events)
    assert first.exited and first.closed and first.exit_code == 0
    assert first.next_seq == events[-1].seq + 1


async def test_process_timeout_kills_the_child(environment: Environment) -> None:
    """run(timeout=...) raises TimeoutError and leaves no running process behind."""
    with pytest.raises(TimeoutError):
        await environment.process.run(["sleep", "60"], timeout=0.5)


async def test_process_sandbox_denies_writes_outside(target: Target) -> None:
    """A restricted sandbox (read all, write only the workdir) blocks writes elsewhere."""
    require_bwrap()
    workdir = target.workdir
    outside = workdir.parent / f"{workdir.name}-outside"
    outside.mkdir()
    uri = PathUri.from_native(str(workdir)).uri
    sandbox = msgspec.convert(
        {
            "permissions": {
                "type": "managed",
                "file_system": {
                    "type": "restricted",
                    "entries": [
                        {"path": {"type": "special", "value": {"kind": "root"}}, "access": "read"},
                        {"path": {"type": "path", "path": uri}, "access": "write"},
                    ],
                },
                "network": "restricted",
            },
            "windowsSandboxLevel": "disabled",
        },
        SandboxContext,
        dec_hook=dec_hook,
    )
    script = f"echo in > inside.txt && echo out > {outside}/x.txt"
    result = await target.env.process.run(["sh", "-c", script], cwd=workdir, sandbox=sandbox)
    assert result.sandbox_type == "linuxSeccomp"
    assert result.exit_code != 0
    assert (workdir / "inside.txt").read_text() == "in\n"
    assert not (outside / "x.txt").exists()
