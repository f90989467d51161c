"""`execserver run [TARGET] [-t] -- ARGV…`: run a command on an executor, like `ssh host cmd`.

Output streams live (stdout to stdout, stderr to stderr); local stdin is forwarded and its end
closes the remote stdin where the executor can; the exit code is the remote one (a process
that could not be followed exits 255). Ctrl-C interrupts the remote process, a second one
kills it. `--tty` runs it on a remote terminal of the local terminal's size (resized with it)
with the local one in raw mode. `--detach` starts it, prints its handle and exits at once; the
command then runs on (`execserver ps`, `attach`, `kill`).
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
from typing import Protocol

from execserver.cli.targets import add_target_arguments, open_target, target_name
from execserver.client.environments import EnvironmentsError
from execserver.environment import ExitedEvent, OutputEvent, ProcessFailed, Unsupported
from execserver.environment.process import ExecProcess, OutputGap
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
    parser.add_argument(
        "-d",
        "--detach",
        action="store_true",
        help="start the command, print its handle and exit 0; it runs on after this call "
        "(see `execserver attach`, `ps`, `kill`)",
    )
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
    if args.tty and not args.detach and not os.isatty(0):
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
            argv,
            cwd=args.cwd,
            tty=args.tty,
            pipe_stdin=True,
            env_policy=policy,
            size=local_terminal_size() if args.tty else None,
            detach=args.detach,
        )
        if args.detach:
            print(process.handle)
            await process.aclose()  # stops following; the process runs on
            return 0
        async with process:
            with _raw_terminal(args.tty):
                return await _follow(process, resize=args.tty)


def local_terminal_size() -> tuple[int, int] | None:
    """(rows, cols) of the terminal on our stdin, None without one."""
    try:
        size = os.get_terminal_size(0)
    except OSError:
        return None
    return size.lines, size.columns


class Controls(Protocol):
    """How a follower reacts to the user (`execserver attach` detaches where `run` interrupts)."""

    def interrupt(self, count: int) -> Callable[[], Awaitable[object]] | None:
        """Ctrl-C number `count`: an action to run, or None to stop following (detach)."""
        ...

    def keys(self, data: bytes) -> bytes | Callable[[], Awaitable[object]] | None:
        """Typed bytes to send on (a terminal in raw mode), an action to run instead, or None
        to stop following."""
        ...


class RunControls:
    """`execserver run`: the first Ctrl-C interrupts the remote command, the second kills it;
    in raw mode keys go to the remote terminal as they are."""

    def __init__(self, process: ExecProcess) -> None:
        self._process = process

    def interrupt(self, count: int) -> Callable[[], Awaitable[object]]:
        return self._process.signal if count == 1 else self._process.terminate

    def keys(self, data: bytes) -> bytes:
        return data


DETACHED = -1
"""What `_follow` returns when `Controls` stopped following (the process runs on)."""


async def _follow(
    process: ExecProcess, *, resize: bool = False, controls: Controls | None = None
) -> int:
    """Print the process's output until it closes; returns its exit code (or `DETACHED`).

    `resize`: follow the local terminal's size (SIGWINCH) with `process/resize`.
    """
    loop = asyncio.get_running_loop()
    interrupts = 0
    controls = controls or RunControls(process)
    stopped = loop.create_future()

    tasks = TaskOwner("execserver run")

    async def quietly(action: Callable[[], Awaitable[object]]) -> None:
        # The coroutine is made here, inside the task: a task cancelled before it started
        # leaves no coroutine behind that was never awaited.
        with contextlib.suppress(ExecServerError):
            await action()

    def stop() -> None:
        if not stopped.done():
            stopped.set_result(None)

    def on_interrupt() -> None:
        nonlocal interrupts
        interrupts += 1
        action = controls.interrupt(interrupts)
        if action is None:
            stop()
        else:
            tasks.spawn(quietly(action))

    def on_resize() -> None:
        size = local_terminal_size()
        if size is not None:
            tasks.spawn(quietly(lambda: process.resize(*size)))

    def keys(data: bytes) -> bytes | None:
        passed = controls.keys(data)
        if passed is None:
            stop()
        elif not isinstance(passed, bytes):
            tasks.spawn(quietly(passed))
            return b""
        return passed

    loop.add_signal_handler(signal.SIGINT, on_interrupt)
    if resize:
        loop.add_signal_handler(signal.SIGWINCH, on_resize)
    tasks.spawn(quietly(lambda: _forward_stdin(process, keys)))
    printer = tasks.spawn(_print_events(process))
    try:
        await asyncio.wait([printer, stopped], return_when=asyncio.FIRST_COMPLETED)
        if not printer.done():
            return DETACHED
        exit_code = printer.result()
        if isinstance(exit_code, ProcessFailed):
            print(f"\r\nexecserver: {exit_code}", file=sys.stderr)
            return FAILED_EXIT
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        if resize:
            loop.remove_signal_handler(signal.SIGWINCH)
        await tasks.aclose()
    return exit_code if 0 <= exit_code <= 255 else FAILED_EXIT


async def _print_events(process: ExecProcess) -> int | ProcessFailed:
    """Write the output to stdout/stderr as it comes; the exit code once the process closed,
    or the failure when it can no longer be followed."""
    exit_code = FAILED_EXIT
    try:
        async for event in process:
            if isinstance(event, OutputEvent):
                stream = sys.stderr if event.stream == "stderr" else sys.stdout
                stream.buffer.write(event.data)
                stream.buffer.flush()
            elif isinstance(event, ExitedEvent):
                exit_code = event.exit_code
            elif isinstance(event, OutputGap):
                print(
                    f"\r\nexecserver: [{event.size} bytes of output dropped (seq "
                    f"{event.from_seq} to {event.seq}): over the executor's journal cap]\r",
                    file=sys.stderr,
                )
    except ProcessFailed as exc:
        return exc
    return exit_code


STDIN_EOF_WARNING_DELAY_S = 1.0


async def _forward_stdin(
    process: ExecProcess, keys: Callable[[bytes], bytes | None] | None = None
) -> None:
    """Copy local stdin to the process until EOF, then close its stdin (where possible).

    `keys` sees each read first: it returns the bytes to send, or None to stop forwarding."""
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
        if keys is not None:
            passed = keys(data)
            if passed is None:
                return
            data = passed
        if data and await process.write(data) != "accepted":
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
