"""`execserver relay --listen IP:PORT …`: the environment registry and rendezvous service.

Codex executors (`codex exec-server --remote URL --environment-id ID`, bearer from
`CODEX_API_KEY`) register with it and dial out to it; harnesses (`codex app-server` with
`CODEX_EXEC_SERVER_NOISE_REGISTRY_URL=URL`, `…_ENVIRONMENT_ID=ID`, `…_AUTH_TOKEN=TOKEN`)
connect through it. The first line on stdout is that URL (`http://IP:PORT`, the real port
when 0 was asked); logs go to stderr. SIGTERM/SIGINT close every socket (1001) and exit 0.

Token files: one bearer token per line (`#` comments and blank lines ignored), or
`sha256:<hex>` to keep only the token's digest on disk. A role without a file accepts any
bearer, which only a loopback listener allows unless --allow-unauthenticated is given.
/metrics takes a --metrics-token-file token, or else an executor token.

Scopes file (TOML, or JSON when named *.json): with one, a token may use only the
environment ids its entries match (fnmatch globs); a token without an entry may use none.

    [[scope]]
    token_sha256 = "<sha256 hex of the token>"   # or: token = "<the token>"
    environments = ["team-a-*", "shared"]

Fleet: with --nats nats://HOST:PORT[,…] this process is one node of a fleet. Every node
shares the registrations, authorizations and node heartbeats in NATS JetStream key-value
buckets and forwards frames between nodes over NATS subjects; give every node the same
--ticket-secret-file and --public-url (the load balancer in front of the nodes), and each
its own --advertise-url (where it is dialled directly) so that harnesses land on the node
holding their executor.

Restarts: tickets in rendezvous URLs are HMAC-signed with a secret that is random per
process unless --ticket-secret-file or --state-dir keeps it. With --state-dir the
registrations are kept there too, so after a restart the executors' reconnects (same URL)
are accepted without registering again; without it they are refused with 401/410 and the
executors register again. Harnesses reconnect through /connect either way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import ipaddress
import secrets
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from execserver import event_loop
from execserver.cli.help import HelpFormatter, add_version_argument
from execserver.event_loop import EventLoopUnavailable, add_event_loop_argument
from execserver.relay.service.access import AccessConfigError, AccessPolicy, Role, Scopes, TokenSet
from execserver.relay.service.collector import (
    FULL_INTERVAL_S,
    CollectorProbe,
    CollectorTuning,
)
from execserver.relay.service.defaults import (
    AUTHORIZATION_TTL_S,
    CONNECT_WAIT_S,
    EXECUTOR_TICKET_TTL_S,
    FIRST_CONNECT_TIMEOUT_S,
    HARNESS_STALL_S,
    HARNESS_TICKET_TTL_S,
    MAX_STREAMS_PER_EXECUTOR,
    OUTBOX_LIMIT_BYTES,
)
from execserver.relay.service.memory_state import MemoryRelayState
from execserver.relay.service.state import StateError
from execserver.relay.service.tickets import load_secret_file, state_dir_secret
from execserver.tasks import TaskOwner

if TYPE_CHECKING:  # the web stack is loaded only when the relay runs
    from execserver.relay.service.app import RelayConfig, RelayServer
    from execserver.relay.service.metrics import RelayMetrics

SNAPSHOT_FILE_NAME = "registrations.json"


class RelayConfigError(ValueError):
    """An unusable flag or file; printed as `Error: …` with exit status 1."""


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` or `[IPv6]:PORT` (an optional `http://` prefix is ignored); HOST is an IP.

    Raises:
        RelayConfigError: anything else.
    """
    text = value.removeprefix("http://")
    invalid = RelayConfigError(f"invalid --listen `{value}`; expected IP:PORT or [IPv6]:PORT")
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise invalid
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise invalid from None
    if (address.version == 6) != text.startswith("["):
        raise invalid
    return str(address), int(port)


def parse_public_url(value: str) -> str:
    """The rendezvous base for `--public-url`: `http(s)://` becomes `ws(s)://`, no trailing `/`.

    Raises:
        RelayConfigError: not an absolute http/https/ws/wss URL without query or fragment.
    """
    parts = urlsplit(value)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc or parts.query or parts.fragment:
        raise RelayConfigError(
            f"invalid --public-url `{value}`; expected http(s):// or ws(s)://HOST[:PORT][/PATH]"
        )
    return f"{scheme}://{parts.netloc}{parts.path}".rstrip("/")


def parse_node_id(value: str) -> str:
    """`--node-id`: 1-64 of `A-Z a-z 0-9 _ -` (it names a NATS subject).

    Raises:
        RelayConfigError: anything else.
    """
    from execserver.relay.service.nodes import NODE_ID_PATTERN

    if not NODE_ID_PATTERN.fullmatch(value):
        raise RelayConfigError(f"invalid --node-id `{value}`; expected 1-64 of A-Za-z0-9_-")
    return value


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not number > 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return number


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {value!r}")
    return int(value)


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    relay = commands.add_parser(
        "relay",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    add_version_argument(relay)
    relay.add_argument("--listen", default="127.0.0.1:0", help="IP:PORT (default %(default)s)")
    add_event_loop_argument(relay)
    relay.add_argument(
        "--public-url",
        metavar="URL",
        help="base of the rendezvous URLs handed out (default: ws://LISTEN-ADDRESS)",
    )
    auth = relay.add_argument_group("authentication")
    auth.add_argument(
        "--executor-token-file", metavar="PATH", help="bearer tokens that may register/validate"
    )
    auth.add_argument("--harness-token-file", metavar="PATH", help="bearer tokens that may connect")
    auth.add_argument(
        "--scopes-file",
        metavar="PATH",
        help="TOML/JSON mapping tokens to the environment ids (globs) they may use",
    )
    auth.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="listen on a non-loopback address although a role has no token file",
    )
    persistence = relay.add_argument_group("restarts")
    persistence.add_argument(
        "--state-dir",
        metavar="DIR",
        help="keep the ticket secret and the registrations here across restarts",
    )
    persistence.add_argument(
        "--ticket-secret-file",
        metavar="PATH",
        help="ticket HMAC secret (≥ 32 bytes; share it between nodes); overrides --state-dir's",
    )
    fleet = relay.add_argument_group("fleet (NATS)")
    fleet.add_argument(
        "--nats",
        metavar="URLS",
        help="comma-separated nats:// URLs of the NATS cluster; this process becomes one node",
    )
    fleet.add_argument(
        "--nats-replicas",
        type=_positive_int,
        metavar="N",
        help="replicas of the key-value buckets when this node creates them "
        "(default: 3 when three or more URLs are given, else 1)",
    )
    fleet.add_argument(
        "--nats-connect-timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="how long a node tries to reach NATS at start-up before it exits 1; after that "
        f"it reconnects forever (default {FIRST_CONNECT_TIMEOUT_S:g})",
    )
    fleet.add_argument(
        "--advertise-url",
        metavar="URL",
        help="this node's own ws(s):// base; harnesses of executors held here are sent to it",
    )
    fleet.add_argument(
        "--node-id",
        metavar="ID",
        help="this node's id in logs, metrics and NATS subjects (default: random)",
    )
    relay.add_argument(
        "--metrics",
        action="store_true",
        help="serve Prometheus text at /metrics (bearer: --metrics-token-file, else an "
        "executor token)",
    )
    relay.add_argument("--metrics-token-file", metavar="PATH", help="bearer tokens for /metrics")
    limits = relay.add_argument_group("limits (seconds, counts, bytes)")
    limits.add_argument(
        "--executor-ticket-ttl", type=_positive_float, default=EXECUTOR_TICKET_TTL_S
    )
    limits.add_argument("--harness-ticket-ttl", type=_positive_float, default=HARNESS_TICKET_TTL_S)
    limits.add_argument("--authorization-ttl", type=_positive_float, default=AUTHORIZATION_TTL_S)
    limits.add_argument(
        "--connect-wait",
        type=_positive_float,
        default=CONNECT_WAIT_S,
        help="how long /connect waits for a disconnected executor (default %(default)s)",
    )
    limits.add_argument(
        "--max-streams-per-executor", type=_positive_int, default=MAX_STREAMS_PER_EXECUTOR
    )
    limits.add_argument(
        "--outbound-buffer-bytes",
        type=_positive_int,
        default=OUTBOX_LIMIT_BYTES,
        help="per-socket queue cap; while a harness is past it the executor's socket waits "
        "(default %(default)s)",
    )
    relay.add_argument(
        "--harness-stall-timeout",
        type=float,
        default=HARNESS_STALL_S,
        metavar="SECONDS",
        help="a harness that leaves its queue full this long is closed with 1013 and its stream "
        "reset (default %(default)s)",
    )
    relay.add_argument(
        "--no-gc-freeze",
        dest="gc_freeze",
        action="store_false",
        help="leave Python's garbage collector as it is (by default the relay freezes "
        "long-lived objects out of its collections each second and collects everything every "
        "10 minutes: shorter pauses with thousands of executors)",
    )
    relay.add_argument(
        "--gc-full-interval",
        type=_positive_float,
        default=FULL_INTERVAL_S,
        metavar="SECONDS",
        help="with the freeze: how often everything, frozen objects too, is collected (one "
        "pause as long as without the freeze; default %(default)s)",
    )
    relay.add_argument("--log-level", default=argparse.SUPPRESS, help="log level (stderr)")
    relay.set_defaults(handler=run)


def _tokens(path: str | None) -> TokenSet | None:
    return None if path is None else TokenSet.load(Path(path))


@dataclass(frozen=True, slots=True)
class FleetSettings:
    servers: list[str]
    replicas: int
    connect_timeout_s: float = FIRST_CONNECT_TIMEOUT_S


def parse_nats(value: str) -> list[str]:
    """The NATS URLs of `--nats` (comma-separated `nats://`, `tls://` or `ws(s)://`).

    Raises:
        RelayConfigError: an empty list or a URL without scheme or host.
    """
    urls = [url.strip() for url in value.split(",") if url.strip()]
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("nats", "tls", "ws", "wss") or not parts.hostname:
            raise RelayConfigError(f"invalid --nats URL `{url}`; expected nats://HOST:PORT")
    if not urls:
        raise RelayConfigError("--nats needs at least one nats://HOST:PORT URL")
    return urls


def build_fleet(args: argparse.Namespace) -> FleetSettings | None:
    """The fleet settings of `--nats …`, or None for a single relay.

    Raises:
        RelayConfigError: fleet flags without --nats, or a fleet without a shared secret.
    """
    if args.nats is None:
        for flag, value in (
            ("--nats-replicas", args.nats_replicas),
            ("--nats-connect-timeout", args.nats_connect_timeout),
        ):
            if value is not None:
                raise RelayConfigError(f"{flag} needs --nats")
        return None
    servers = parse_nats(args.nats)
    if args.ticket_secret_file is None:
        raise RelayConfigError(
            "a fleet needs one ticket secret on every node: pass --ticket-secret-file"
        )
    if args.state_dir is not None:
        raise RelayConfigError("--state-dir is for a single relay; a fleet keeps its state in NATS")
    replicas = args.nats_replicas or (3 if len(servers) >= 3 else 1)
    timeout = args.nats_connect_timeout or FIRST_CONNECT_TIMEOUT_S
    return FleetSettings(servers, replicas, timeout)


def build_config(args: argparse.Namespace) -> tuple[str, int, RelayConfig, Path | None]:
    """(host, port, config, snapshot path) from the flags; reads the files.

    Raises:
        RelayConfigError, AccessConfigError: a flag or file is unusable.
    """
    host, port = parse_listen(args.listen)
    executor_tokens = _tokens(args.executor_token_file)
    harness_tokens = _tokens(args.harness_token_file)
    metrics_tokens = _tokens(args.metrics_token_file) or executor_tokens
    scopes = None if args.scopes_file is None else Scopes.load(Path(args.scopes_file))
    open_roles = [
        name
        for name, tokens in (("executor", executor_tokens), ("harness", harness_tokens))
        if tokens is None
    ]
    if open_roles and not ipaddress.ip_address(host).is_loopback and not args.allow_unauthenticated:
        raise RelayConfigError(
            f"refusing to listen on non-loopback address {host} without "
            f"--{open_roles[0]}-token-file: anyone who can connect could use the relay; "
            "give the token files, or pass --allow-unauthenticated to accept that"
        )
    state_dir = None if args.state_dir is None else Path(args.state_dir)
    try:
        if args.ticket_secret_file is not None:
            secret = load_secret_file(Path(args.ticket_secret_file))
        elif state_dir is not None:
            secret = state_dir_secret(state_dir)
        else:
            secret = secrets.token_bytes(32)  # tickets die with the process
    except (OSError, ValueError) as exc:
        raise RelayConfigError(str(exc)) from None
    from execserver.relay.service.app import RelayConfig

    config = RelayConfig(
        ticket_secret=secret,
        access=AccessPolicy(
            tokens={
                Role.EXECUTOR: executor_tokens,
                Role.HARNESS: harness_tokens,
                Role.METRICS: metrics_tokens,
            },
            scopes=scopes,
        ),
        public_url=None if args.public_url is None else parse_public_url(args.public_url),
        metrics=args.metrics,
        executor_ticket_ttl_s=args.executor_ticket_ttl,
        harness_ticket_ttl_s=args.harness_ticket_ttl,
        authorization_ttl_s=args.authorization_ttl,
        connect_wait_s=args.connect_wait,
        max_streams_per_executor=args.max_streams_per_executor,
        outbox_limit_bytes=args.outbound_buffer_bytes,
        harness_stall_s=args.harness_stall_timeout,
        advertise_url=None if args.advertise_url is None else parse_public_url(args.advertise_url),
    )
    if args.node_id is not None:
        config = dataclasses.replace(config, node_id=parse_node_id(args.node_id))
    snapshot = None if state_dir is None else state_dir / SNAPSHOT_FILE_NAME
    return host, port, config, snapshot


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        host, port, config, snapshot = build_config(args)
        fleet = build_fleet(args)
        state = None if fleet is not None else MemoryRelayState(snapshot_path=snapshot)
        loop_factory = event_loop.loop_factory(args.event_loop)
    except (RelayConfigError, AccessConfigError, ValueError, EventLoopUnavailable) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    try:
        gc_full_interval = args.gc_full_interval if args.gc_freeze else None
        return event_loop.run(
            _serve(host, port, config, state, fleet, gc_full_interval=gc_full_interval),
            loop_factory,
        )
    except (OSError, StateError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1


async def _serve(
    host: str,
    port: int,
    config: RelayConfig,
    state: MemoryRelayState | None,
    fleet: FleetSettings | None,
    *,
    gc_full_interval: float | None = FULL_INTERVAL_S,
) -> int:
    """Run one node until SIGTERM/SIGINT; `gc_full_interval`: None leaves the collector
    alone, else the seconds between collections of everything (`CollectorTuning`)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    from execserver.relay.service.app import RelayServer
    from execserver.relay.service.metrics import RelayMetrics

    metrics = RelayMetrics()
    async with contextlib.AsyncExitStack() as stack:
        if fleet is None:
            assert state is not None
            stack.push_async_callback(state.aclose)
            server = RelayServer(config, state, metrics=metrics)
        else:
            server = await _join_fleet(stack, config, fleet, metrics)
        stack.push_async_callback(server.aclose)
        url = await server.start(host, port)
        sys.stdout.write(url + "\n")
        sys.stdout.flush()
        probe = server.collector = CollectorProbe(metrics)
        probe.install()
        stack.callback(probe.remove)
        if gc_full_interval is not None:
            # Start-up's objects and each attached executor's are long-lived: keep them out of
            # the full collections (docs/SCALING.md).
            tasks = TaskOwner("relay garbage collection")
            stack.push_async_callback(tasks.aclose)
            tasks.spawn(CollectorTuning(full_interval_s=gc_full_interval).run())
        await stop.wait()
    return 0


async def _join_fleet(
    stack: contextlib.AsyncExitStack,
    config: RelayConfig,
    fleet: FleetSettings,
    metrics: RelayMetrics,
) -> RelayServer:
    """Connect to NATS twice, open the shared state and the node directory (each closed by
    `stack`), and build this node's server.

    The control connection carries the shared state, the heartbeats and the watches; the data
    connection the fleet's frames. On one connection a cross-node flood queued heartbeats, their
    acknowledgements and the watches' deliveries behind megabytes of frames (2-5 s per
    heartbeat, watches silent for up to 34 s, nodes declared dead: docs/SCALING.md).
    """
    from execserver.relay.service.app import FleetMembership, RelayServer
    from execserver.relay.service.nats_state import (
        NatsEvents,
        NatsRelayState,
        close_connection,
        connect_nats,
    )
    from execserver.relay.service.nodes import NodeDirectory

    name = f"execserver-relay-{config.node_id}"
    control_events = NatsEvents()
    timeout = fleet.connect_timeout_s
    control = await connect_nats(fleet.servers, name=name, events=control_events, timeout=timeout)
    stack.push_async_callback(close_connection, control, control_events)
    events = NatsEvents()
    nc = await connect_nats(fleet.servers, name=f"{name}-data", events=events, timeout=timeout)
    stack.push_async_callback(close_connection, nc, events)
    state = await NatsRelayState.open(control, replicas=fleet.replicas, metrics=metrics)
    stack.push_async_callback(state.aclose)
    nodes = await NodeDirectory.open(
        control, config.node_id, config.advertise_url, replicas=fleet.replicas, metrics=metrics
    )
    stack.push_async_callback(nodes.aclose)
    # A reconnect may leave the watches' consumers behind on a dead server: start them again.
    control_events.reconnected += [state.rewatch.set, nodes.rewatch.set]
    async with asyncio.timeout(10):
        await asyncio.gather(state.synced.wait(), nodes.synced.wait())
    membership = FleetMembership(nc, events, nodes, control_events=control_events)
    return RelayServer(config, state, metrics=metrics, fleet=membership)


__all__ = [
    "FleetSettings",
    "RelayConfigError",
    "add_parsers",
    "build_config",
    "build_fleet",
    "parse_listen",
    "parse_nats",
    "parse_node_id",
    "parse_public_url",
]
