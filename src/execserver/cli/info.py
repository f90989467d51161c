"""`execserver info [TARGET]`: the executor's environment info, as JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import msgspec

from execserver.cli.targets import add_target_arguments, open_target, target_name
from execserver.errors import ExecServerError
from execserver.protocol.base import enc_hook


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("info", help="describe an executor (JSON)")
    parser.add_argument("target", nargs="?", help="ws:// URL, `local` or an environments.toml id")
    add_target_arguments(parser)
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    args.target_name = target_name(args, parser)
    try:
        text = asyncio.run(_info(args))
    except (ExecServerError, ValueError) as exc:
        print(f"execserver: {exc}", file=sys.stderr)
        return 1
    print(text)
    return 0


async def _info(args: argparse.Namespace) -> str:
    async with open_target(args.target_name, token=args.token) as environment:
        info = await environment.info()
    return json.dumps(json.loads(msgspec.json.encode(info, enc_hook=enc_hook)), indent=2)
