"""Command line.

    execserver serve [--listen ws://IP:PORT | stdio]     run the exec-server
    execserver run [TARGET] [--env NAME] [-t] [-d] -- ARGV…   run a command on an executor
    execserver ps [TARGET]                               list your processes there
    execserver attach [TARGET] HANDLE [-t]               replay and follow one (Ctrl-C detaches)
    execserver kill [TARGET] HANDLE                      end one
    execserver info [TARGET] [--env NAME]                describe an executor
    execserver cp SRC DST                                copy a file; either side TARGET:/path
    execserver relay [--listen IP:PORT] [--public-url URL]  run the relay (registry + rendezvous)

A TARGET is a `ws://`/`wss://` URL, `local`, or an id from `$CODEX_HOME/environments.toml`;
without one, the file's default environment is used.
"""

from __future__ import annotations

import argparse
import os
import sys

from execserver.cli import cp, info, processes, relay, run, serve
from execserver.cli.serve import ListenAddress, ListenError, parse_listen_url
from execserver.observability.logs import FORMATS, configure_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="execserver",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("EXECSERVER_LOG", "warning"),
        help="debug, info (lifecycle lines), warning (default) or error",
    )
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default=os.environ.get("EXECSERVER_LOG_FORMAT", "text"),
        help="stderr log lines as text (default) or one JSON object per line",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve.add_parser(commands)
    run.add_parser(commands)
    processes.add_parsers(commands)
    info.add_parser(commands)
    cp.add_parser(commands)
    relay.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
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


__all__ = ["ListenAddress", "ListenError", "main", "parse_listen_url"]
