"""TARGETs of the client commands: the arguments, their checks, and the connection.

A TARGET is a `ws://`/`wss://` URL, a `relay+http(s)://REGISTRY/ENVIRONMENT_ID` URL, `local`
(this machine, explicitly), or an environment id from `$CODEX_HOME/environments.toml`. Without
one, the file's `default` is used, but only a default the file states: with no file, or a file
that does not name one, the command refuses rather than silently running here.

Connections made here are the CLI's own: a status line on stderr when the executor is lost and
when it is back (`ConnectionStatus`), `--reconnect-timeout` as the recovery deadline, and at
the end the session is closed on the executor (`session/close`) instead of being left
detached for its resume window.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import re
import ssl
import sys
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from execserver.cli.exit_codes import CliError, ExitCode
from execserver.cli.failures import TargetContext, explain
from execserver.cli.status import ConnectionStatus
from execserver.client.client import ExecServerClient
from execserver.client.environments import (
    LOCAL_ENVIRONMENT_ID,
    EnvironmentsConfig,
    EnvironmentsError,
    RelayEnvironment,
    StdioEnvironment,
    UrlEnvironment,
    default_codex_home,
    environments_path,
    load_environments,
)
from execserver.client.reconnect import ReconnectPolicy
from execserver.environment import Environment
from execserver.errors import ExecServerError
from execserver.relay.harness import is_relay_url, parse_relay_url
from execserver.remote import remote_environment
from execserver.token_files import TokenFileError, read_token_file, token_from_bytes

TOKEN_ENV = "EXECSERVER_TOKEN"
TOKEN_FILE_ENV = "EXECSERVER_TOKEN_FILE"
CACERT_ENV = "EXECSERVER_CACERT"
DEFAULT_RECONNECT_TIMEOUT_S = 20.0
END_SESSION_TIMEOUT_S = 5.0
TARGET_HELP = "ws:// or wss:// URL, relay+http(s)://REGISTRY/ID, `local`, or an environment id"
_URL_PREFIXES = ("ws://", "wss://", "relay+http://", "relay+https://")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# `ws://host:port:/path`, `wss://host/:/path`, `relay+http://host:port/ENV:/path` (an absolute
# path after the colon), and `name:/path` for an environment id.
_REMOTE_URL_PATH = re.compile(r"^(wss?://[^/]+?|relay\+https?://[^/]+/[^:]*[^:/]):(/.*)$")
_REMOTE_ID_PATH = re.compile(r"^([A-Za-z0-9_-]+):(/.*)$")


def add_target_arguments(parser: argparse.ArgumentParser, *, positional: bool = True) -> None:
    if positional:
        parser.add_argument("target", nargs="?", metavar="TARGET", help=TARGET_HELP)
        parser.add_argument(
            "--env",
            dest="env_name",
            metavar="NAME",
            help="an environment id from environments.toml",
        )
    credentials = parser.add_argument_group("connection")
    credentials.add_argument(
        "--token",
        help="bearer token for a URL TARGET (visible in `ps`: prefer --token-file or "
        f"${TOKEN_ENV})",
    )
    credentials.add_argument(
        "--token-file",
        metavar="FILE",
        help=f"read the bearer token from FILE (`-`: one line of stdin); also ${TOKEN_FILE_ENV}",
    )
    credentials.add_argument(
        "--cacert",
        metavar="FILE",
        help=f"trust the CA certificate(s) in FILE for wss:// instead of the system store "
        f"(also ${CACERT_ENV})",
    )
    credentials.add_argument(
        "--reconnect-timeout",
        type=_seconds,
        default=DEFAULT_RECONNECT_TIMEOUT_S,
        metavar="SECONDS",
        help="when the executor is lost, how long to keep trying to resume before giving up",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < 1e9:
        raise argparse.ArgumentTypeError(f"out of range: {text}")
    return value


@dataclass(frozen=True, slots=True)
class TargetOptions:
    token: str | None
    cacert: str | None
    reconnect_timeout_s: float


def target_options(args: argparse.Namespace) -> TargetOptions:
    """The connection options, with the token from its one source: --token, --token-file,
    $EXECSERVER_TOKEN or $EXECSERVER_TOKEN_FILE (first given wins; the two flags exclude each
    other). Raises `CliError` (USAGE) for an unusable token file."""
    if args.token is not None and args.token_file is not None:
        raise CliError("give either --token or --token-file, not both", ExitCode.USAGE)
    token: str | None = args.token
    try:
        if token is None and args.token_file is not None:
            token = _read_token_argument(args.token_file)
        if token is None:
            token = os.environ.get(TOKEN_ENV) or None
        if token is None and os.environ.get(TOKEN_FILE_ENV):
            token = _read_token_argument(os.environ[TOKEN_FILE_ENV])
    except TokenFileError as exc:
        raise CliError(str(exc), ExitCode.USAGE) from None
    cacert = args.cacert or os.environ.get(CACERT_ENV) or None
    return TargetOptions(token, cacert, args.reconnect_timeout)


def _read_token_argument(path: str) -> str:
    if path != "-":
        return read_token_file(path, warn=lambda text: stderr_line(f"warning: {text}"))
    line = bytearray()
    while not line.endswith(b"\n") and len(line) < 64 * 1024:  # byte by byte: leave the rest
        byte = os.read(0, 1)
        if not byte:
            break
        line += byte
    return token_from_bytes(bytes(line), "the first line of stdin")


def target_name(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str | None:
    """The TARGET positional or `--env NAME` (not both)."""
    if args.target is not None and args.env_name is not None:
        parser.error("give either TARGET or --env NAME, not both")
    name: str | None = args.target if args.target is not None else args.env_name
    return name


def is_url(text: str) -> bool:
    return text.startswith(("ws://", "wss://")) or is_relay_url(text)


def check_target(name: str) -> None:
    """Refuse what cannot be a TARGET, with what was probably meant."""
    if is_url(name):
        return
    if _SCHEME.match(name):
        scheme = name.split("://", 1)[0]
        raise CliError(
            f"`{name}`: unsupported scheme `{scheme}://`; a TARGET is ws://HOST:PORT, "
            "wss://HOST:PORT, relay+http(s)://REGISTRY/ID, `local` or an environment id",
            ExitCode.USAGE,
        )


def split_remote_path(text: str) -> tuple[str | None, str]:
    """`TARGET:/path` -> (TARGET, /path); a plain path -> (None, path).

    Raises `CliError` (USAGE) for a URL without the `:/path` part or an unsupported scheme.
    """
    if not text.startswith(_URL_PREFIXES):
        check_target(text)
        match = _REMOTE_ID_PATH.match(text)
        return (None, text) if match is None else (match.group(1), match.group(2))
    match = _REMOTE_URL_PATH.match(text)
    if match is None:
        raise CliError(
            f"`{text}` names an executor but no path: put `:` before the path, as in "
            "ws://HOST:PORT:/tmp/file",
            ExitCode.USAGE,
        )
    return match.group(1), match.group(2)


# -- resolving a TARGET ----------------------------------------------------------------------


def _explicit_default(config: EnvironmentsConfig) -> bool:
    """Whether environments.toml itself names the default (`local` is never implied here)."""
    if config.default is None:
        return False
    if config.default != LOCAL_ENVIRONMENT_ID:
        return True
    path = environments_path(default_codex_home())
    try:
        with open(path, "rb") as file:
            return "default" in tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError):
        return False


def _no_target_error(config: EnvironmentsConfig) -> CliError:
    path = environments_path(default_codex_home())
    where = (
        f"{path} names no default"
        if os.path.exists(path)
        else f"there is no {path} to name a default"
    )
    return CliError(
        f"no TARGET given and {where}: name one (ws://HOST:PORT, an environment id, or "
        "`local` for this machine)",
        ExitCode.USAGE,
    )


def _unknown_id(name: str, config: EnvironmentsConfig, exc: EnvironmentsError) -> CliError:
    path = environments_path(default_codex_home())
    ids = ", ".join(config.ids) or "none"
    return CliError(
        f"{exc}: `{name}` is not a URL (ws://, wss://, relay+http(s)://), nor an id in {path} "
        f"(ids: {ids})",
        ExitCode.USAGE,
    )


Resolved = str | UrlEnvironment | RelayEnvironment | StdioEnvironment
"""A URL, `local`, or the spec of an environments.toml entry."""


def resolve(name: str | None) -> Resolved:
    """What `name` (None: the stated default) designates. Raises `CliError` (USAGE)."""
    if name is not None:
        check_target(name)
        if is_url(name) or name == LOCAL_ENVIRONMENT_ID:
            return name
    try:
        config = load_environments()
    except EnvironmentsError as exc:
        raise CliError(str(exc).rstrip("\n"), ExitCode.USAGE) from None
    if name is None and not _explicit_default(config):
        raise _no_target_error(config)
    try:
        selected = config.select(name)
    except EnvironmentsError as exc:
        raise _unknown_id(name or "", config, exc) from None
    if selected is None:
        raise _no_target_error(config)
    return selected


# -- connecting ------------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _tls_context(url: str, options: TargetOptions) -> ssl.SSLContext | None:
    if options.cacert is None:
        return None  # wss:// uses the system trust store
    if not url.startswith(("wss://", "relay+https://")):
        raise CliError(f"--cacert is for wss:// TARGETs, not `{url}`", ExitCode.USAGE)
    try:
        return ssl.create_default_context(cafile=options.cacert)
    except (OSError, ssl.SSLError) as exc:
        detail = getattr(exc, "strerror", None) or str(exc)
        raise CliError(f"cannot use --cacert {options.cacert}: {detail}", ExitCode.USAGE) from None


def _check_token_transport(url: str, token: str | None) -> None:
    """A token never goes over plain ws:// to another machine (no silent downgrade)."""
    if token is None or not url.startswith("ws://"):
        return
    host = urlsplit(url).hostname or ""
    if not _is_loopback(host):
        raise CliError(
            f"refusing to send a token over plain ws:// to {host}: use wss:// (the server "
            "listens with --listen wss://… --tls-cert … --tls-key …)",
            ExitCode.USAGE,
        )


async def _connect(resolved: Resolved, options: TargetOptions) -> ExecServerClient:
    policy = ReconnectPolicy(deadline_s=options.reconnect_timeout_s)
    if isinstance(resolved, str):
        if is_relay_url(resolved):
            try:
                target = parse_relay_url(resolved, options.token)
            except ValueError as exc:
                raise CliError(f"{exc} (--token-file or ${TOKEN_ENV})", ExitCode.USAGE) from None
            return await ExecServerClient.connect_relay(target, policy=policy)
        _check_token_transport(resolved, options.token)
        return await ExecServerClient.connect(
            resolved,
            bearer_token=options.token,
            policy=policy,
            ssl=_tls_context(resolved, options),
        )
    if isinstance(resolved, RelayEnvironment):
        policy = ReconnectPolicy(
            deadline_s=options.reconnect_timeout_s,
            connect_timeout_s=resolved.connect_timeout_s,
            initialize_timeout_s=resolved.initialize_timeout_s,
        )
        return await ExecServerClient.connect_relay(resolved.target, policy=policy)
    if isinstance(resolved, UrlEnvironment):
        policy = ReconnectPolicy(
            deadline_s=options.reconnect_timeout_s,
            connect_timeout_s=resolved.connect_timeout_s,
            initialize_timeout_s=resolved.initialize_timeout_s,
        )
        return await ExecServerClient.connect(
            resolved.url,
            headers=resolved.http_headers(),
            policy=policy,
            ssl=_tls_context(resolved.url, options),
        )
    return await ExecServerClient.spawn(
        resolved.program,
        resolved.args,
        env=resolved.env,
        cwd=None if resolved.cwd is None else str(resolved.cwd),
        policy=ReconnectPolicy(initialize_timeout_s=resolved.initialize_timeout_s),
    )


def describe(resolved: Resolved) -> str:
    if isinstance(resolved, str):
        return resolved
    if isinstance(resolved, UrlEnvironment):
        return f"{resolved.id} ({resolved.url})"
    return resolved.id


@asynccontextmanager
async def open_target(
    name: str | None, options: TargetOptions, *, end_session: bool = True
) -> AsyncIterator[Environment]:
    """The environment `name` designates, connected; at the end its session is closed on the
    executor (unless `end_session` is False: a command that leaves processes running there)
    and the connection released. Raises `CliError` for anything that prevents it."""
    resolved = resolve(name)
    context = TargetContext(describe(resolved), token_given=options.token is not None)
    if resolved == LOCAL_ENVIRONMENT_ID:
        # Imported here: the local executor is most of the server, which a remote command
        # does not need to load.
        from execserver.local.environment import local_environment

        async with local_environment() as environment:
            try:
                yield environment
            except ExecServerError as exc:
                raise explain(exc, context) from None
        return
    try:
        client = await _connect(resolved, options)
    except ExecServerError as exc:
        raise explain(exc, context) from None
    status = ConnectionStatus(
        context.description,
        options.reconnect_timeout_s,
        resumable=not isinstance(resolved, StdioEnvironment),
    )
    client.add_listener(status)
    environment = remote_environment(client)
    try:
        yield environment
    except ExecServerError as exc:
        raise explain(exc, context) from None
    finally:
        client.remove_listener(status)
        if end_session:
            with contextlib.suppress(ExecServerError, TimeoutError):
                async with asyncio.timeout(END_SESSION_TIMEOUT_S):
                    await environment.end_session()
        await environment.aclose()


def stderr_line(message: str) -> None:
    print(f"execserver: {message}", file=sys.stderr)


__all__ = [
    "TOKEN_ENV",
    "TargetOptions",
    "add_target_arguments",
    "open_target",
    "split_remote_path",
    "target_name",
    "target_options",
]
