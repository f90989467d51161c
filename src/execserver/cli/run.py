"""`execserver run [TARGET] [-t] -- ARGV…`: run a command on an executor, like `ssh host cmd`.

Output streams live (stdout to stdout, stderr to stderr); local stdin is forwarded and its end
closes the remote stdin where the executor can; the exit code is the remote one. A command
that cannot start exits 127 (not found), 126 (not executable) or 125 (anything else, such as
a missing -C directory); an executor that cannot be reached or is lost for longer than
--reconnect-timeout exits 255 (docs/cli.md has the whole table). Ctrl-C interrupts the remote
process, a second one kills it. `--tty` runs it on a remote terminal with the local one in
raw mode. When the command is done, its session on the executor is closed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable

from execserver.cli.exit_codes import CliError, ExitCode
from execserver.cli.help import HelpFormatter, add_version_argument
from execserver.cli.status import raw_terminal, say
from execserver.cli.targets import (
    TargetOptions,
    add_target_arguments,
    open_target,
    target_name,
    target_options,
)
from execserver.environment import Environment, ExitedEvent, OutputEvent, Unsupported
from execserver.environment.process import ExecProcess
from execserver.errors import ExecServerError, MessageTooLarge, RpcError
from execserver.protocol.process import ExecEnvPolicy
from execserver.tasks import TaskOwner

READ_BYTES = 65536


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "run",
        usage="execserver run [TARGET] [--env NAME] [-t] [-C DIR] [-e NAME=VALUE] -- ARGV...",
        help="run a command on an executor",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    add_version_argument(parser)
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
    name = target_name(args, parser)
    argv: list[str] = args.command_argv
    if not argv:
        parser.error("run: missing the command (execserver run TARGET -- ARGV...)")
    variables = {}
    for item in args.setenv:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"run: --setenv expects NAME=VALUE, got {item!r}")
        variables[key] = value
    if args.tty and not os.isatty(0):
        parser.error("run: --tty needs a terminal on stdin")
    options = target_options(args)
    return asyncio.run(_run(args, name, options, argv, variables))


async def _run(
    args: argparse.Namespace,
    name: str | None,
    options: TargetOptions,
    argv: list[str],
    variables: dict[str, str],
) -> int:
    if args.tty:
        variables = {"TERM": os.environ.get("TERM", "xterm"), **variables}
    policy = None
    if variables:
        policy = ExecEnvPolicy(
            inherit="all", ignore_default_excludes=False, exclude=[], set=variables, include_only=[]
        )
    async with open_target(name, options) as environment:
        try:
            process = await environment.process.start(
                argv, cwd=args.cwd, tty=args.tty, pipe_stdin=True, env_policy=policy
            )
        except (RpcError, MessageTooLarge) as exc:
            raise await _start_failure(environment, argv, args.cwd, exc) from None
        async with process:
            with raw_terminal(args.tty):
                return await _follow(process)


def _failure_kind(exc: RpcError) -> str:
    """`spawnNotFound`/`spawnPermissionDenied`/… from codex 0.171's `data.kind`, else from the
    OS error in the message (codex 0.169 and older send only the message)."""
    if isinstance(exc.data, dict) and isinstance(exc.data.get("kind"), str):
        return str(exc.data["kind"])
    if "(os error 2)" in exc.message:
        return "spawnNotFound"
    if "(os error 13)" in exc.message:
        return "spawnPermissionDenied"
    return "spawnFailed"


async def _exists(environment: Environment, path: str) -> bool | None:
    """Whether `path` exists on the executor (None: cannot tell)."""
    try:
        await environment.fs.get_metadata(path)
    except FileNotFoundError:
        return False
    except (ExecServerError, ValueError):
        return None
    return True


async def _start_failure(
    environment: Environment, argv: list[str], cwd: str | None, exc: RpcError | MessageTooLarge
) -> CliError:
    """Which side and what: the command, its directory or its interpreter (as a shell says)."""
    if isinstance(exc, MessageTooLarge):
        return CliError(f"cannot start {argv[0]}: {exc}", ExitCode.CANNOT_START)
    kind = _failure_kind(exc)
    program = argv[0]
    reason = exc.message.split(" (os error", 1)[0]
    if (
        kind in ("spawnNotFound", "spawnPermissionDenied")
        and cwd is not None
        and os.path.isabs(cwd)
        and await _exists(environment, cwd) is False
    ):
        return CliError(f"remote directory {cwd} (-C) does not exist", ExitCode.CANNOT_START)
    if kind == "spawnNotFound":
        if "/" in program and await _exists(environment, program):
            return CliError(
                f"remote command {program}: its interpreter (the #! line) was not found",
                ExitCode.NOT_EXECUTABLE,
            )
        return CliError(f"remote command not found: {program}", ExitCode.NOT_FOUND)
    if kind == "spawnPermissionDenied":
        return CliError(
            f"remote command {program} cannot be executed: {reason}", ExitCode.NOT_EXECUTABLE
        )
    return CliError(f"cannot start remote command {program}: {reason}", ExitCode.CANNOT_START)


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
    exit_code = ExitCode.CONNECTION.value
    try:
        async for event in process:
            if isinstance(event, OutputEvent):
                stream = sys.stderr if event.stream == "stderr" else sys.stdout
                stream.buffer.write(event.data)
                stream.buffer.flush()
            elif isinstance(event, ExitedEvent):
                exit_code = event.exit_code
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        await tasks.aclose()
    return exit_code if 0 <= exit_code <= 255 else ExitCode.CONNECTION.value


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
        say("this executor cannot close the command's stdin; it will not see EOF")


__all__ = ["add_parser", "main"]
