"""`execserver run [TARGET] [-t] -- ARGV…`: run a command on an executor, like `ssh host cmd`.

Output streams live (stdout to stdout, stderr to stderr); local stdin is forwarded and its end
closes the remote stdin where the executor can; the exit code is the remote one. A command
that cannot start exits 127 (not found), 126 (not executable) or 125 (anything else, such as
a missing -C directory); an executor that cannot be reached or is lost for longer than
--reconnect-timeout exits 255 (docs/cli.md has the whole table). Ctrl-C interrupts the remote
process, a second one kills it. `--tty` runs it on a remote terminal of the local terminal's
size (resized with it) with the local one in raw mode. When the command is done, its session
on the executor is closed. `--detach` starts it, prints its handle and exits at once; the
command then runs on (`execserver ps`, `attach`, `kill`).

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
import threading
from collections.abc import Awaitable, Callable
from typing import Protocol

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
from execserver.environment import (
    Environment,
    ExitedEvent,
    OutputEvent,
    ProcessFailed,
    Unsupported,
)
from execserver.environment.process import ExecProcess, OutputGap
from execserver.errors import ExecServerError, MessageTooLarge, RpcError
from execserver.protocol.process import ExecEnvPolicy, Termination
from execserver.tasks import TaskOwner

READ_BYTES = 65536
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
        return message, ExitCode.TIMEOUT
    return message, exit_code


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "run",
        usage="execserver run [TARGET] [--env NAME] [-t] [-C DIR] [-e NAME=VALUE] -- ARGV...",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    add_version_argument(parser)
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
    if args.tty and not args.detach and not os.isatty(0):
        parser.error("run: --tty needs a terminal on stdin")
    args.timeout_s = None
    if args.timeout is not None:
        try:
            args.timeout_s = parse_duration(args.timeout)
        except ValueError:
            parser.error(
                f"run: --timeout expects a duration such as 30s, 500ms or 5m, got {args.timeout!r}"
            )
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
    timeout_s: float | None = args.timeout_s
    async with open_target(name, options) as environment:
        server_timeout = timeout_s is not None and await _executor_has_timeouts(environment)
        if args.detach and timeout_s is not None and not server_timeout:
            raise CliError(
                "run: --timeout with --detach needs an executor with server-side timeouts "
                "(the processEndings extension)",
                ExitCode.CANNOT_START,
            )
        try:
            process = await environment.process.start(
                argv,
                cwd=args.cwd,
                tty=args.tty,
                pipe_stdin=True,
                env_policy=policy,
                timeout_ms=round(timeout_s * 1000) if server_timeout and timeout_s else None,
                size=local_terminal_size() if args.tty else None,
                detach=args.detach,
            )
        except (RpcError, MessageTooLarge) as exc:
            raise await _start_failure(environment, argv, args.cwd, exc) from None
        if args.detach:
            print(process.handle)
            await process.aclose()  # stops following; the process runs on
            return 0
        async with process:
            with raw_terminal(args.tty):
                # An executor without server-side timeouts: we end the command ourselves.
                local_timeout = None if server_timeout else timeout_s
                return await _follow(process, resize=args.tty, local_timeout=local_timeout)


async def _executor_has_timeouts(environment: Environment) -> bool:
    info = await environment.info()
    extensions = getattr(info, "extensions", None)
    return extensions is not None and bool(extensions.process_endings.timeouts)


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
    process: ExecProcess,
    *,
    resize: bool = False,
    controls: Controls | None = None,
    local_timeout: float | None = None,
) -> int:
    """Print the process's output until it closes; returns its exit code (or `DETACHED`), and
    says on stderr why the command ended when it did not simply exit. Raises `ProcessFailed`
    when it can no longer be followed (after restoring the signal handlers).

    `resize`: follow the local terminal's size (SIGWINCH) with `process/resize`.
    `local_timeout`: terminate the command after that long (for an executor without
    server-side timeouts).
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

    timed_out = False

    async def time_out() -> None:
        nonlocal timed_out
        assert local_timeout is not None
        await asyncio.sleep(local_timeout)
        timed_out = True
        await process.terminate()

    loop.add_signal_handler(signal.SIGINT, on_interrupt)
    if resize:
        loop.add_signal_handler(signal.SIGWINCH, on_resize)
    tasks.spawn(quietly(lambda: _forward_stdin(process, keys)))
    if local_timeout is not None:
        tasks.spawn(quietly(time_out))
    printer = tasks.spawn(_print_events(process))
    try:
        await asyncio.wait([printer, stopped], return_when=asyncio.FIRST_COMPLETED)
        if not printer.done():
            return DETACHED
        ending = printer.result()
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        if resize:
            loop.remove_signal_handler(signal.SIGWINCH)
        await tasks.aclose()
    if isinstance(ending, Exception):
        # A lost executor (`ProcessFailed`) or a closed stdout (`BrokenPipeError`): told by
        # `open_target` and `execserver.cli.main`, once the terminal is restored.
        raise ending
    exit_code, termination = ending
    if timed_out:
        say("the command timed out")
        return ExitCode.TIMEOUT
    message, exit_code = describe_ending(termination, exit_code)
    if message is not None and interrupts == 0:
        say(message)
    return exit_code if 0 <= exit_code <= 255 else ExitCode.CONNECTION


async def _print_events(process: ExecProcess) -> tuple[int, Termination | None] | Exception:
    """Write the output to stdout/stderr as it comes; the exit code and termination record
    once the process closed, or what stopped it (`ProcessFailed` when the process can no longer
    be followed, `BrokenPipeError` when our stdout is gone): returned, not raised, since the
    task's owner would log it as a crash."""
    exit_code: int = ExitCode.CONNECTION
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
            elif isinstance(event, OutputGap):
                say(
                    f"[{event.size} bytes of output dropped (seq {event.from_seq} to "
                    f"{event.seq}): over the executor's journal cap]"
                )
    except (ProcessFailed, OSError) as exc:
        return exc
    return exit_code, termination


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
        say("this executor cannot close the command's stdin; it will not see EOF")


__all__ = ["add_parsers", "main"]
