"""Command line.

    execserver serve [--listen ws://IP:PORT | wss://IP:PORT | stdio]   run the exec-server
    execserver run [TARGET] [--env NAME] [-t] [-d] -- ARGV…   run a command on an executor
    execserver ps [TARGET]                               list your processes there
    execserver attach [TARGET] HANDLE [-t]               replay and follow one (Ctrl-C detaches)
    execserver kill [TARGET] HANDLE                      end one
    execserver info [TARGET] [--env NAME]                describe an executor
    execserver cp [-p] SRC DST                           copy a file; either side TARGET:/path
    execserver relay [--listen IP:PORT] [--public-url URL]  run the relay (registry + rendezvous)
    execserver token new [--out FILE]                    make a capability token

A TARGET is a `ws://`/`wss://` URL, `relay+http(s)://REGISTRY/ID`, `local` (this machine), or
an id from `$CODEX_HOME/environments.toml`; without one, the default that file names.
Exit codes (one table for every client command): docs/cli.md.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

from execserver.cli.exit_codes import CliError, ExitCode
from execserver.cli.help import HelpFormatter, add_version_argument
from execserver.observability.logs import FORMATS, LEVELS, configure_logging

# Each command: the module whose `add_parsers` defines it (and whose handler runs it), and its
# line in `execserver --help`. Only the chosen command's module is imported: `run` does not
# load the server, nor `serve` the client.
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("execserver.cli.serve", "run the exec-server"),
    "run": ("execserver.cli.run", "run a command on an executor"),
    "ps": ("execserver.cli.processes", "list your processes on an executor"),
    "attach": (
        "execserver.cli.processes",
        "replay and follow a process's output (Ctrl-C detaches)",
    ),
    "kill": ("execserver.cli.processes", "end a process (its whole tree)"),
    "info": ("execserver.cli.info", "describe an executor (JSON)"),
    "cp": ("execserver.cli.cp", "copy a file to, from or between executors"),
    "relay": ("execserver.cli.relay", "run the environment registry and rendezvous (relay mode)"),
    "token": ("execserver.cli.token", "make a capability token (or show its SHA-256)"),
}


if TYPE_CHECKING:
    _SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]
else:  # not subscriptable at run time
    _SubParsers = argparse._SubParsersAction


class _Commands(_SubParsers):
    """The subcommands, listed from `COMMANDS`; a command's real parser is built (its module
    imported) when it is chosen."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unloaded: set[str] = set()

    def add_placeholder(self, name: str, help: str) -> None:
        super().add_parser(name, help=help)
        self._unloaded.add(name)

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        if name not in self._unloaded:
            return super().add_parser(name, **kwargs)
        # The real parser of a listed command takes the placeholder's place (and keeps its
        # line in the listing).
        self._unloaded.discard(name)
        kwargs.setdefault("prog", f"{self._prog_prefix} {name}")
        parser: argparse.ArgumentParser = self._parser_class(**kwargs)
        self._name_parser_map[name] = parser
        return parser

    def load(self, name: str) -> None:
        if name in self._unloaded:
            importlib.import_module(COMMANDS[name][0]).add_parsers(self)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        self.load(values[0])
        super().__call__(parser, namespace, values, option_string)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="execserver", description=__doc__, formatter_class=HelpFormatter
    )
    add_version_argument(parser)
    parser.add_argument(
        "--log-level",
        default=os.environ.get("EXECSERVER_LOG", "warning"),
        help="debug, info (lifecycle lines), warning or error ($EXECSERVER_LOG)",
    )
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default=os.environ.get("EXECSERVER_LOG_FORMAT", "text"),
        help="stderr log lines as text or one JSON object per line ($EXECSERVER_LOG_FORMAT)",
    )
    commands = parser.add_subparsers(dest="command", required=True, action=_Commands)
    assert isinstance(commands, _Commands)
    for name, (_, line) in COMMANDS.items():
        commands.add_placeholder(name, line)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; never a traceback for Ctrl-C, a closed stdout or our own errors."""
    try:
        code = _main(sys.argv[1:] if argv is None else argv)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except CliError as exc:
        print(f"execserver: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        _drop_stdout()
        return ExitCode.BROKEN_PIPE
    return code


def _main(argv: list[str]) -> int:
    parser = build_parser()
    # Everything after the first `--` is the remote command (`run`), untouched by argparse.
    command: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, command = argv[:split], argv[split + 1 :]
    args = parser.parse_args(argv)
    args.command_argv = command
    # Checked here, not by argparse's choices: the defaults come from the environment.
    args.log_level = args.log_level.lower()
    for option, value, allowed in (
        ("--log-level", args.log_level, LEVELS),
        ("--log-format", args.log_format, FORMATS),
    ):
        if value not in allowed:
            parser.error(
                f"argument {option}: invalid choice: {value!r} (choose from {', '.join(allowed)})"
            )
    configure_logging(args.log_level, args.log_format)
    code: int = args.handler(args, parser)
    return code


def _drop_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


__all__ = ["COMMANDS", "build_parser", "main"]
