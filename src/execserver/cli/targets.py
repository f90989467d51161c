"""Resolve a CLI TARGET (URL, `local`, or an environments.toml id) to an `Environment`."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from execserver.client.environments import EnvironmentsError
from execserver.environment import Environment
from execserver.local.environment import local_environment
from execserver.manager import EnvironmentManager
from execserver.relay.harness import is_relay_url
from execserver.remote import connect_environment

TOKEN_ENV = "EXECSERVER_TOKEN"
# `ws://host:port:/path`, `wss://host/:/path`, `relay+http://host:port/ENV:/path`, `name:/path`
# (an absolute path after the colon).
_REMOTE_PATH = re.compile(
    r"^(wss?://[^/]+?|relay\+https?://[^/]+/[^:]*[^:/]|[A-Za-z0-9_-]+):(/.*)$"
)


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--env", dest="env_name", metavar="NAME", help="an environment id from environments.toml"
    )
    parser.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"bearer token for a ws://, wss:// or relay+http(s):// TARGET (default: ${TOKEN_ENV})",
    )


def target_name(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str | None:
    """The TARGET positional or `--env NAME` (not both)."""
    if args.target is not None and args.env_name is not None:
        parser.error("give either TARGET or --env NAME, not both")
    name: str | None = args.target if args.target is not None else args.env_name
    return name


def is_url(text: str) -> bool:
    return text.startswith(("ws://", "wss://")) or is_relay_url(text)


def split_remote_path(text: str) -> tuple[str | None, str]:
    """`TARGET:/path` -> (TARGET, /path); a plain path -> (None, path)."""
    match = _REMOTE_PATH.match(text)
    if match is None:
        return None, text
    return match.group(1), match.group(2)


@asynccontextmanager
async def open_target(name: str | None, *, token: str | None = None) -> AsyncIterator[Environment]:
    """The environment `name` names (None: the environments.toml default), closed on exit.

    Raises `EnvironmentsError` for unknown names, `ConnectError` when unreachable.
    """
    if name is not None and is_url(name):
        try:
            environment = await connect_environment(name, bearer_token=token)
        except ValueError as exc:  # a relay URL we cannot use
            raise EnvironmentsError(f"{exc} (--token or ${TOKEN_ENV})") from None
    elif name == "local":
        environment = local_environment()
    else:
        manager = EnvironmentManager.load()
        try:
            environment = await manager.get(name)
        except BaseException:
            await manager.aclose()
            raise
        async with manager:
            yield environment
        return
    async with environment:
        yield environment


__all__ = ["EnvironmentsError", "add_target_arguments", "open_target", "split_remote_path"]
