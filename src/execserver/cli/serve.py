"""`execserver serve [--listen ws://IP:PORT | stdio]`.

On a WebSocket bind the server prints exactly one line, the bound URL, to stdout; logs go to
stderr. SIGTERM/SIGINT stop listening, kill every managed process tree and exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import ipaddress
import os
import signal
import sys
import threading
from dataclasses import dataclass

from execserver.local.blocking import FS_WAIT_TIMEOUT_S
from execserver.local.output_log import MAX_RETAINED_OUTPUT_BYTES
from execserver.local.process import MAX_PROCESSES_PER_SESSION
from execserver.observability.setup import ObservabilityError
from execserver.observability.setup import configure as configure_observability
from execserver.server.app import ExecServer, ServerConfig
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

EXIT_ON_STDIN_CLOSE_ENV = "CODEX_EXEC_SERVER_EXIT_ON_STDIN_CLOSE"
REGISTRATION_TOKEN_ENV = "CODEX_API_KEY"


class ListenError(ValueError):
    """An unusable `--listen` value; `str()` is the reference's message."""


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """Either stdio (`host` None) or a WebSocket bind address."""

    host: str | None = None
    port: int = 0

    @property
    def is_stdio(self) -> bool:
        return self.host is None


def parse_listen_url(url: str) -> ListenAddress:
    """Validate `--listen` exactly like the reference: `ws://IP:PORT`, `stdio` or `stdio://`."""
    if url in ("stdio", "stdio://"):
        return ListenAddress()
    if not url.startswith("ws://"):
        raise ListenError(f"unsupported --listen URL `{url}`; expected `ws://IP:PORT` or `stdio`")
    invalid = ListenError(f"invalid websocket --listen URL `{url}`; expected `ws://IP:PORT`")
    rest = url[len("ws://") :]
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
    return ListenAddress(str(address), int(port_text))


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


def format_ws_url(host: str, port: int) -> str:
    return f"ws://[{host}]:{port}" if ":" in host else f"ws://{host}:{port}"


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


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser("serve", help="run the exec-server")
    serve.add_argument("--listen", default="ws://127.0.0.1:0", help="ws://IP:PORT or stdio")
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
        help="sessions on the server, attached or detached; past it a new session replaces "
        "the oldest idle detached one (default %(default)s)",
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
        help="start each process in its own cgroup (v1 pids hierarchy) so terminate and session "
        "expiry also kill setsid daemons and double-forked orphans; costs ~8 ms per spawn "
        "(cgroup migration), so it is off by default",
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
    options = auth_options(args)
    # The reference's order: auth flag combinations, the listen URL, then the files.
    try:
        check_auth_flags(options)
        listen = parse_listen_url(args.listen)
        if listen.is_stdio and options.mode is not None:
            raise AuthConfigError("WebSocket auth requires a WebSocket listener, not stdio")
        authenticator = load_authenticator(options)
        check_exposure(listen, authenticator, allow=args.allow_unauthenticated_remote)
        remote = remote_options(args)
    except (ListenError, AuthConfigError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
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
    config = ServerConfig(
        telemetry=observability.telemetry,
        metrics_page=observability.metrics_page,
        session_ttl_s=args.session_ttl,
        subreaper=True,
        process_cgroups=args.process_cgroups,
        max_sessions=args.max_sessions,
        max_sessions_per_principal=args.max_sessions_per_principal,
        max_processes_per_session=args.max_processes_per_session,
        max_retained_output=args.max_retained_output,
        max_http_streams=args.max_http_streams,
        max_memory=args.max_memory,
        refuse_child_connections=not args.allow_child_connections,
        fs_wait_timeout_s=args.fs_wait_timeout,
        authenticator=authenticator,
    )
    try:
        if remote is not None:
            return asyncio.run(_serve_remote(remote, config))
        return asyncio.run(_serve(listen, config, exit_on_stdin_close=exit_on_stdin_close))
    except OSError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    finally:
        observability.shutdown()  # flush spans and metrics still buffered


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


async def _serve(listen: ListenAddress, config: ServerConfig, *, exit_on_stdin_close: bool) -> int:
    loop = asyncio.get_running_loop()
    _ensure_standard_fds()
    server = ExecServer(config)
    # Everything imported and built so far lives as long as the server: keep it out of every
    # garbage collection (less work per collection on the request path).
    gc.freeze()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.stop)
    try:
        if listen.is_stdio:
            stdio_task = asyncio.ensure_future(server.serve_stdio())
            await server.stopped
            stdio_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stdio_task
        else:
            assert listen.host is not None
            host, port = await server.listen_websocket(listen.host, listen.port)
            sys.stdout.write(format_ws_url(host, port) + "\n")
            sys.stdout.flush()
            if exit_on_stdin_close:
                _watch_stdin(loop, server.stop)
            await server.stopped
    finally:
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
