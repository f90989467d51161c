"""`execserver run [TARGET] [-t] -- ARGV…`: run a command on an executor, like `ssh host cmd`.

Output streams live (stdout to stdout, stderr to stderr); local stdin is forwarded and its end
closes the remote stdin where the executor can; the exit code is the remote one (a process
that could not be followed exits 255). Ctrl-C interrupts the remote process, a second one
kills it. `--tty` runs it on a remote terminal with the local one in raw mode.
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
from execserver.protocol.process import ExecEnvPolicy
from execserver.tasks import TaskOwner

READ_BYTES = 65536
FAILED_EXIT = 255


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
    async with open_target(args.target_name, token=args.token) as environment:
        process = await environment.process.start(
            argv, cwd=args.cwd, tty=args.tty, pipe_stdin=True, env_policy=policy
        )
        async with process:
            with _raw_terminal(args.tty):
                return await _follow(process)


async def _follow(process: ExecProcess) -> int:
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

    loop.add_signal_handler(signal.SIGINT, on_interrupt)
    tasks.spawn(quietly(lambda: _forward_stdin(process)))
    exit_code = FAILED_EXIT
    try:
        async for event in process:
            if isinstance(event, OutputEvent):
                stream = sys.stderr if event.stream == "stderr" else sys.stdout
                stream.buffer.write(event.data)
                stream.buffer.flush()
            elif isinstance(event, ExitedEvent):
                exit_code = event.exit_code
    except ProcessFailed as exc:
        print(f"\r\nexecserver: {exc}", file=sys.stderr)
        return FAILED_EXIT
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        await tasks.aclose()
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
