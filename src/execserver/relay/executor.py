"""The executor side of relay mode: register, dial the rendezvous, answer Noise handshakes,
serve each stream as one connection (RELAY.md §1, §3, §5, §8).

`RelayExecutor.run()` registers with the registry, then keeps one WebSocket to the rendezvous
URL it was given: after a connected socket ends it dials the same URL again after a jittered
backoff; a 4xx refusal of the upgrade means the registration is gone, so it registers again.
On the socket, `ExecutorLink` answers handshakes as the Noise responder (validating the
harness key with the registry before finishing), enforces the reference's limits (128 streams,
32 pending validations, a 10 s pause after 8 failed handshakes) and hands every established
stream to `open_stream(channel, principal)`, the server's connection factory: a stream is one
more kind of connection, with the same sessions as a direct WebSocket.

Deliberate differences: a registry failure (unreachable, 5xx, timeout) is retried with backoff
instead of ending the process, and a 5xx with a `Retry-After` in seconds (our relay's answer
when its state is overloaded) is retried after that delay instead of the next backoff step;
only a refusal that cannot change (401, 403, other 4xx) ends `run()` with a `RegistryError`.
A handshake for an established stream ends that stream (its reset ends it for the relay and
the harness anyway); the reference keeps it, slot and all.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from execserver.errors import ConnectError, HandshakeRejected
from execserver.relay import api
from execserver.relay.frames import (
    Data,
    FrameError,
    Handshake,
    Reset,
    decode_frame,
    encode_frame,
    encode_reset,
    read_data,
)
from execserver.relay.frames import Frame as RelayFrame
from execserver.relay.noise import (
    MAX_AUTHORIZATION_BYTES,
    REJECTION_SIGNAL,
    NoiseError,
    NoiseIdentity,
    NoiseResponder,
    prologue,
)
from execserver.relay.registry_client import RegistryClient, RegistryError
from execserver.relay.stream import PROTOCOL_ERROR, NoiseStream
from execserver.tasks import TaskOwner
from execserver.transport.base import MessageChannel, MessageReceiver
from execserver.transport.websocket import WebSocketClientConnection, connect_websocket

log = logging.getLogger(__name__)

MAX_STREAMS = 128
MAX_PENDING_VALIDATIONS = 32
MAX_FAILED_HANDSHAKES = 8
HANDSHAKE_PAUSE_S = 10.0
MAX_RELAY_MESSAGE_BYTES = 262144
PING_INTERVAL_S = 30.0
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 30.0
STABLE_CONNECTION_S = 30.0
"""A socket that lived this long resets the reconnect backoff."""

StreamOpener = Callable[[MessageChannel, str], MessageReceiver]
"""The server's connection factory: `(channel, principal) -> receiver`."""


def backoff_delays(
    base_s: float = BACKOFF_BASE_S, cap_s: float = BACKOFF_CAP_S, rng: random.Random | None = None
) -> Iterator[float]:
    """Jittered exponential delays: uniform in [b/2, b] for b = base, 2·base, … up to `cap_s`
    (the reference's observed reconnect sleeps)."""
    rng = rng or random.Random()
    bound = base_s
    while True:
        yield rng.uniform(bound / 2, bound)
        bound = min(bound * 2, cap_s)


def next_delay(delays: Iterator[float], retry_after_s: float | None) -> float:
    """How long to wait before asking again: the server's `Retry-After` when it sent one
    (capped at `BACKOFF_CAP_S`; our relay spreads its values over a few seconds when
    overloaded), else the next of `delays` (which then does not advance)."""
    if retry_after_s is None:
        return next(delays)
    return min(retry_after_s, BACKOFF_CAP_S)


def harness_principal(key: api.NoisePublicKey) -> str:
    """The principal of a harness: its static key (the real harness keeps one per process), so
    a session is resumable only by the harness that created it."""
    digest = hashlib.sha256(bytes(key.x25519_public_key) + bytes(key.mlkem768_public_key))
    return f"noise:{digest.hexdigest()[:32]}"


@dataclass(slots=True)
class Registration:
    url: str
    registration_id: str


class ExecutorLink:
    """One rendezvous WebSocket of an executor: the receiver of its frames and the owner of
    its streams and validations."""

    def __init__(
        self,
        executor: RelayExecutor,
        registration: Registration,
    ) -> None:
        self._executor = executor
        self._registration = registration
        self.channel: WebSocketClientConnection | None = None
        self._streams: dict[str, NoiseStream] = {}
        self._pending: dict[str, asyncio.Task[None]] = {}
        self._tasks = TaskOwner("relay stream validations")
        self._failures = 0
        self._paused_until = 0.0
        self._read_pauses = 0
        self._unsent: list[bytes] = []
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def bind(self, channel: WebSocketClientConnection) -> None:
        """The socket is open (frames may have arrived, and answers queued, just before)."""
        self.channel = channel
        unsent, self._unsent = self._unsent, []
        for frame in unsent:
            channel.send(frame)
        if self._read_pauses:
            channel.pause_reading()

    # -- MessageReceiver of the WebSocket ------------------------------------------------------

    def message_received(self, data: bytes) -> None:
        fast = read_data(data)
        if fast is not None:  # a data frame as every sender writes it
            stream_id, seq, payload = fast
            stream = self._streams.get(stream_id)
            if stream is not None and stream_id.strip():
                stream.data_received(seq, payload)
                return
        try:
            frame = decode_frame(data)
        except FrameError as exc:
            log.debug("relay: dropped an undecodable frame: %s", exc)
            return
        if frame.version != 1 or not frame.stream_id.strip():
            return
        body, stream_id = frame.body, frame.stream_id
        if isinstance(body, Data):
            if body.segment_index != 0 or body.segment_count != 1 or not body.payload:
                return
            stream = self._streams.get(stream_id)
            if stream is not None:
                stream.data_received(body.seq, body.payload)
            elif stream_id in self._pending:
                self._cancel_validation(stream_id)
                self._refuse(stream_id)
            else:
                self._reset(stream_id)
        elif isinstance(body, Handshake):
            self._handshake(stream_id, body.payload)
        elif isinstance(body, Reset):
            stream = self._streams.get(stream_id)
            if stream is not None:
                stream.reset_received()
            elif stream_id in self._pending:
                self._cancel_validation(stream_id)
        # resume, ack and heartbeat frames carry nothing an executor needs.

    def connection_lost(self) -> None:
        for stream in list(self._streams.values()):
            stream.link_lost()
        self._streams.clear()
        for task in self._pending.values():
            task.cancel()
        self._pending.clear()
        if not self.closed.done():
            self.closed.set_result(None)

    # -- FrameLink for the streams -------------------------------------------------------------

    def send_frame(self, frame: bytes) -> None:
        if self.channel is not None:
            self.channel.send(frame)
        elif not self.closed.done():
            self._unsent.append(frame)

    def send_frames(self, frames: list[bytes]) -> None:
        if self.channel is not None:
            self.channel.send_many(frames)
        elif not self.closed.done():
            self._unsent.extend(frames)

    def is_congested(self) -> bool:
        return self.channel is not None and self.channel.is_congested()

    def call_when_writable(self, callback: Callable[[], None]) -> None:
        if self.channel is None:
            callback()
        else:
            self.channel.call_when_writable(callback)

    def pause_reading(self) -> None:
        self._read_pauses += 1
        if self._read_pauses == 1 and self.channel is not None:
            self.channel.pause_reading()

    def resume_reading(self) -> None:
        self._read_pauses -= 1
        if self._read_pauses == 0 and self.channel is not None:
            self.channel.resume_reading()

    def stream_ended(self, stream_id: str) -> None:
        self._streams.pop(stream_id, None)

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    @property
    def pending_validations(self) -> int:
        return len(self._pending)

    # -- handshakes ----------------------------------------------------------------------------

    def _reset(self, stream_id: str) -> None:
        self.send_frame(encode_reset(stream_id, PROTOCOL_ERROR))

    def _refuse(self, stream_id: str) -> None:
        """A failed handshake: reset it and count it against the failure budget."""
        self._reset(stream_id)
        self._failures += 1
        if self._failures >= MAX_FAILED_HANDSHAKES:
            log.warning("pausing Noise relay handshakes after repeated failures")
            self._paused_until = self._executor.clock() + self._executor.handshake_pause_s
            self._failures = 0

    def _cancel_validation(self, stream_id: str) -> None:
        task = self._pending.pop(stream_id, None)
        if task is not None:
            task.cancel()

    def _handshake(self, stream_id: str, message: bytes) -> None:
        active = self._streams.get(stream_id)
        if active is not None:
            # Refused with a reset, which ends the stream for the relay and the harness; so it
            # ends here too (the reference keeps it: a slot that nothing can reach or free).
            active.abort()
            return
        if stream_id in self._pending:
            self._cancel_validation(stream_id)
            self._refuse(stream_id)
            return
        if self._executor.clock() < self._paused_until:
            self._reset(stream_id)
            return
        pending = len(self._pending)
        # A validation under way holds a slot: once valid, its stream must fit in the 128.
        if len(self._streams) + pending >= MAX_STREAMS or pending >= MAX_PENDING_VALIDATIONS:
            self._reset(stream_id)
            return
        executor = self._executor
        responder = NoiseResponder(
            executor.identity,
            prologue(executor.environment_id, self._registration.registration_id, stream_id),
        )
        try:
            payload = responder.read_message1(message)
            authorization = payload.decode("utf-8")
            if len(payload) > MAX_AUTHORIZATION_BYTES:
                raise NoiseError("authorization too long")
            harness_key = responder.initiator_key
            key = api.NoisePublicKey.from_raw(harness_key.x25519, harness_key.mlkem768)
        except (NoiseError, UnicodeDecodeError, ValueError) as exc:
            log.debug("relay: handshake on %s refused: %s", stream_id, exc)
            self._refuse(stream_id)
            return
        self._pending[stream_id] = self._tasks.spawn(
            self._validate(stream_id, responder, key, authorization)
        )

    async def _validate(
        self,
        stream_id: str,
        responder: NoiseResponder,
        key: api.NoisePublicKey,
        authorization: str,
    ) -> None:
        executor = self._executor
        outcome = await executor.registry.validate(
            self._registration.registration_id, key, authorization, stream_id
        )
        if self._pending.pop(stream_id, None) is None or self.closed.done():
            return
        executor.count(f"validation_{outcome}")
        if outcome == "unauthorized":
            # The harness learns why from the handshake itself (RELAY.md §2.3).
            self._send_handshake(stream_id, responder.write_message2(REJECTION_SIGNAL))
            self._refuse(stream_id)
            return
        if outcome != "valid":
            self._refuse(stream_id)
            return
        self._send_handshake(stream_id, responder.write_message2())
        self._failures = 0
        stream = NoiseStream(self, stream_id, responder.transport(), f"relay stream {stream_id}")
        self._streams[stream_id] = stream
        stream.open(executor.open_stream(stream, harness_principal(key)))

    def _send_handshake(self, stream_id: str, message: bytes) -> None:
        self.send_frame(encode_frame(RelayFrame(stream_id, Handshake(message))))

    async def aclose(self) -> None:
        """Drop the socket and every stream; wait for pending validations to stop.

        Cancellation: the socket is dropped first.
        """
        if self.channel is not None:
            self.channel.abort()
        self.connection_lost()
        await self._tasks.aclose()


class RelayExecutor:
    """Keeps this executor registered and reachable through a registry and its rendezvous."""

    def __init__(
        self,
        registry_url: str,
        environment_id: str,
        token: str,
        open_stream: StreamOpener,
        *,
        identity: NoiseIdentity | None = None,
        registry: RegistryClient | None = None,
        backoff_base_s: float = BACKOFF_BASE_S,
        handshake_pause_s: float = HANDSHAKE_PAUSE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.environment_id = environment_id
        self.handshake_pause_s = handshake_pause_s
        """How long handshakes are refused after `MAX_FAILED_HANDSHAKES` failures."""
        self.clock = clock
        """Monotonic seconds (the handshake pause and the backoff reset read it)."""
        self.identity = identity or NoiseIdentity.generate()
        self.registry = registry or RegistryClient(registry_url, environment_id, token)
        """The registry of `registry_url` for this environment (`registry`: one made by the
        caller, e.g. on a pool shared by many executors of one process)."""
        self.open_stream = open_stream
        self._backoff_base_s = backoff_base_s
        self.link: ExecutorLink | None = None
        self.registration: Registration | None = None
        self.counters: dict[str, int] = {}
        self.connected = asyncio.Event()

    def count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    async def _register(self) -> Registration:
        """Register, retrying failures that may pass with backoff. Raises `RegistryError` for
        a refusal that cannot change."""
        key = api.NoisePublicKey.from_raw(
            self.identity.public_key.x25519, self.identity.public_key.mlkem768
        )
        delays = backoff_delays(self._backoff_base_s)
        while True:
            try:
                answer = await self.registry.register(key)
            except RegistryError as exc:
                if exc.is_final:
                    raise
                delay = next_delay(delays, exc.retry_after_s)
                log.warning("relay: registration failed (%s); retrying in %.1f s", exc, delay)
                self.count("registration_retries")
                await asyncio.sleep(delay)
                continue
            self.count("registrations")
            log.info(
                "relay: registered",
                extra={"environment_id": self.environment_id},
            )
            return Registration(answer.url, answer.executor_registration_id)

    async def run(self) -> None:
        """Stay registered and connected until cancelled.

        Raises `RegistryError` when the registry refuses this executor for good (bad
        credentials). Cancellation: the socket and every stream are dropped.
        """
        try:
            registration = self.registration = await self._register()
            delays = backoff_delays(self._backoff_base_s)
            while True:
                link = self.link = ExecutorLink(self, registration)
                started = self.clock()
                try:
                    channel = await connect_websocket(
                        registration.url,
                        link,
                        headers={"X-Request-ID": f"req_{uuid.uuid4().hex}"},
                        binary=True,
                        max_message_bytes=MAX_RELAY_MESSAGE_BYTES,
                        ping_interval_s=PING_INTERVAL_S,
                    )
                    link.bind(channel)
                except HandshakeRejected as exc:
                    if 400 <= exc.status < 500:
                        log.info("relay: rendezvous refused us (%s); registering again", exc.status)
                        registration = self.registration = await self._register()
                        await asyncio.sleep(next(delays))
                    else:
                        await asyncio.sleep(next_delay(delays, exc.retry_after_s))
                    continue
                except ConnectError as exc:
                    log.info("relay: cannot reach the rendezvous: %s", exc)
                    await asyncio.sleep(next(delays))
                    continue
                self.count("rendezvous_connections")
                self.connected.set()
                try:
                    await link.closed
                finally:
                    self.connected.clear()
                    await link.aclose()
                if self.clock() - started >= STABLE_CONNECTION_S:
                    delays = backoff_delays(self._backoff_base_s)
                await asyncio.sleep(next(delays))
        finally:
            if self.link is not None:
                await asyncio.shield(self.link.aclose())
            await self.registry.aclose()
