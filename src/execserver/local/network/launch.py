"""The managed proxy of one process (`process/start.networkProxy`): listeners, the snapshot the
process is prepared from, and the proxy's lifetime.

`ManagedProxy.start()` binds an HTTP listener (and a SOCKS5 one if enabled) on ephemeral ports
of 127.0.0.1 at once, so the `ProxySnapshot` it returns is final: the child's environment
(`snapshot.env()`) and, for a managed sandbox, the ports to reproduce inside the sandbox's
network namespace (`snapshot.ports`) both come from it. Listeners made inside that namespace
are handed over with `adopt()` and served like the host ones. Every connection is a task of the
proxy's owner; `close()` stops accepting and cancels them, `aclose()` waits for them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from execserver.environment.process import NetworkPolicyPeer
from execserver.local.network import proxy_http, socks5
from execserver.local.network.credentials import CredentialBroker, compile_providers
from execserver.local.network.decisions import Gatekeeper
from execserver.local.network.policy import NetworkPolicy
from execserver.local.network.relay import HttpProxy, Streams, UpstreamProxies, close
from execserver.protocol.network import RemoteNetworkProxyLaunchConfig
from execserver.tasks import OwnerClosed, TaskOwner

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 256
"""Connections one proxy serves at a time; more are closed as they arrive."""
LISTEN_BACKLOG = 128
LOCAL_NO_PROXY = "localhost,127.0.0.1,::1,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16"
"""`NO_PROXY` when local binding is allowed (local addresses are then reached directly)."""

_HTTP_PROXY_NAMES = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "WS_PROXY",
    "WSS_PROXY",
    "http_proxy",
    "https_proxy",
    "ws_proxy",
    "wss_proxy",
    "NPM_CONFIG_PROXY",
    "NPM_CONFIG_HTTP_PROXY",
    "NPM_CONFIG_HTTPS_PROXY",
    "npm_config_proxy",
    "npm_config_http_proxy",
    "npm_config_https_proxy",
    "YARN_HTTP_PROXY",
    "YARN_HTTPS_PROXY",
    "BUNDLE_HTTP_PROXY",
    "BUNDLE_HTTPS_PROXY",
    "DOCKER_HTTP_PROXY",
    "DOCKER_HTTPS_PROXY",
    "PIP_PROXY",
)
_ANY_PROXY_NAMES = ("ALL_PROXY", "all_proxy", "FTP_PROXY", "ftp_proxy")
_NO_PROXY_NAMES = (
    "NO_PROXY",
    "no_proxy",
    "NPM_CONFIG_NOPROXY",
    "npm_config_noproxy",
    "BUNDLE_NO_PROXY",
)

Handler = Callable[[Streams, Gatekeeper, str, UpstreamProxies | None], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ProxySnapshot:
    """Where a started proxy listens: everything the process is prepared from."""

    http_port: int
    socks_port: int | None
    allow_local_binding: bool

    @property
    def ports(self) -> tuple[int, ...]:
        """The listening ports, HTTP first."""
        return (self.http_port,) if self.socks_port is None else (self.http_port, self.socks_port)

    def env(self) -> dict[str, str]:
        """The variables the child gets (over its own), as codex 0.171 sets them."""
        http = f"http://127.0.0.1:{self.http_port}"
        socks = http if self.socks_port is None else f"socks5h://127.0.0.1:{self.socks_port}"
        no_proxy = LOCAL_NO_PROXY if self.allow_local_binding else ""
        env = dict.fromkeys(_HTTP_PROXY_NAMES, http)
        env.update(dict.fromkeys(_ANY_PROXY_NAMES, socks))
        env.update(dict.fromkeys(_NO_PROXY_NAMES, no_proxy))
        env["NODE_USE_ENV_PROXY"] = "1"
        env["ELECTRON_GET_USE_PROXY"] = "true"
        env["CODEX_NETWORK_PROXY_ACTIVE"] = "1"
        env["CODEX_NETWORK_ALLOW_LOCAL_BINDING"] = "1" if self.allow_local_binding else "0"
        return env


def _listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class ManagedProxy:
    """The proxy of one process (see the module docstring)."""

    def __init__(
        self,
        gate: Gatekeeper,
        snapshot: ProxySnapshot,
        upstream: UpstreamProxies | None,
        broker: CredentialBroker | None = None,
        tcp_upstream: HttpProxy | None = None,
    ) -> None:
        self.gate = gate
        self.snapshot = snapshot
        self.upstream = upstream
        """The executor's own proxies, when the launch allows using them."""
        self.broker = broker
        """The credential broker, with `credentialMasking` (filled by `broker.virtualize()`
        from the child's environment before the child starts)."""
        self.ca_bundle: str | None = None
        """With `broker`: the CA bundle file the child is pointed at (set when it is written)."""
        self.tcp_upstream = tcp_upstream
        """The HTTP CONNECT proxy SOCKS5 connections must go through (`--tcp-upstream-proxy`)."""
        self._loop = asyncio.get_running_loop()
        self._listeners: list[socket.socket] = []
        self._tasks = TaskOwner(f"network proxy of process {gate.process_id}")
        self._closed = False

    @classmethod
    def start(
        cls,
        process_id: str,
        launch: RemoteNetworkProxyLaunchConfig,
        peer: Callable[[], NetworkPolicyPeer | None],
        executor_env: Mapping[str, str],
        *,
        tcp_upstream: HttpProxy | None = None,
    ) -> ManagedProxy:
        """Bind the listeners and start serving. Raises `PolicyConfigError` for a config the
        policy refuses, `OSError` if the listeners cannot be made. With `allowUpstreamProxy`,
        HTTP and CONNECT go through the proxy `executor_env` names (if any). With
        `credentialMasking`, raises `ProviderConfigError` for a custom provider it cannot use."""
        config = launch.proxy
        broker = (
            CredentialBroker(compile_providers(config.credential_providers))
            if config.credential_masking
            else None
        )
        gate = Gatekeeper(
            process_id, NetworkPolicy.from_config(config), peer, launch.policy_decision_timeout_ms
        )
        http = _listener()
        try:
            socks = _listener() if config.enable_socks5 else None
        except BaseException:
            http.close()
            raise
        snapshot = ProxySnapshot(
            http.getsockname()[1],
            None if socks is None else socks.getsockname()[1],
            config.allow_local_binding,
        )
        upstream = UpstreamProxies(executor_env) if config.allow_upstream_proxy else None
        proxy = cls(gate, snapshot, upstream, broker, tcp_upstream)
        proxy.adopt(http, socks)
        return proxy

    def adopt(self, http: socket.socket, socks: socket.socket | None) -> None:
        """Serve these listening sockets too (made elsewhere, e.g. in a sandbox's network
        namespace); the proxy owns them from now on."""
        http_handler: Handler = functools.partial(proxy_http.serve, broker=self.broker)
        socks_handler: Handler = functools.partial(
            socks5.serve, via=self.tcp_upstream, broker=self.broker
        )
        for sock, handler in ((http, http_handler), (socks, socks_handler)):
            if sock is None:
                continue
            if self._closed:
                sock.close()
                continue
            sock.setblocking(False)
            self._listeners.append(sock)
            self._loop.add_reader(sock.fileno(), self._accept, sock, handler)

    def adopt_list(self, listeners: list[socket.socket]) -> None:
        """`adopt()` for listeners in snapshot order (HTTP, then SOCKS5 if enabled)."""
        if listeners:
            self.adopt(listeners[0], listeners[1] if len(listeners) > 1 else None)

    def _accept(self, listener: socket.socket, handler: Handler) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if len(self._tasks) >= MAX_CONNECTIONS:
                conn.close()
                continue
            try:
                self._tasks.spawn(self._serve(conn, handler))
            except OwnerClosed:
                conn.close()
                return

    async def _serve(self, conn: socket.socket, handler: Handler) -> None:
        try:
            peer_address = conn.getpeername()
            client = f"{peer_address[0]}:{peer_address[1]}"
            streams = await asyncio.open_connection(sock=conn)
        except OSError:
            conn.close()
            return
        try:
            await handler(streams, self.gate, client, self.upstream)
            if not streams[1].is_closing():
                await streams[1].drain()
        except (ConnectionError, OSError):
            pass
        finally:
            await close(streams[1])

    def close(self) -> None:
        """Stop accepting and cancel every connection (idempotent); `aclose()` waits."""
        if self._closed:
            return
        self._closed = True
        for sock in self._listeners:
            self._loop.remove_reader(sock.fileno())
            sock.close()
        self._listeners.clear()
        self._tasks.cancel_all()

    async def aclose(self) -> None:
        """Close, and wait until every connection task has finished.

        Cancellation: the tasks are cancelled before the first await."""
        self.close()
        await self._tasks.aclose()
