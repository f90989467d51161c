"""`execserver ps / attach / kill TARGET …`: processes that outlive the call that started them.

`ps` lists the caller's processes on an executor (handle, state, exit code, start time, bytes of
output, command). `attach HANDLE` replays a process's output (from the start, from a seq, or
only the last N bytes) and follows it to the end, exiting with its exit code; stdin (and with
`-t` the terminal) goes to the process. Ctrl-C detaches (the process runs on); with `-t`, Ctrl-\\
kills it. `kill HANDLE` ends it. Only the principal that started a process can see it.
Exit codes: docs/cli.md (an unknown handle is 1; `attach` exits with the process's code, or 0
once detached).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import shlex
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import msgspec

from execserver.cli.help import HelpFormatter, add_version_argument
from execserver.cli.run import DETACHED, _follow, local_terminal_size
from execserver.cli.status import raw_terminal, say
from execserver.cli.targets import (
    TargetOptions,
    add_target_arguments,
    open_target,
    target_name,
    target_options,
)
from execserver.environment.process import ExecProcess
from execserver.errors import ExecServerError
from execserver.protocol.process_handles import ProcessInfo

CTRL_C = b"\x03"
CTRL_BACKSLASH = b"\x1c"


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ps = commands.add_parser("ps", formatter_class=HelpFormatter)
    _target(ps)
    ps.add_argument("--json", action="store_true", help="one JSON array (docs/protocol.md)")
    ps.set_defaults(handler=ps_main)

    attach = commands.add_parser(
        "attach",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    _target(attach)
    attach.add_argument("handle", help="the handle `run --detach` printed (see `ps`)")
    start = attach.add_mutually_exclusive_group()
    start.add_argument(
        "--from-seq", type=int, default=0, metavar="SEQ", help="replay the events after SEQ"
    )
    start.add_argument(
        "--tail", type=int, metavar="BYTES", help="replay only the last BYTES of output"
    )
    attach.add_argument(
        "-t", "--tty", action="store_true", help="raw local terminal, resized with it"
    )
    attach.set_defaults(handler=attach_main)

    kill = commands.add_parser("kill", formatter_class=HelpFormatter)
    _target(kill)
    kill.add_argument("handle", help="the process's handle (see `ps`)")
    kill.set_defaults(handler=kill_main)


def _target(parser: argparse.ArgumentParser) -> None:
    add_version_argument(parser)
    add_target_arguments(parser)


def _run(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    main: Callable[[str | None, TargetOptions], Coroutine[Any, Any, int]],
) -> int:
    """Errors reach the user through `open_target` and `execserver.cli.main` (one line, the
    exit code of docs/cli.md)."""
    return asyncio.run(main(target_name(args, parser), target_options(args)))


# -- ps -------------------------------------------------------------------------------------------


def ps_main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    async def main(name: str | None, options: TargetOptions) -> int:
        async with open_target(name, options) as environment:
            processes = await environment.process.list_processes()
        if args.json:
            print(json.dumps(json.loads(msgspec.json.encode(processes))))
        else:
            print(format_table(processes), end="")
        return 0

    return _run(args, parser, main)


def format_table(processes: list[ProcessInfo]) -> str:
    """`ps` as text: a header and one line per process, oldest first."""
    rows = [("HANDLE", "STATE", "EXIT", "STARTED", "OUTPUT", "COMMAND")]
    for p in processes:
        started = datetime.datetime.fromtimestamp(p.started_at_ms / 1000).strftime(
            "%Y-%m-%d %H:%M:%S"
        )
        state = p.state + ("*" if p.detached else "")
        exit_code = "-" if p.exit_code is None else str(p.exit_code)
        rows.append((p.handle, state, exit_code, started, str(p.output_bytes), shlex.join(p.argv)))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join([*(row[i].ljust(w) for i, w in enumerate(widths)), row[5]]) for row in rows]
    return "".join(line.rstrip() + "\n" for line in lines)


# -- attach ---------------------------------------------------------------------------------------


class AttachControls:
    """Ctrl-C (a signal, or the byte in raw mode) detaches; Ctrl-\\ in raw mode kills."""

    def __init__(self, process: ExecProcess, *, raw: bool) -> None:
        self._process = process
        self._raw = raw

    def interrupt(self, count: int) -> Callable[[], Awaitable[object]] | None:
        return None

    def keys(self, data: bytes) -> bytes | Callable[[], Awaitable[object]] | None:
        if not self._raw:
            return data
        if CTRL_C in data:
            return None
        if CTRL_BACKSLASH in data:
            return self._process.terminate
        return data


def attach_main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    async def main(name: str | None, options: TargetOptions) -> int:
        async with open_target(name, options) as environment:
            process = await environment.process.attach(
                args.handle, after_seq=args.from_seq, tail_bytes=args.tail
            )
            async with process:  # leaves it running
                if args.tty:
                    size = local_terminal_size()
                    if size is not None:
                        try:
                            await process.resize(*size)
                        except ExecServerError:
                            pass  # not a terminal, or it has exited: nothing to size
                with raw_terminal(args.tty):
                    code = await _follow(
                        process, resize=args.tty, controls=AttachControls(process, raw=args.tty)
                    )
                if code == DETACHED:
                    await process.detach()
                    say(f"detached; {args.handle} runs on")
                    return 0
                return code

    if args.tty and not sys.stdin.isatty():
        parser.error("attach: --tty needs a terminal on stdin")
    return _run(args, parser, main)


# -- kill -----------------------------------------------------------------------------------------


def kill_main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    async def main(name: str | None, options: TargetOptions) -> int:
        async with open_target(name, options) as environment:
            running = await environment.process.kill(args.handle)
        if not running:
            say(f"{args.handle} had already exited")
        return 0

    return _run(args, parser, main)
