"""The harness side of relay mode: reach an executor through a registry and its rendezvous.

`connect_relay()` opens one logical connection: a one-time connect bundle from the registry
(`/connect`), a WebSocket to the rendezvous URL in it, `resume` + Noise `handshake` (msg1
carrying the bundle's authorization) on a fresh stream id, and, once the executor's msg2 has
arrived, a `NoiseStream` channel for JSON-RPC (RELAY.md §1, §5). Every reconnect is a new
bundle, a new WebSocket and a new stream; the client then resumes its session by id. One
static identity per client, reused across its reconnects, as codex does.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from execserver.errors import AuthenticationFailed, ConnectError, HandshakeRejected
from execserver.relay import api
from execserver.relay.executor import MAX_RELAY_MESSAGE_BYTES, PING_INTERVAL_S
from execserver.relay.frames import (
    Data,
    FrameError,
    Handshake,
    Reset,
    Resume,
    decode_frame,
    encode_frame,
)
from execserver.relay.frames import Frame as RelayFrame
from execserver.relay.noise import (
    REJECTION_SIGNAL,
    NoiseError,
    NoiseIdentity,
    NoiseInitiator,
    NoisePublicKey,
    NoiseTransport,
    prologue,
)
from execserver.relay.registry_client import RegistryClient, RegistryError
from execserver.relay.stream import NoiseStream
from execserver.transport.base import MessageReceiver
from execserver.transport.websocket import WebSocketClientConnection, connect_websocket

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_S = 10.0


class RelayAuthError(AuthenticationFailed):
    """The registry or the executor refused our credentials."""


@dataclass(frozen=True, slots=True)
class RelayTarget:
    """Where an environment is reached through a relay."""

    registry_url: str
    environment_id: str
    token: str
    account_id: str | None = None

    def describe(self) -> str:
        return f"{self.registry_url.rstrip('/')} environment {self.environment_id}"


class RelayChannel(NoiseStream):
    """The harness's `DialledChannel`: the stream, plus waiting for its socket's end."""

    def __init__(self, link: HarnessLink, keys: NoiseTransport, label: str) -> None:
        super().__init__(link, link.stream_id, keys, label)
        self._harness_link = link

    async def wait_closed(self) -> None:
        """Wait until the WebSocket carrying the stream has ended. Cancellation: safe."""
        await self._harness_link.wait_closed()


class HarnessLink:
    """The WebSocket of one harness connection: one stream, handshake first."""

    def __init__(self, stream_id: str, initiator: NoiseInitiator, label: str) -> None:
        self.stream_id = stream_id
        self._initiator = initiator
        self._label = label
        self.channel: WebSocketClientConnection | None = None
        self.stream: RelayChannel | None = None
        self.established: asyncio.Future[RelayChannel] = asyncio.get_running_loop().create_future()
        self._lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- MessageReceiver of the WebSocket ------------------------------------------------------

    def message_received(self, data: bytes) -> None:
        try:
            frame = decode_frame(data)
        except FrameError:
            return
        if frame.stream_id != self.stream_id or frame.version != 1:
            return  # the harness ignores frames of other streams
        body = frame.body
        if self.stream is None:
            self._before_established(body)
        elif isinstance(body, Data):
            if body.segment_index == 0 and body.segment_count == 1 and body.payload:
                self.stream.data_received(body.seq, body.payload)
        elif isinstance(body, Reset):
            self.stream.reset_received()
            self.drop()

    def _before_established(self, body: object) -> None:
        if isinstance(body, Handshake):
            try:
                payload = self._initiator.read_message2(body.payload)
            except NoiseError as exc:
                self._fail(ConnectError(f"relay handshake failed: {exc}"))
                return
            if payload == REJECTION_SIGNAL:
                self._fail(
                    RelayAuthError(
                        "environment registry authentication error: executor credentials rejected"
                    )
                )
                return
            if payload:
                self._fail(ConnectError("relay handshake failed: unexpected payload"))
                return
            self.stream = RelayChannel(self, self._initiator.transport(), self._label)
            if not self.established.done():
                self.established.set_result(self.stream)
        elif isinstance(body, Reset):
            self._fail(ConnectError("the executor refused the relay stream (reset)"))
        elif isinstance(body, Data):
            self._fail(ConnectError("relay data before the handshake completed"))

    def _fail(self, error: ConnectError) -> None:
        if not self.established.done():
            self.established.set_exception(error)
        self.drop()

    def drop(self) -> None:
        """Abort the WebSocket (and so the stream)."""
        if self.channel is not None:
            self.channel.abort()

    def connection_lost(self) -> None:
        if not self.established.done():
            self.established.set_exception(ConnectError("the rendezvous closed the connection"))
        if self.stream is not None:
            self.stream.link_lost()
        if not self._lost.done():
            self._lost.set_result(None)

    # -- FrameLink -----------------------------------------------------------------------------

    def send_frame(self, frame: bytes) -> None:
        if self.channel is not None:
            self.channel.send(frame)

    def is_congested(self) -> bool:
        return self.channel is not None and self.channel.is_congested()

    def call_when_writable(self, callback: Callable[[], None]) -> None:
        if self.channel is None:
            callback()
        else:
            self.channel.call_when_writable(callback)

    def pause_reading(self) -> None:
        if self.channel is not None:
            self.channel.pause_reading()

    def resume_reading(self) -> None:
        if self.channel is not None:
            self.channel.resume_reading()

    def stream_ended(self, stream_id: str) -> None:
        # One stream per socket: once it ends, the socket goes (after what is queued).
        if self.channel is not None:
            self.channel.close()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._lost)


async def connect_relay(
    target: RelayTarget,
    receiver: MessageReceiver,
    identity: NoiseIdentity,
    *,
    registry: RegistryClient | None = None,
    timeout: float = HANDSHAKE_TIMEOUT_S,
) -> RelayChannel:
    """Open one stream to the executor behind `target`; `receiver` gets its messages.

    Raises `RelayAuthError` (credentials refused, by the registry or the executor),
    `ConnectError` (anything else: no bundle, rendezvous unreachable, handshake failed).
    Cancellation: nothing is left open.
    """
    own_registry = registry is None
    client = registry or RegistryClient(
        target.registry_url, target.environment_id, target.token, account_id=target.account_id
    )
    try:
        key = identity.public_key
        try:
            bundle = await client.connect(api.NoisePublicKey.from_raw(key.x25519, key.mlkem768))
        except RegistryError as exc:
            if exc.is_auth_failure:
                raise RelayAuthError(str(exc)) from None
            raise
    finally:
        if own_registry:
            await client.aclose()
    stream_id = str(uuid.uuid4())
    executor_key = NoisePublicKey(
        bytes(bundle.executor_key.x25519_public_key), bytes(bundle.executor_key.mlkem768_public_key)
    )
    initiator = NoiseInitiator(
        identity,
        executor_key,
        prologue(target.environment_id, bundle.registration_id, stream_id),
    )
    link = HarnessLink(stream_id, initiator, f"relay {target.describe()} stream {stream_id}")
    try:
        link.channel = await connect_websocket(
            bundle.url,
            link,
            binary=True,
            max_message_bytes=MAX_RELAY_MESSAGE_BYTES,
            ping_interval_s=PING_INTERVAL_S,
            timeout=timeout,
        )
    except HandshakeRejected as exc:
        raise ConnectError(f"the rendezvous refused the connection: HTTP {exc.status}") from None
    try:
        link.send_frame(encode_frame(RelayFrame(stream_id, Resume())))
        link.send_frame(
            encode_frame(
                RelayFrame(
                    stream_id, Handshake(initiator.write_message1(bundle.authorization.encode()))
                )
            )
        )
        async with asyncio.timeout(timeout):
            stream = await link.established
    except TimeoutError:
        link.drop()
        raise ConnectError(f"no relay handshake answer within {timeout:g} s") from None
    except BaseException:
        link.drop()
        raise
    stream.open(receiver)
    return stream
