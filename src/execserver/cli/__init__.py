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
import os
import sys

from execserver.cli import cp, info, processes, relay, run, serve, token
from execserver.cli.exit_codes import CliError, ExitCode
from execserver.cli.help import HelpFormatter, add_version_argument
from execserver.cli.serve import ListenAddress, ListenError, parse_listen_url
from execserver.observability.logs import FORMATS, configure_logging


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
    commands = parser.add_subparsers(dest="command", required=True)
    serve.add_parser(commands)
    run.add_parser(commands)
    processes.add_parsers(commands)
    info.add_parser(commands)
    cp.add_parser(commands)
    relay.add_parser(commands)
    token.add_parser(commands)
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


__all__ = ["ListenAddress", "ListenError", "main", "parse_listen_url"]
