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
import os
import uuid
from collections.abc import Callable, Mapping
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
    read_data,
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


RELAY_SCHEMES = ("relay+http://", "relay+https://")
NOISE_REGISTRY_URL_ENV = "CODEX_EXEC_SERVER_NOISE_REGISTRY_URL"
NOISE_ENVIRONMENT_ID_ENV = "CODEX_EXEC_SERVER_NOISE_ENVIRONMENT_ID"
NOISE_AUTH_TOKEN_ENV = "CODEX_EXEC_SERVER_NOISE_AUTH_TOKEN"
NOISE_ACCOUNT_ID_ENV = "CODEX_EXEC_SERVER_NOISE_CHATGPT_ACCOUNT_ID"


@dataclass(frozen=True, slots=True)
class RelayTarget:
    """Where an environment is reached through a relay."""

    registry_url: str
    environment_id: str
    token: str
    account_id: str | None = None

    def describe(self) -> str:
        return f"{self.registry_url.rstrip('/')} environment {self.environment_id}"

    @property
    def url(self) -> str:
        """The `relay+http(s)://…/ENV_ID` spelling (no token)."""
        return f"relay+{self.registry_url.rstrip('/')}/{self.environment_id}"


def is_relay_url(text: str) -> bool:
    return text.startswith(RELAY_SCHEMES)


def parse_relay_url(url: str, token: str | None) -> RelayTarget:
    """`relay+http://HOST[:PORT][/BASE]/ENV_ID` (or relay+https) and the harness bearer.

    Raises `ValueError` with a one-line reason.
    """
    if not is_relay_url(url):
        raise ValueError(f"`{url}` is not a relay+http:// or relay+https:// URL")
    rest = url[len("relay+") :]
    scheme, _, location = rest.partition("://")
    base, slash, environment_id = location.rstrip("/").rpartition("/")
    if not slash or not base or not environment_id.strip():
        raise ValueError(
            f"`{url}` names no environment: expected relay+{scheme}://HOST:PORT/ENVIRONMENT_ID"
        )
    if "?" in location or "#" in location:
        raise ValueError(f"`{url}` must not have a query or fragment")
    if not token:
        raise ValueError(f"`{url}` needs the harness token of the relay")
    return RelayTarget(f"{scheme}://{base}", environment_id, token)


def relay_target_from_env(environ: Mapping[str, str] | None = None) -> RelayTarget | None:
    """The Noise environment the `CODEX_EXEC_SERVER_NOISE_*` variables configure, as codex
    reads them (all three or none; an optional ChatGPT account id). Raises `ValueError` for a
    partial set."""
    env = os.environ if environ is None else environ
    names = (NOISE_REGISTRY_URL_ENV, NOISE_ENVIRONMENT_ID_ENV, NOISE_AUTH_TOKEN_ENV)
    values = [env.get(name, "").strip() for name in names]
    if not any(values):
        return None
    if not all(values):
        missing = ", ".join(name for name, value in zip(names, values, strict=True) if not value)
        raise ValueError(f"Noise environment requires {missing}")
    account = env.get(NOISE_ACCOUNT_ID_ENV, "").strip() or None
    return RelayTarget(values[0], values[1], values[2], account)


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
        fast = read_data(data)
        if fast is not None and self.stream is not None:  # a data frame as senders write it
            stream_id, seq, payload = fast
            if stream_id == self.stream_id:
                self.stream.data_received(seq, payload)
            return
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

    def send_frames(self, frames: list[bytes]) -> None:
        if self.channel is not None:
            self.channel.send_many(frames)

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
