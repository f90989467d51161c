"""`ExecServerClient`: one logical client over changing connections (PROTOCOL.md §4, §13.3).

States: CONNECTED -> (connection lost) -> RECOVERING -> CONNECTED again, or FAILED; CLOSED
after `aclose()`. A supervisor task (owned by the client) notices the loss, fails the calls
that were in flight (never replayed: their effect is unknown), then reconnects every
`interval_s` and resumes the session by id until `deadline_s` passes. Calls made while
recovering wait for the outcome. Listeners (the remote capabilities) hear about notifications,
losses, resumptions and the final failure, and catch their own state up.

A stdio connection has nothing to resume (the server's session ends with it): losing it is
final.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from ssl import SSLContext
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import msgspec

from execserver.client.reconnect import ReconnectPolicy, backoff, is_retryable
from execserver.errors import (
    ConnectionClosed,
    ExecServerError,
    MethodNotFound,
    RecoveryFailed,
    TransportError,
)
from execserver.protocol import methods
from execserver.protocol.process import PROCESS_ENDINGS
from execserver.protocol.session import (
    EnvironmentInfo,
    InitializeParams,
    InitializeResponse,
    InitializeResponseWithExtensions,
    ProcessEndingsInfo,
    SessionCloseResponse,
)
from execserver.rpc.client import RpcClient
from execserver.tasks import TaskOwner
from execserver.transport.base import DialledChannel, MessageReceiver
from execserver.transport.stdio import spawn_stdio
from execserver.transport.websocket import connect_websocket

if TYPE_CHECKING:
    from execserver.relay.harness import RelayTarget

log = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_CLIENT_NAME = "execserver-python"

Connector = Callable[[MessageReceiver], Awaitable[DialledChannel]]
"""Opens a new connection whose messages go to the given receiver (raises `ConnectError`)."""


class Connection:
    """One open connection of the client: its channel and the RPC state on it."""

    def __init__(self, rpc: RpcClient, channel: DialledChannel) -> None:
        self.rpc = rpc
        self.channel = channel

    async def aclose(self) -> None:
        """Close the channel and wait until it has ended. Cancellation: cleanup completes."""
        self.rpc.close()
        await asyncio.shield(self.channel.wait_closed())


class ClientState(enum.Enum):
    CONNECTED = "connected"
    RECOVERING = "recovering"
    FAILED = "failed"
    CLOSED = "closed"


class ClientListener(Protocol):
    """What a client tells the parts built on it. Called on the client's tasks; must not block."""

    def on_notification(self, method: str, params: msgspec.Raw) -> None: ...

    def on_disconnected(self) -> None:
        """The connection broke; calls in flight failed; recovery may follow."""

    def on_resumed(self) -> None:
        """The session was resumed on a new connection: catch up what was missed."""

    def on_failed(self, error: ExecServerError) -> None:
        """The client is FAILED or CLOSED for good."""


class ExecServerClient:
    """A connection to an exec-server that survives drops (see the module docstring).

    Use `connect()` (WebSocket URL) or `spawn()` (stdio command), then `call()`; `aclose()`
    or `async with` when done.
    """

    def __init__(
        self,
        connector: Connector,
        *,
        client_name: str = DEFAULT_CLIENT_NAME,
        policy: ReconnectPolicy | None = None,
        resumable: bool = True,
        description: str = "exec-server",
        release: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._connector = connector
        self._release = release
        """Releases what the connector keeps between connections (called once, at the end)."""
        self._client_name = client_name
        self.policy = policy or ReconnectPolicy()
        self._resumable = resumable
        self.description = description
        self._conn: Connection | None = None
        self._state = ClientState.RECOVERING
        self._state_changed = asyncio.Event()
        self._ready = asyncio.Event()
        self._failure: ExecServerError | None = None
        self._listeners: list[ClientListener] = []
        self._tasks = TaskOwner(f"client of {description}")
        self.session_id: str | None = None
        self.environment_info: EnvironmentInfo | None = None
        self.reconnects = 0

    # -- construction --------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        bearer_token: str | None = None,
        headers: Mapping[str, str] | None = None,
        client_name: str = DEFAULT_CLIENT_NAME,
        policy: ReconnectPolicy | None = None,
        ssl: SSLContext | None = None,
    ) -> ExecServerClient:
        """Connect to a WebSocket exec-server and complete the handshake.

        `wss://` verifies the server with `ssl` (default: the system trust store); there is
        no fallback to plain `ws://`. Raises `ConnectError` (or the server's `RpcError`) if the
        first connection fails; the first connection is not retried. Cancellation: nothing is
        left open.
        """
        policy = policy or ReconnectPolicy()

        extra = dict(headers or {})
        if bearer_token is not None:
            extra["Authorization"] = f"Bearer {bearer_token}"

        async def connector(receiver: MessageReceiver) -> DialledChannel:
            return await connect_websocket(
                url, receiver, headers=extra, timeout=policy.connect_timeout_s, ssl=ssl
            )

        client = cls(connector, client_name=client_name, policy=policy, description=url)
        await client._start()
        return client

    @classmethod
    async def connect_relay(
        cls,
        target: RelayTarget,
        *,
        client_name: str = DEFAULT_CLIENT_NAME,
        policy: ReconnectPolicy | None = None,
    ) -> ExecServerClient:
        """Reach an executor through a relay (registry + rendezvous, end-to-end encrypted).

        Every (re)connection is a fresh connect bundle, WebSocket and stream, under one
        static Noise identity for this client. Raises `RelayAuthError` when our credentials
        are refused, `ConnectError` otherwise, if the first connection fails.
        """
        from execserver.relay.harness import connect_relay
        from execserver.relay.noise import NoiseIdentity

        policy = policy or ReconnectPolicy()
        identity = NoiseIdentity.generate()

        async def connector(receiver: MessageReceiver) -> DialledChannel:
            return await connect_relay(target, receiver, identity, timeout=policy.connect_timeout_s)

        client = cls(
            connector, client_name=client_name, policy=policy, description=target.describe()
        )
        await client._start()
        return client

    @classmethod
    async def spawn(
        cls,
        program: str,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        client_name: str = DEFAULT_CLIENT_NAME,
        policy: ReconnectPolicy | None = None,
    ) -> ExecServerClient:
        """Start `program args…` and speak JSON-RPC over its stdin/stdout.

        Closing the client kills the program's process group.
        """

        async def connector(receiver: MessageReceiver) -> DialledChannel:
            return await spawn_stdio(program, args, receiver, env=env, cwd=cwd)

        description = " ".join([program, *args])
        client = cls(
            connector,
            client_name=client_name,
            policy=policy,
            resumable=False,
            description=description,
        )
        await client._start()
        return client

    async def _start(self) -> None:
        try:
            self._conn, response = await self._open(None)
        except BaseException:
            self._set_state(ClientState.CLOSED)
            if self._release is not None:
                await asyncio.shield(self._release())
            raise
        self._accept(response)
        self._tasks.spawn(self._supervise())

    async def _open(self, resume: str | None) -> tuple[Connection, InitializeResponse]:
        """Connect and complete the handshake (resuming `resume`, if given)."""
        rpc = RpcClient(self._dispatch)
        channel = await self._connector(rpc)
        rpc.bind(channel)
        conn = Connection(rpc, channel)
        try:
            async with asyncio.timeout(self.policy.initialize_timeout_s):
                response: InitializeResponse = await rpc.call(
                    methods.INITIALIZE,
                    InitializeParams(
                        client_name=self._client_name,
                        resume_session_id=resume,
                        extensions=[PROCESS_ENDINGS],  # ignored by servers without them
                    ),
                    InitializeResponseWithExtensions,
                )
                rpc.notify(methods.INITIALIZED, {})
        except BaseException:
            await asyncio.shield(conn.aclose())
            raise
        return conn, response

    def _accept(self, response: InitializeResponse) -> None:
        self.session_id = response.session_id
        self.environment_info = response.environment_info
        self._set_state(ClientState.CONNECTED)
        self._ready.set()

    @property
    def process_endings(self) -> ProcessEndingsInfo | None:
        """What the executor's `processEndings` extension offers (None: not an execserver)."""
        extensions = getattr(self.environment_info, "extensions", None)
        return extensions.process_endings if extensions is not None else None

    # -- state ---------------------------------------------------------------------------------

    @property
    def state(self) -> ClientState:
        return self._state

    def _set_state(self, state: ClientState) -> None:
        self._state = state
        self._state_changed.set()
        self._state_changed = asyncio.Event()

    async def wait_for_state(self, *states: ClientState) -> ClientState:
        """Wait until the client is in one of `states` (e.g. to report recovery in a UI).

        Cancellation: safe.
        """
        while self._state not in states:
            await self._state_changed.wait()
        return self._state

    def add_listener(self, listener: ClientListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: ClientListener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def _dispatch(self, method: str, params: msgspec.Raw) -> None:
        for listener in list(self._listeners):
            listener.on_notification(method, params)

    def _each_listener(self, action: Callable[[ClientListener], None]) -> None:
        for listener in list(self._listeners):
            try:
                action(listener)
            except Exception:
                log.exception("exec-server client listener failed")

    async def wait_connected(self) -> None:
        """Wait while the client is recovering. Raises the final error once FAILED or CLOSED.

        Cancellation: safe.
        """
        await self._connection()

    async def _connection(self) -> RpcClient:
        while True:
            conn = self._conn
            if self._state is ClientState.CONNECTED and conn is not None:
                if conn.rpc.is_connected:
                    return conn.rpc
                # Broken, and the supervisor has not run yet: never hand out a dead connection
                # (a caller retrying on Disconnected would spin).
                self._mark_lost()
            if self._failure is not None:
                raise self._failure
            await self._ready.wait()

    def _mark_lost(self) -> None:
        if self._state is ClientState.CONNECTED:
            self._set_state(ClientState.RECOVERING)
            self._ready.clear()

    # -- calls ---------------------------------------------------------------------------------

    async def call(self, method: str, params: Any, result_type: type[T]) -> T:
        """Send a request and decode its result.

        Waits while the client is recovering. Raises `RpcError` (the server's answer),
        `Disconnected` (the connection broke before the answer: the request may or may not
        have taken effect, and it is not resent), `RecoveryFailed`/`ConnectionClosed` once the
        client is finished. Cancellation: the answer, if it comes, is dropped.
        """
        conn = await self._connection()
        return await conn.call(method, params, result_type)

    async def close_session(self) -> bool:
        """End the server-side session now (extension `session/close`): the server kills its
        processes and forgets it. False when the server has no such method (codex
        exec-server) or the connection is gone; the session then expires after the server's
        detach window. The client can make no further calls; `aclose()` it next."""
        if self._state is not ClientState.CONNECTED:
            return False
        try:
            await self.call(methods.SESSION_CLOSE, None, SessionCloseResponse)
        except (MethodNotFound, TransportError):
            return False
        self._resumable = False  # nothing is left to resume
        return True

    # -- recovery ------------------------------------------------------------------------------

    async def _supervise(self) -> None:
        while True:
            conn = self._conn
            assert conn is not None
            await conn.rpc.closed
            if self._state is ClientState.CLOSED:
                return
            self._mark_lost()
            self._each_listener(lambda listener: listener.on_disconnected())
            if not self._resumable:
                self._finish(RecoveryFailed(f"lost the connection to {self.description}"))
                return
            await asyncio.shield(conn.aclose())  # the broken channel is gone: release it
            try:
                self._conn, response = await self._recover()
            except ExecServerError as exc:
                self._finish(exc)
                return
            except Exception as exc:  # a bug must not leave callers waiting forever
                log.exception("exec-server client recovery failed")
                self._finish(RecoveryFailed(f"recovery failed: {exc!r}"))
                return
            self.reconnects += 1
            self._accept(response)
            self._each_listener(lambda listener: listener.on_resumed())

    async def _recover(self) -> tuple[Connection, InitializeResponse]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.policy.deadline_s
        delays = backoff(self.policy)
        while True:
            try:
                return await self._open(self.session_id)
            except (ExecServerError, OSError, TimeoutError) as exc:
                if not is_retryable(exc):
                    raise RecoveryFailed(
                        f"could not resume session {self.session_id} on {self.description}: {exc}"
                    ) from exc
                last = exc
            delay = next(delays)
            if loop.time() + delay >= deadline:
                raise RecoveryFailed(
                    f"could not reconnect to {self.description} within "
                    f"{self.policy.deadline_s:g} s: {last}"
                ) from last
            log.debug("reconnecting to %s in %.2f s after: %s", self.description, delay, last)
            await asyncio.sleep(delay)

    def _finish(self, error: ExecServerError) -> None:
        if self._failure is None:
            self._failure = error
        closed = isinstance(error, ConnectionClosed)
        self._set_state(ClientState.CLOSED if closed else ClientState.FAILED)
        self._ready.set()
        self._each_listener(lambda listener: listener.on_failed(error))

    async def aclose(self) -> None:
        """Close the connection and stop recovering. Pending calls fail with `Disconnected`,
        later ones with `ConnectionClosed`. Cancellation: cleanup completes first."""
        if self._state is ClientState.CLOSED:
            return
        self._set_state(ClientState.CLOSED)
        await self._tasks.aclose()
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.shield(conn.aclose())
        if self._release is not None:
            await asyncio.shield(self._release())
        self._finish(ConnectionClosed("the client was closed"))

    async def __aenter__(self) -> ExecServerClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
