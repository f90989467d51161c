"""`execserver info [TARGET]`: the executor's environment info, as JSON."""

from __future__ import annotations

import argparse
import asyncio
import json

import msgspec

from execserver.cli.help import HelpFormatter, add_version_argument
from execserver.cli.targets import (
    TargetOptions,
    add_target_arguments,
    open_target,
    target_name,
    target_options,
)
from execserver.protocol.base import enc_hook


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "info",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    add_version_argument(parser)
    add_target_arguments(parser)
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    name = target_name(args, parser)
    text = asyncio.run(_info(name, target_options(args)))
    print(text)
    return 0


async def _info(name: str | None, options: TargetOptions) -> str:
    async with open_target(name, options) as environment:
        info = await environment.info()
    return json.dumps(json.loads(msgspec.json.encode(info, enc_hook=enc_hook)), indent=2)
