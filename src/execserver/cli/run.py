"""`execserver run [TARGET] [-t] -- ARGV…`: run a command on an executor, like `ssh host cmd`.

Output streams live (stdout to stdout, stderr to stderr); local stdin is forwarded and its end
closes the remote stdin where the executor can; the exit code is the remote one (a process
that could not be followed exits 255). Ctrl-C interrupts the remote process, a second one
kills it. `--tty` runs it on a remote terminal with the local one in raw mode.

`--timeout DURATION` (`90`, `30s`, `500ms`, `5m`, `1h`) has the executor end the whole process
tree after that long (SIGTERM, then SIGKILL after its grace period); the exit code is then 124,
as with timeout(1). When the command did not simply exit, the reason is printed on stderr and
the exit code is a shell's: 128+N for death by signal N.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import termios
import threading
import tty
from collections.abc import Awaitable, Callable, Iterator

from execserver.cli.targets import add_target_arguments, open_target, target_name
from execserver.client.environments import EnvironmentsError
from execserver.environment import ExitedEvent, OutputEvent, ProcessFailed, Unsupported
from execserver.environment.process import ExecProcess
from execserver.errors import ExecServerError
from execserver.protocol.process import ExecEnvPolicy, Termination
from execserver.tasks import TaskOwner

READ_BYTES = 65536
FAILED_EXIT = 255
TIMEOUT_EXIT = 124
"""timeout(1)'s exit code when the command ran out of time."""
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds from `90`, `1.5`, `30s`, `500ms`, `5m`, `1h`. Raises `ValueError`."""
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit):
            number, scale = text[: -len(unit)], _DURATION_UNITS[unit]
            break
    else:
        number, scale = text, 1.0
    seconds = float(number) * scale
    if not 0.001 <= seconds <= 365 * 86400:  # also refuses nan and inf
        raise ValueError(text)
    return seconds


def describe_ending(termination: Termination | None, exit_code: int) -> tuple[str | None, int]:
    """What `run` prints on stderr for a command that did not simply exit (None if it did),
    and the exit code to return."""
    if termination is None or termination.reason == "exited":
        return None, exit_code
    by = f" ({termination.signal})" if termination.signal else ""
    messages = {
        "timeout": "the command timed out",
        "idleTimeout": "the command produced no output for too long",
        "oom": "the command ran out of memory (killed by the OOM killer)",
        "terminated": "the command was terminated",
        "shutdown": "the executor shut down",
        "sandboxDenied": "the sandbox denied the command",
        "signaled": "the command was killed",
    }
    message = messages.get(termination.reason, termination.reason) + by
    if termination.reason in ("timeout", "idleTimeout"):
        return message, TIMEOUT_EXIT
    return message, exit_code


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "run",
        usage="execserver run [TARGET] [--env NAME] [-t] [-C DIR] [-e NAME=VALUE] -- ARGV...",
        help="run a command on an executor",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", nargs="?", help="ws:// URL, `local` or an environments.toml id")
    add_target_arguments(parser)
    parser.add_argument("-t", "--tty", action="store_true", help="run on a remote terminal")
    parser.add_argument("-C", "--cwd", help="working directory (default: the executor's)")
    parser.add_argument(
        "--timeout",
        metavar="DURATION",
        help="end the command after this long (90, 30s, 500ms, 5m, 1h); exit code 124",
    )
    parser.add_argument(
        "-e",
        "--setenv",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a variable in the command's environment (repeatable)",
    )
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    args.target_name = target_name(args, parser)
    argv: list[str] = args.command_argv
    if not argv:
        parser.error("run: missing the command (execserver run TARGET -- ARGV...)")
    variables = {}
    for item in args.setenv:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"run: --setenv expects NAME=VALUE, got {item!r}")
        variables[name] = value
    if args.tty and not os.isatty(0):
        parser.error("run: --tty needs a terminal on stdin")
    args.timeout_s = None
    if args.timeout is not None:
        try:
            args.timeout_s = parse_duration(args.timeout)
        except ValueError:
            parser.error(
                f"run: --timeout expects a duration such as 30s, 500ms or 5m, got {args.timeout!r}"
            )
    try:
        return asyncio.run(_run(args, argv, variables))
    except (ExecServerError, ValueError) as exc:
        print(f"execserver: {exc}", file=sys.stderr)
        return FAILED_EXIT


async def _run(args: argparse.Namespace, argv: list[str], variables: dict[str, str]) -> int:
    if args.tty:
        variables = {"TERM": os.environ.get("TERM", "xterm"), **variables}
    policy = None
    if variables:
        policy = ExecEnvPolicy(
            inherit="all", ignore_default_excludes=False, exclude=[], set=variables, include_only=[]
        )
    timeout_s: float | None = args.timeout_s
    async with open_target(args.target_name, token=args.token) as environment:
        server_timeout = timeout_s is not None and await _executor_has_timeouts(environment)
        process = await environment.process.start(
            argv,
            cwd=args.cwd,
            tty=args.tty,
            pipe_stdin=True,
            env_policy=policy,
            timeout_ms=round(timeout_s * 1000) if server_timeout and timeout_s else None,
        )
        async with process:
            with _raw_terminal(args.tty):
                # An executor without server-side timeouts: we end the command ourselves.
                local_timeout = None if server_timeout else timeout_s
                return await _follow(process, local_timeout, tty=args.tty)


async def _executor_has_timeouts(environment: object) -> bool:
    info = await environment.info()  # type: ignore[attr-defined]
    extensions = getattr(info, "extensions", None)
    return extensions is not None and extensions.process_endings.timeouts


async def _follow(
    process: ExecProcess, local_timeout: float | None = None, *, tty: bool = False
) -> int:
    loop = asyncio.get_running_loop()
    interrupts = 0

    tasks = TaskOwner("execserver run")

    async def quietly(action: Callable[[], Awaitable[object]]) -> None:
        # The coroutine is made here, inside the task: a task cancelled before it started
        # leaves no coroutine behind that was never awaited.
        with contextlib.suppress(ExecServerError):
            await action()

    def on_interrupt() -> None:
        nonlocal interrupts
        interrupts += 1
        tasks.spawn(quietly(process.signal if interrupts == 1 else process.terminate))

    timed_out = False

    async def time_out() -> None:
        nonlocal timed_out
        assert local_timeout is not None
        await asyncio.sleep(local_timeout)
        timed_out = True
        await process.terminate()

    loop.add_signal_handler(signal.SIGINT, on_interrupt)
    tasks.spawn(quietly(lambda: _forward_stdin(process)))
    if local_timeout is not None:
        tasks.spawn(quietly(time_out))
    exit_code = FAILED_EXIT
    termination: Termination | None = None
    try:
        async for event in process:
            if isinstance(event, OutputEvent):
                stream = sys.stderr if event.stream == "stderr" else sys.stdout
                stream.buffer.write(event.data)
                stream.buffer.flush()
            elif isinstance(event, ExitedEvent):
                exit_code = event.exit_code
                termination = event.termination
    except ProcessFailed as exc:
        print(f"\r\nexecserver: {exc}", file=sys.stderr)
        return FAILED_EXIT
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        await tasks.aclose()
    end = "\r\n" if tty else "\n"  # the terminal is still raw
    if timed_out:
        print("execserver: the command timed out", end=end, file=sys.stderr)
        return TIMEOUT_EXIT
    message, exit_code = describe_ending(termination, exit_code)
    if message is not None and interrupts == 0:
        print(f"execserver: {message}", end=end, file=sys.stderr)
    return exit_code if 0 <= exit_code <= 255 else FAILED_EXIT


STDIN_EOF_WARNING_DELAY_S = 1.0


async def _forward_stdin(process: ExecProcess) -> None:
    """Copy local stdin to the process until EOF, then close its stdin (where possible)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=16)

    def pump() -> None:  # a daemon thread: works for terminals, pipes and regular files
        while True:
            try:
                data = os.read(0, READ_BYTES)
            except OSError:
                data = b""
            try:
                asyncio.run_coroutine_threadsafe(queue.put(data), loop).result()
            except (RuntimeError, asyncio.CancelledError):
                return  # the loop is gone
            if not data:
                return

    threading.Thread(target=pump, name="stdin", daemon=True).start()
    while data := await queue.get():
        if await process.write(data) != "accepted":
            return
    try:
        await process.close_stdin()
    except Unsupported:
        # Only worth saying if the command is still running a moment later (it may be waiting
        # for an EOF that will not come); this task is cancelled when the command ends.
        await asyncio.sleep(STDIN_EOF_WARNING_DELAY_S)
        print(
            "execserver: this executor cannot close the command's stdin; it will not see EOF",
            file=sys.stderr,
        )


@contextlib.contextmanager
def _raw_terminal(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    saved = termios.tcgetattr(0)
    tty.setraw(0)
    try:
        yield
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)


__all__ = ["EnvironmentsError", "add_parser", "main"]
