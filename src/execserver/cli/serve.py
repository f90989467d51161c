"""`execserver serve [--listen ws://IP:PORT | stdio]`.

On a WebSocket bind the server prints exactly one line, the bound URL, to stdout; logs go to
stderr. SIGTERM/SIGINT stop listening, kill every managed process tree and exit 0. SIGHUP
replaces the server with a fresh image of the installed code, in place (server/upgrade.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import ipaddress
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from execserver import event_loop
from execserver.cli.help import HelpFormatter, add_version_argument
from execserver.event_loop import EventLoopUnavailable, add_event_loop_argument
from execserver.local.blocking import FS_WAIT_TIMEOUT_S
from execserver.local.directory import (
    DETACHED_RETENTION_S,
    MAX_ATTACHERS,
    MAX_DETACHED_PER_PRINCIPAL,
)
from execserver.local.endings import DEFAULT_KILL_GRACE_S
from execserver.local.journal import JOURNAL_BUDGET_BYTES, JOURNAL_MAX_BYTES
from execserver.local.network.options import ExecutorNetworkOptions, parse_tcp_upstream
from execserver.local.output_log import MAX_RETAINED_OUTPUT_BYTES
from execserver.local.process import MAX_PROCESSES_PER_SESSION
from execserver.observability.setup import ObservabilityError
from execserver.observability.setup import configure as configure_observability
from execserver.server.app import ExecServer, ServerConfig

if TYPE_CHECKING:
    from execserver.local.network.relay import HttpProxy
from execserver.server.auth import (
    AUTH_MODES,
    DEFAULT_MAX_CLOCK_SKEW_S,
    AuthConfigError,
    Authenticator,
    AuthOptions,
    check_auth_flags,
    load_authenticator,
)
from execserver.server.handlers.http import MAX_HTTP_STREAMS
from execserver.server.session import (
    DETACHED_SESSION_TTL_S,
    MAX_SESSIONS,
    MAX_SESSIONS_PER_PRINCIPAL,
)
from execserver.server.tls import ReloadingTls, TlsConfigError, load_tls
from execserver.server.upgrade import (
    GENERATION_ENV,
    UPGRADE_CHECK_ENV,
    UPGRADE_FD_ENV,
    ServerHandoff,
    UpgradeFailed,
    Upgrader,
    adopt_listener,
    decode,
    read_fd,
    restore,
)

EXIT_ON_STDIN_CLOSE_ENV = "CODEX_EXEC_SERVER_EXIT_ON_STDIN_CLOSE"
REGISTRATION_TOKEN_ENV = "CODEX_API_KEY"


class ListenError(ValueError):
    """An unusable `--listen` value; `str()` is the reference's message."""


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """Either stdio (`host` None) or a WebSocket bind address."""

    host: str | None = None
    port: int = 0
    tls: bool = False

    @property
    def is_stdio(self) -> bool:
        return self.host is None


def parse_listen_url(url: str) -> ListenAddress:
    """Validate `--listen` like the reference: `ws://IP:PORT`, `stdio` or `stdio://`; and
    `wss://IP:PORT` (deliberate difference `listen_wss_tls`: the reference has no TLS)."""
    if url in ("stdio", "stdio://"):
        return ListenAddress()
    tls = url.startswith("wss://")
    if not url.startswith("ws://") and not tls:
        raise ListenError(f"unsupported --listen URL `{url}`; expected `ws://IP:PORT` or `stdio`")
    scheme = "wss://" if tls else "ws://"
    invalid = ListenError(f"invalid websocket --listen URL `{url}`; expected `{scheme}IP:PORT`")
    rest = url[len(scheme) :]
    if rest.startswith("["):
        host, sep, port_text = rest[1:].partition("]:")
        if not sep:
            raise invalid
        version = 6
    else:
        host, sep, port_text = rest.rpartition(":")
        if not sep:
            raise invalid
        version = 4
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise invalid from None
    if address.version != version or not port_text.isdigit() or int(port_text) > 65535:
        raise invalid
    return ListenAddress(str(address), int(port_text), tls)


def check_exposure(
    listen: ListenAddress, authenticator: Authenticator | None, *, allow: bool
) -> None:
    """Deliberate difference `remote_listen_needs_auth`: no open door on a network address."""
    if listen.is_stdio or authenticator is not None or allow:
        return
    assert listen.host is not None
    if not ipaddress.ip_address(listen.host).is_loopback:
        raise ListenError(
            f"refusing to listen on non-loopback address {listen.host} without --ws-auth: "
            "anyone who can connect could run commands here; configure --ws-auth, or pass "
            "--allow-unauthenticated-remote to accept that"
        )


def format_ws_url(host: str, port: int, *, tls: bool = False) -> str:
    scheme = "wss" if tls else "ws"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _bool_flag(value: str) -> bool:
    if value in ("true", "false"):
        return value == "true"
    raise argparse.ArgumentTypeError(f"invalid value '{value}' (possible values: true, false)")


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid digit found in string: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError("number would be zero for non-zero type")
    return number


_SIZE_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def _byte_size(value: str) -> int:
    """Bytes, optionally with a K, M or G (binary) suffix: `512M`, `2G`."""
    text = value.strip().upper().removesuffix("IB").removesuffix("B")
    unit = text[-1:] if text[-1:] in ("K", "M", "G") else ""
    number = _positive_int(text[: len(text) - len(unit)])
    return number * _SIZE_SUFFIXES[unit]


def _positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError("must be greater than zero")
    return seconds


def _auth_mode(value: str) -> str:
    if value in AUTH_MODES:
        return value
    raise argparse.ArgumentTypeError(
        f"invalid value '{value}' (possible values: {', '.join(AUTH_MODES)})"
    )


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not 0 <= number <= 3600:
        raise argparse.ArgumentTypeError("must be between 0 and 3600 seconds")
    return number


def _tcp_upstream(value: str) -> HttpProxy:
    try:
        return parse_tcp_upstream(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid value {value!r}: {exc}") from None


def _u64(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError("invalid digit found in string")
    number = int(value)
    if number >= 1 << 64:
        raise argparse.ArgumentTypeError("number too large to fit in target type")
    return number


def auth_options(args: argparse.Namespace) -> AuthOptions:
    return AuthOptions(
        mode=args.ws_auth,
        token_file=args.ws_token_file,
        token_sha256=args.ws_token_sha256,
        shared_secret_file=args.ws_shared_secret_file,
        issuer=args.ws_issuer,
        audience=args.ws_audience,
        max_clock_skew_seconds=args.ws_max_clock_skew_seconds,
    )


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser(
        "serve",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    add_version_argument(serve)
    serve.add_argument(
        "--listen",
        default="ws://127.0.0.1:0",
        help="ws://IP:PORT, wss://IP:PORT (TLS: --tls-cert and --tls-key) or stdio",
    )
    serve.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="PEM certificate chain for a wss:// --listen; re-read when it changes",
    )
    serve.add_argument(
        "--tls-key", metavar="FILE", help="PEM private key for --tls-cert; re-read when it changes"
    )
    serve.add_argument(
        "--concurrent-requests",
        type=_positive_int,
        default=1,
        help="accepted for compatibility; requests are always pipelined (see docs/protocol.md)",
    )
    serve.add_argument(
        "--exit-on-stdin-close",
        nargs="?",
        const=True,
        default=None,
        type=_bool_flag,
        help=f"exit when stdin reaches EOF (also ${EXIT_ON_STDIN_CLOSE_ENV}=true)",
    )
    serve.add_argument(
        "--session-ttl",
        type=float,
        default=DETACHED_SESSION_TTL_S,
        metavar="SECONDS",
        help="how long a detached session waits for a resume before its processes are killed",
    )
    serve.add_argument(
        "--max-sessions",
        type=_positive_int,
        default=MAX_SESSIONS,
        help="sessions that hold something (attached, or detached with processes); past it a "
        "new session replaces the oldest idle detached one; as many empty detached sessions "
        "are kept for a resume on top (default %(default)s)",
    )
    serve.add_argument(
        "--max-sessions-per-principal",
        type=_positive_int,
        default=MAX_SESSIONS_PER_PRINCIPAL,
        help="sessions of one authenticated principal (with --ws-auth); past it the "
        "principal's oldest detached session is replaced (default %(default)s)",
    )
    serve.add_argument(
        "--max-processes-per-session",
        type=_positive_int,
        default=MAX_PROCESSES_PER_SESSION,
        help="processes per session, finished ones included until they expire "
        "(default %(default)s)",
    )
    serve.add_argument(
        "--max-retained-output",
        type=_positive_int,
        default=MAX_RETAINED_OUTPUT_BYTES,
        metavar="BYTES",
        help="output retained by all processes together; past it the oldest chunks on the "
        "server are dropped first (default %(default)s)",
    )
    serve.add_argument(
        "--max-http-streams",
        type=_positive_int,
        default=MAX_HTTP_STREAMS,
        help="streamed http/request bodies open at once per connection (default %(default)s)",
    )
    serve.add_argument(
        "--max-memory",
        type=_byte_size,
        default=None,
        metavar="BYTES",
        help="memory requests may make the server hold (whole-file reads, buffered http "
        "bodies, pending stdin: a quarter each); 512M, 2G, ... (default: a quarter of the "
        "machine's or the cgroup's memory, within 256M..16G)",
    )
    serve.add_argument(
        "--fs-wait-timeout",
        type=_positive_seconds,
        default=FS_WAIT_TIMEOUT_S,
        metavar="SECONDS",
        help="how long an fs request waits for a FIFO, socket or device to become ready "
        "before it fails (default %(default)s)",
    )
    serve.add_argument(
        "--process-cgroups",
        action="store_true",
        help=argparse.SUPPRESS,  # the default now; accepted for old command lines
    )
    serve.add_argument(
        "--no-process-cgroups",
        dest="no_process_cgroups",
        action="store_true",
        help="do not give each process its own cgroup: kills then miss setsid daemons and "
        "double-forked orphans, limits are refused and a crash leaves processes running",
    )
    serve.add_argument(
        "--linux-sandbox-transparent-tcp",
        action="store_true",
        help="route managed Linux sandbox TCP through the SOCKS proxy (codex 0.171's flag): "
        "not available here, so every managed-sandbox launch is refused with the transparent "
        "TCP error (docs/protocol.md, networkProxyTransparentTcp)",
    )
    serve.add_argument(
        "--tcp-upstream-proxy",
        type=_tcp_upstream,
        default=None,
        metavar="HOST:PORT",
        help="require this HTTP CONNECT proxy for raw TCP from the managed SOCKS listener",
    )
    add_event_loop_argument(serve)
    serve.add_argument(
        "--kill-grace",
        type=_seconds,
        default=DEFAULT_KILL_GRACE_S,
        metavar="SECONDS",
        help="after a timeoutMs/idleTimeoutMs SIGTERM, how long a process tree has before "
        "SIGKILL (default %(default)s)",
    )
    durable = serve.add_argument_group(
        "processes that outlive their sessions (execserver run --detach, ps, attach; "
        "docs/protocol.md)"
    )
    durable.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where output journals go (default: a private directory under $TMPDIR, removed at "
        "exit)",
    )
    durable.add_argument(
        "--journal-max-bytes",
        type=_positive_int,
        default=JOURNAL_MAX_BYTES,
        metavar="BYTES",
        help="output journaled per process; past it the head and the tail are kept and the "
        "middle is dropped (default %(default)s)",
    )
    durable.add_argument(
        "--journal-budget",
        type=_positive_int,
        default=JOURNAL_BUDGET_BYTES,
        metavar="BYTES",
        help="output journaled by all processes together; past it the oldest segments on the "
        "server are dropped first (default %(default)s)",
    )
    durable.add_argument(
        "--detached-retention",
        type=float,
        default=DETACHED_RETENTION_S,
        metavar="SECONDS",
        help="how long a finished detached process stays listable and attachable "
        "(default %(default)s)",
    )
    durable.add_argument(
        "--max-detached-per-principal",
        type=_positive_int,
        default=MAX_DETACHED_PER_PRINCIPAL,
        help="detached processes per principal, finished ones included until their retention "
        "ends (default %(default)s)",
    )
    durable.add_argument(
        "--max-attachers",
        type=_positive_int,
        default=MAX_ATTACHERS,
        help="sessions attached to one process at once (default %(default)s)",
    )
    serve.add_argument(
        "--metrics",
        action="store_true",
        help="serve Prometheus metrics at /metrics on the WebSocket listener (same auth); "
        "traces and OTLP export follow the OTEL_* variables (docs/observability.md)",
    )
    auth = serve.add_argument_group("websocket authentication (see docs/protocol.md)")
    auth.add_argument("--ws-auth", type=_auth_mode, metavar="MODE", help=" or ".join(AUTH_MODES))
    auth.add_argument("--ws-token-file", metavar="PATH", help="file holding the capability token")
    auth.add_argument("--ws-token-sha256", metavar="HEX", help="SHA-256 of the capability token")
    auth.add_argument(
        "--ws-shared-secret-file", metavar="PATH", help="HS256 secret for signed bearer tokens"
    )
    auth.add_argument("--ws-issuer", metavar="ISSUER", help="required JWT `iss`")
    auth.add_argument("--ws-audience", metavar="AUDIENCE", help="required JWT `aud`")
    auth.add_argument(
        "--ws-max-clock-skew-seconds",
        type=_u64,
        metavar="SECONDS",
        help=f"JWT exp/nbf leeway (default {DEFAULT_MAX_CLOCK_SKEW_S})",
    )
    auth.add_argument(
        "--allow-unauthenticated-remote",
        action="store_true",
        help="listen on a non-loopback address without --ws-auth (anyone who can connect "
        "can run commands)",
    )
    auth.add_argument(
        "--allow-child-connections",
        action="store_true",
        help="let processes this executor started connect to its loopback listener (by "
        "default they are refused with 403, so a command cannot drive its own executor)",
    )
    remote = serve.add_argument_group(
        "remote relay mode: register with an environment registry and serve harnesses through "
        "its rendezvous, end-to-end encrypted (docs/relay.md)"
    )
    remote.add_argument(
        "--remote",
        metavar="URL",
        help="registry base URL (http:// or https://); the executor dials out, nothing listens",
    )
    remote.add_argument("--environment-id", metavar="ID", help="environment id to register")
    remote.add_argument(
        "--remote-transport",
        choices=("noise", "direct"),
        default="noise",
        help="only noise is supported (direct is AWS-only in codex)",
    )
    remote.add_argument("--name", metavar="NAME", help="accepted for compatibility (not sent)")
    remote.add_argument(
        "--registration-bearer-stdin",
        action="store_true",
        help="read the registration bearer as one line from stdin "
        f"(else ${REGISTRATION_TOKEN_ENV})",
    )
    serve.add_argument("--log-level", default=argparse.SUPPRESS, help="log level (stderr)")
    serve.set_defaults(handler=run)


MAX_BEARER_LINE_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class RemoteOptions:
    registry_url: str
    environment_id: str
    token: str


def remote_options(args: argparse.Namespace) -> RemoteOptions | None:
    """The relay-mode settings, or None without `--remote`. Raises `ListenError` (one line for
    the user) when they are incomplete."""
    if args.remote is None:
        if args.environment_id is not None or args.registration_bearer_stdin:
            raise ListenError("--environment-id and --registration-bearer-stdin need --remote")
        return None
    if not args.remote.startswith(("http://", "https://")):
        raise ListenError(f"--remote must be an http:// or https:// URL, got `{args.remote}`")
    if args.remote_transport != "noise":
        raise ListenError("--remote-transport direct is not supported (AWS SigV4 only)")
    environment_id = (args.environment_id or "").strip()
    if not environment_id:
        raise ListenError("--remote needs --environment-id")
    if args.registration_bearer_stdin:
        line = sys.stdin.buffer.readline(MAX_BEARER_LINE_BYTES + 1)
        if len(line) > MAX_BEARER_LINE_BYTES:
            raise ListenError("the registration bearer on stdin is longer than 16 KiB")
        token = line.decode("utf-8", "replace").strip()
    else:
        token = os.environ.get(REGISTRATION_TOKEN_ENV, "").strip()
    if not token:
        raise ListenError(
            f"no registration bearer: pass --registration-bearer-stdin or set "
            f"${REGISTRATION_TOKEN_ENV}"
        )
    return RemoteOptions(args.remote, environment_id, token)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if UPGRADE_CHECK_ENV in os.environ:  # the check child of an upgrade in place
        from execserver.server.upgrade import check

        return check(int(os.environ[UPGRADE_CHECK_ENV]))
    handoff = None
    generation = int(os.environ.pop(GENERATION_ENV, "0"))  # not for the children
    if UPGRADE_FD_ENV in os.environ:  # the new image of an upgrade in place
        try:
            handoff = decode(read_fd(int(os.environ.pop(UPGRADE_FD_ENV))))
        except UpgradeFailed as exc:
            print(f"Error: {exc}", file=sys.stderr)
            return 1
    options = auth_options(args)
    warnings: list[str] = []
    # The reference's order: auth flag combinations, the listen URL, then the files.
    try:
        check_auth_flags(options)
        listen = parse_listen_url(args.listen)
        if listen.is_stdio and options.mode is not None:
            raise AuthConfigError("WebSocket auth requires a WebSocket listener, not stdio")
        authenticator = load_authenticator(options, warn=warnings.append)
        check_exposure(listen, authenticator, allow=args.allow_unauthenticated_remote)
        tls = _tls(listen, args)
        remote = remote_options(args)
        loop_factory = event_loop.loop_factory(args.event_loop)
    except (ListenError, AuthConfigError, TlsConfigError, EventLoopUnavailable) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    for warning in warnings:
        print(f"Warning: {warning}", file=sys.stderr)
    exit_on_stdin_close = args.exit_on_stdin_close
    if exit_on_stdin_close is None:
        env_value = os.environ.get(EXIT_ON_STDIN_CLOSE_ENV)
        if env_value is not None and env_value not in ("true", "false"):
            parser.error(
                f"invalid value '{env_value}' for '--exit-on-stdin-close' "
                "(possible values: true, false)"
            )
        exit_on_stdin_close = env_value == "true"
    try:
        observability = configure_observability(metrics_page=args.metrics)
    except ObservabilityError as exc:
        parser.error(str(exc))
    state_dir, own_state_dir = args.state_dir, False
    if handoff is not None:
        state_dir, own_state_dir = handoff.state_dir, handoff.own_state_dir
    elif state_dir is None:  # created on the first journal spill, if ever
        name = f"execserver-state-{os.getpid()}-{secrets.token_hex(6)}"
        state_dir, own_state_dir = os.path.join(tempfile.gettempdir(), name), True
    config = ServerConfig(
        state_dir=state_dir,
        journal_max_bytes=args.journal_max_bytes,
        journal_budget_bytes=args.journal_budget,
        detached_retention_s=args.detached_retention,
        max_detached_per_principal=args.max_detached_per_principal,
        max_attachers=args.max_attachers,
        telemetry=observability.telemetry,
        metrics_page=observability.metrics_page,
        session_ttl_s=args.session_ttl,
        subreaper=True,
        process_cgroups=not args.no_process_cgroups,
        kill_grace_s=args.kill_grace,
        max_sessions=args.max_sessions,
        max_sessions_per_principal=args.max_sessions_per_principal,
        max_processes_per_session=args.max_processes_per_session,
        max_retained_output=args.max_retained_output,
        max_http_streams=args.max_http_streams,
        max_memory=args.max_memory,
        refuse_child_connections=not args.allow_child_connections,
        fs_wait_timeout_s=args.fs_wait_timeout,
        authenticator=authenticator,
        network=ExecutorNetworkOptions(
            transparent_tcp=args.linux_sandbox_transparent_tcp,
            tcp_upstream=args.tcp_upstream_proxy,
        ),
    )
    try:
        if remote is not None:
            return event_loop.run(_serve_remote(remote, config), loop_factory)
        upgrade = UpgradeOptions(handoff, state_dir, own_state_dir, generation)
        return event_loop.run(
            _serve(
                listen, config, exit_on_stdin_close=exit_on_stdin_close, tls=tls, upgrade=upgrade
            ),
            loop_factory,
        )
    except OSError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    finally:
        observability.shutdown()  # flush spans and metrics still buffered
        if own_state_dir and state_dir is not None:
            shutil.rmtree(state_dir, ignore_errors=True)


async def _serve_remote(remote: RemoteOptions, config: ServerConfig) -> int:
    """Relay mode: no listener; registered and dialled out until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    _ensure_standard_fds()
    server = ExecServer(config)
    gc.freeze()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.stop)
    relay = asyncio.ensure_future(
        server.serve_relay(remote.registry_url, remote.environment_id, remote.token)
    )
    try:
        await asyncio.wait([relay, server.stopped], return_when=asyncio.FIRST_COMPLETED)
        if relay.done() and not relay.cancelled() and relay.exception() is not None:
            print(f"Error: {relay.exception()}", file=sys.stderr)
            return 1
        return 0
    finally:
        relay.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await relay
        await server.aclose()


@dataclass(frozen=True, slots=True)
class UpgradeOptions:
    handoff: ServerHandoff | None
    """What the previous image handed over (None: a fresh start)."""
    state_dir: str | None
    own_state_dir: bool
    generation: int = 0


def _tls(listen: ListenAddress, args: argparse.Namespace) -> ReloadingTls | None:
    if listen.tls:
        return load_tls(args.tls_cert, args.tls_key)
    if args.tls_cert is not None or args.tls_key is not None:
        raise TlsConfigError("--tls-cert and --tls-key need a wss:// --listen")
    return None


async def _serve(
    listen: ListenAddress,
    config: ServerConfig,
    *,
    exit_on_stdin_close: bool,
    tls: ReloadingTls | None = None,
    upgrade: UpgradeOptions | None = None,
) -> int:
    loop = asyncio.get_running_loop()
    _ensure_standard_fds()
    server = ExecServer(config)
    handoff = upgrade.handoff if upgrade is not None else None
    if handoff is not None:
        restore(server, handoff)  # before the loop runs anything: children's statuses wait
    upgrader = Upgrader(
        server,
        state_dir=upgrade.state_dir if upgrade is not None else config.state_dir,
        own_state_dir=upgrade.own_state_dir if upgrade is not None else False,
        generation=upgrade.generation if upgrade is not None else 0,
    )
    # Everything imported and built so far lives as long as the server: keep it out of every
    # garbage collection (less work per collection on the request path).
    gc.freeze()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.stop)
    upgrader.install()
    try:
        if listen.is_stdio:
            stdio_task = asyncio.ensure_future(server.serve_stdio())
            await server.stopped
            stdio_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stdio_task
        else:
            assert listen.host is not None
            context = None if tls is None else tls.context
            if handoff is not None:
                # The URL was printed by the first image.
                await adopt_listener(server, handoff, tls=context)
            else:
                host, port = await server.listen_websocket(listen.host, listen.port, tls=context)
                sys.stdout.write(format_ws_url(host, port, tls=tls is not None) + "\n")
                sys.stdout.flush()
            if exit_on_stdin_close:
                _watch_stdin(loop, server.stop)
            await server.stopped
    finally:
        await upgrader.aclose()
        await server.aclose()
    return 0


def _watch_stdin(loop: asyncio.AbstractEventLoop, on_eof: object) -> None:
    """Call `on_eof` on the loop when our stdin reaches EOF (parent went away)."""

    def wait_for_eof() -> None:
        with contextlib.suppress(OSError):
            while os.read(0, 65536):
                pass
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(on_eof)  # type: ignore[arg-type]

    threading.Thread(target=wait_for_eof, name="stdin-eof", daemon=True).start()


def _ensure_standard_fds() -> None:
    # Children get their stdio through dup2 onto 0-2; a closed standard fd could be reused by one
    # of our pipes and then be dup2'ed onto itself, which would leave it close-on-exec.
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)
