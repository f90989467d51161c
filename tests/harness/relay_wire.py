"""A raw relay harness: the registry JSON, rendezvous frames, Noise and the record layer spoken
directly from the pure modules, so a test can misbehave on purpose at any layer.

    harness = RelayHarness(session, relay.url, "env1")
    stream = await harness.connect()                  # /connect, WS, resume, msg1 → msg2
    await stream.initialize()
    await stream.request("fs/readFile", {...})
    attempt = await harness.attempt(executor_key=other_key)   # a handshake that must fail
    assert attempt.outcome == "reset"

Also here: our executor in-process behind a relay (`running_executor`, with the injectable
pause, clock and backoff of `RelayExecutor`), and `RegistryProxy`, an HTTP proxy in front of a
relay's registry that can hold `/validate` answers or answer any operation with a status (a
registry that is slow, down or refusing) while the rendezvous stays the relay's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import aiohttp
from aiohttp import web

from execserver.relay import api
from execserver.relay.executor import RelayExecutor
from execserver.relay.frames import (
    Data,
    Frame,
    FrameError,
    Handshake,
    Reset,
    Resume,
    decode_frame,
    encode_data,
    encode_frame,
)
from execserver.relay.noise import (
    NoiseError,
    NoiseIdentity,
    NoiseInitiator,
    NoisePublicKey,
    NoiseTransport,
    prologue,
)
from execserver.relay.records import RecordError, RecordOpener, RecordSealer
from execserver.server.app import ExecServer, ServerConfig
from tests.conftest import TIME
from tests.harness.polling import POLL_S, poll
from tests.relay.support import EXECUTOR_TOKEN, HARNESS_TOKEN

Json = dict[str, Any]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def new_stream_id() -> str:
    return str(uuid.uuid4())


def raw_key(key: api.NoisePublicKey) -> NoisePublicKey:
    return NoisePublicKey(bytes(key.x25519_public_key), bytes(key.mlkem768_public_key))


def api_key(key: NoisePublicKey) -> api.NoisePublicKey:
    return api.NoisePublicKey.from_raw(key.x25519, key.mlkem768)


class Changes:
    """Wake every waiter when something changed (no lock: all on one loop)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout * TIME):
                while not predicate():
                    await self._event.wait()
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}") from None


# -- one harness socket ---------------------------------------------------------------------------


class FrameSocket(Protocol):
    """What a stream needs of the socket under it (a real harness socket, or one stream of
    the fake relay's executor socket)."""

    frames: list[Frame]
    """Frames received before a stream took over (`listener`); `seen` of them consumed."""
    seen: int
    listener: Callable[[Frame], None] | None
    closed: asyncio.Event
    close_code: int | None
    changes: Changes

    async def send(self, data: bytes | str) -> None: ...

    async def send_frame(self, frame: Frame) -> None: ...

    async def close(self) -> None: ...


class RelaySocket:
    """One harness WebSocket to the rendezvous: frames out as given, every frame in kept in
    arrival order (or handed to `listener` once a stream takes over)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[Frame] = []
        self.undecodable: list[bytes] = []
        self.listener: Callable[[Frame], None] | None = None
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        self.changes = Changes()
        self.seen = 0
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                if message.type is not aiohttp.WSMsgType.BINARY:
                    continue
                try:
                    frame = decode_frame(message.data)
                except FrameError:
                    self.undecodable.append(message.data)
                    continue
                if self.listener is not None:
                    self.listener(frame)
                else:
                    self.frames.append(frame)
                self.changes.notify()
        finally:
            self.close_code = self.ws.close_code
            self.closed.set()
            self.changes.notify()

    async def send(self, data: bytes | str) -> None:
        """Send one message (bytes: binary, str: text); a closed socket swallows it."""
        with contextlib.suppress(ConnectionError, RuntimeError):
            if isinstance(data, str):
                await self.ws.send_str(data)
            else:
                await self.ws.send_bytes(data)

    async def send_frame(self, frame: Frame) -> None:
        await self.send(encode_frame(frame))

    async def next_frame(self, timeout: float = 5.0) -> Frame:
        """The next frame not yet returned; ConnectionError once the socket closed first."""
        await self.changes.until(
            lambda: self.seen < len(self.frames) or self.closed.is_set(),
            timeout,
            "a frame from the relay",
        )
        if self.seen >= len(self.frames):
            raise ConnectionError(f"the socket closed (code {self.close_code})")
        self.seen += 1
        return self.frames[self.seen - 1]

    async def wait_closed(self, timeout: float = 5.0) -> int | None:
        await self.changes.until(self.closed.is_set, timeout, "the socket to close")
        return self.close_code

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader


# -- an established stream ------------------------------------------------------------------------


class WireStream:
    """A stream whose handshake completed: JSON-RPC over records, plus raw access.

    Inbound `data` is opened with a `RecordOpener`; a record that does not open is kept in
    `record_error` (and nothing after it is read). Outbound messages go through a
    `RecordSealer`; `raw_record()` builds a record the sealer would not.
    """

    def __init__(
        self, socket: FrameSocket, stream_id: str, keys: NoiseTransport, payload: bytes
    ) -> None:
        self.socket = socket
        self.stream_id = stream_id
        self.handshake_payload = payload
        self._send_cipher = keys.send
        self.sealer = RecordSealer(keys.send)
        self.opener = RecordOpener(keys.receive)
        self.messages: list[Json] = []
        self.reset_reason: str | None = None
        self.record_error: RecordError | None = None
        self.other_frames: list[Frame] = []
        self._next_id = 0
        socket.listener = self._frame
        for frame in socket.frames[socket.seen :]:  # arrived before we took over
            self._frame(frame)

    def _frame(self, frame: Frame) -> None:
        body = frame.body
        if frame.stream_id != self.stream_id:
            self.other_frames.append(frame)
        elif isinstance(body, Data) and self.record_error is None:
            try:
                for message in self.opener.open(body.seq, body.payload):
                    self.messages.append(json.loads(message))
            except RecordError as exc:
                self.record_error = exc
        elif isinstance(body, Reset):
            self.reset_reason = body.reason
        else:
            self.other_frames.append(frame)

    @property
    def changes(self) -> Changes:
        return self.socket.changes

    # -- sending -------------------------------------------------------------------------------

    def seal(self, message: Json | bytes) -> list[tuple[int, bytes]]:
        """The records of one message, not sent (send them with `send_records`)."""
        data = message if isinstance(message, bytes) else json.dumps(message).encode()
        return self.sealer.seal(data)

    def raw_record(self, plaintext: bytes) -> tuple[int, bytes]:
        """A record of exactly `plaintext` (no length prefix, any size), numbered next."""
        seq = self.sealer.next_seq
        ciphertext = self._send_cipher.encrypt(plaintext)
        self.sealer = RecordSealer(self._send_cipher, next_seq=seq + 1)
        return seq, ciphertext

    async def send_records(self, records: Iterable[tuple[int, bytes]]) -> None:
        for seq, ciphertext in records:
            await self.socket.send(encode_data(self.stream_id, seq, ciphertext))

    async def send(self, message: Json | bytes) -> None:
        await self.send_records(self.seal(message))

    async def send_reset(self, reason: str = "harness_reset") -> None:
        await self.socket.send_frame(Frame(self.stream_id, Reset(reason)))

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def request(self, method: str, params: Any = None, *, timeout: float = 10.0) -> Json:
        """Send a request; return the whole response object."""
        request_id = self.new_id()
        await self.send({"id": request_id, "method": method, "params": params or {}})
        return await self.wait_for(
            lambda m: m.get("id") == request_id and ("result" in m or "error" in m),
            timeout=timeout,
            what=f"the response to {method}",
        )

    async def call(self, method: str, params: Any = None, *, timeout: float = 10.0) -> Json:
        """`request`, returning the result (AssertionError on an error answer)."""
        response = await self.request(method, params, timeout=timeout)
        assert "result" in response, response
        result: Json = response["result"]
        return result

    async def initialize(self, resume: str | None = None) -> Json:
        response = await self.request(
            "initialize", {"clientName": "relay-wire", "resumeSessionId": resume}
        )
        if "result" in response:
            await self.send({"method": "initialized", "params": {}})
        return response

    # -- receiving -----------------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        return self.reset_reason is not None or self.socket.closed.is_set()

    async def wait_for(
        self, predicate: Callable[[Json], bool], *, timeout: float = 10.0, what: str = ""
    ) -> Json:
        found: list[Json] = []

        def check() -> bool:
            for message in self.messages:
                if predicate(message):
                    found.append(message)
                    return True
            if self.ended or self.record_error is not None:
                raise ConnectionError(
                    f"stream ended (reset {self.reset_reason!r}, record error "
                    f"{self.record_error}) while waiting for {what}"
                )
            return False

        await self.changes.until(check, timeout, what or "a message")
        return found[0]

    async def wait_reset(self, timeout: float = 5.0) -> str:
        """The reason of the reset that ended the stream."""
        await self.changes.until(
            lambda: self.reset_reason is not None or self.socket.closed.is_set(),
            timeout,
            "a reset",
        )
        assert self.reset_reason is not None, f"closed (code {self.socket.close_code}), no reset"
        return self.reset_reason

    def notifications(self, method: str) -> list[Json]:
        return [m for m in self.messages if m.get("method") == method]

    async def close(self) -> None:
        await self.socket.close()


# -- the harness ----------------------------------------------------------------------------------


Outcome = Literal["established", "reset", "closed"]


@dataclass
class Attempt:
    """One handshake attempt on its own socket: how it ended."""

    socket: FrameSocket
    stream_id: str
    outcome: Outcome
    stream: WireStream | None = None
    reset_reason: str | None = None

    async def close(self) -> None:
        await self.socket.close()


@dataclass
class RelayHarness:
    """A harness of environment `environment_id` behind the registry at `registry_url`: one
    static identity (as the real harness: sessions it opens are resumable only by it)."""

    session: aiohttp.ClientSession
    registry_url: str
    environment_id: str
    token: str = HARNESS_TOKEN
    identity: NoiseIdentity = field(default_factory=NoiseIdentity.generate)

    async def bundle(self) -> api.ConnectResponse:
        """A fresh one-time connect bundle (`/connect`)."""
        async with self.session.post(
            api.registry_url(self.registry_url, self.environment_id, api.CONNECT),
            data=api.encode(api.ConnectRequest(api_key(self.identity.public_key))),
            headers={"Content-Type": "application/json", **api.bearer(self.token)},
        ) as response:
            body = await response.read()
            assert response.status == 200, (response.status, body)
        return api.decode(body, api.ConnectResponse)

    async def socket(self, bundle: api.ConnectResponse | None = None) -> RelaySocket:
        """A harness socket on a bundle's rendezvous URL (a fresh bundle by default)."""
        bundle = bundle or await self.bundle()
        ws = await self.session.ws_connect(
            bundle.url, autoping=True, max_msg_size=0, timeout=aiohttp.ClientWSTimeout(ws_close=2)
        )
        return RelaySocket(ws)

    def initiator(
        self,
        bundle: api.ConnectResponse,
        stream_id: str,
        *,
        executor_key: NoisePublicKey | None = None,
    ) -> NoiseInitiator:
        return NoiseInitiator(
            self.identity,
            executor_key or raw_key(bundle.executor_public_key),
            prologue(self.environment_id, bundle.executor_registration_id, stream_id),
        )

    async def attempt(
        self,
        *,
        bundle: api.ConnectResponse | None = None,
        authorization: str | bytes | None = None,
        executor_key: NoisePublicKey | None = None,
        stream_id: str | None = None,
        message1: Callable[[bytes], bytes] | None = None,
        extra: Iterable[Frame] = (),
        timeout: float = 10.0,
    ) -> Attempt:
        """Open a socket, send `resume` + a handshake, and wait for the executor's answer.

        `authorization` replaces the bundle's, `executor_key` the executor's key, `message1`
        rewrites msg1 as built; `extra` frames go right after the handshake.
        """
        bundle = bundle or await self.bundle()
        stream_id = stream_id or new_stream_id()
        initiator = self.initiator(bundle, stream_id, executor_key=executor_key)
        auth = bundle.harness_key_authorization if authorization is None else authorization
        msg1 = initiator.write_message1(auth.encode() if isinstance(auth, str) else auth)
        if message1 is not None:
            msg1 = message1(msg1)
        socket = await self.socket(bundle)
        await socket.send_frame(Frame(stream_id, Resume()))
        await socket.send_frame(Frame(stream_id, Handshake(msg1)))
        for frame in extra:
            await socket.send_frame(frame)
        while True:
            try:
                frame = await socket.next_frame(timeout)
            except ConnectionError:
                return Attempt(socket, stream_id, "closed")
            if frame.stream_id != stream_id:
                continue
            body = frame.body
            if isinstance(body, Reset):
                return Attempt(socket, stream_id, "reset", reset_reason=body.reason)
            if isinstance(body, Handshake):
                try:
                    payload = initiator.read_message2(body.payload)
                except NoiseError as exc:
                    raise AssertionError(f"msg2 does not open: {exc}") from None
                stream = WireStream(socket, stream_id, initiator.transport(), payload)
                return Attempt(socket, stream_id, "established", stream)
            raise AssertionError(f"unexpected frame before msg2: {frame}")

    async def connect(self, **kwargs: Any) -> WireStream:
        """A stream whose handshake the executor accepted (empty msg2 payload)."""
        attempt = await self.attempt(**kwargs)
        assert attempt.stream is not None, f"handshake {attempt.outcome} ({attempt.reset_reason})"
        assert attempt.stream.handshake_payload == b""
        return attempt.stream

    async def resume(self, session_id: str, timeout: float = 10.0) -> tuple[WireStream, Json]:
        """A new stream resuming `session_id` (retrying while the executor still holds it
        attached, -32010, as after any connection loss)."""
        async with asyncio.timeout(timeout * TIME):
            while True:
                stream = await self.connect()
                response = await stream.initialize(resume=session_id)
                if response.get("error", {}).get("code") != -32010:
                    return stream, response
                await stream.close()
                await asyncio.sleep(POLL_S)


# -- our executor, in-process ---------------------------------------------------------------------


@dataclass
class ExecutorUnderTest:
    server: ExecServer
    relay: RelayExecutor
    task: asyncio.Task[None]

    @property
    def stream_count(self) -> int:
        link = self.relay.link
        return 0 if link is None else link.stream_count

    @property
    def pending_validations(self) -> int:
        link = self.relay.link
        return 0 if link is None else link.pending_validations

    @property
    def public_key(self) -> NoisePublicKey:
        return self.relay.identity.public_key

    def counter(self, name: str) -> int:
        return self.relay.counters.get(name, 0)

    async def wait_connected(self, timeout: float = 10.0) -> None:
        """Until the executor's socket is attached (fails if `run()` ended)."""

        def ready() -> bool:
            if self.task.done():
                raise AssertionError(f"the executor stopped: {self.task!r}")
            return self.relay.connected.is_set()

        await poll(ready, timeout, "the executor to connect")

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Until the executor holds no stream and no pending validation (failing, it names
        what is left, so that a rare leak says which stream and in what state)."""
        try:
            await poll(
                lambda: self.stream_count == 0 and self.pending_validations == 0,
                timeout,
                "the executor's streams to end",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; left: {self.leftovers()}") from None

    def leftovers(self) -> str:
        """The executor's streams and pending validations, for a failure message."""
        link = self.relay.link
        if link is None:
            return "no link"
        streams = {sid: vars(stream) for sid, stream in link._streams.items()}
        pending = {sid: repr(task) for sid, task in link._pending.items()}
        return f"streams {streams}, pending validations {pending}"


@asynccontextmanager
async def running_executor(
    registry_url: str,
    environment_id: str,
    *,
    token: str = EXECUTOR_TOKEN,
    config: ServerConfig | None = None,
    connect: bool = True,
    **options: Any,
) -> AsyncIterator[ExecutorUnderTest]:
    """Our executor (`ExecServer` + `RelayExecutor`) in this loop, registered at
    `registry_url`; `options` go to `RelayExecutor` (fast backoff by default)."""
    options.setdefault("backoff_base_s", 0.05)
    server = ExecServer(config or ServerConfig())
    relay = RelayExecutor(registry_url, environment_id, token, server.open_connection, **options)
    server.relay = relay
    executor = ExecutorUnderTest(server, relay, asyncio.ensure_future(relay.run()))
    try:
        if connect:
            await executor.wait_connected()
        yield executor
    finally:
        executor.task.cancel()
        with contextlib.suppress(BaseException):
            await executor.task
        await server.aclose()


# -- a registry proxy -----------------------------------------------------------------------------


class RegistryProxy:
    """`POST /cloud/environment/{env}/{op}` forwarded to `upstream` (a relay), except that
    `/validate` answers wait while `hold_validations` is set, and an operation listed in
    `answers` gets that HTTP status (and an error body) instead."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.answers: dict[str, int] = {}
        self.hold_validations = False
        self.requests: dict[str, int] = {}
        self.held = 0
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    def release(self) -> None:
        """Let every held validation through (and stop holding new ones)."""
        self.hold_validations = False
        self._release.set()
        self._release = asyncio.Event()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        operation = request.match_info["op"]
        self.requests[operation] = self.requests.get(operation, 0) + 1
        body = await request.read()
        if operation == api.VALIDATE and self.hold_validations:
            self.held += 1
            try:
                await self._release.wait()
            finally:
                self.held -= 1
        status = self.answers.get(operation)
        if status is not None:
            return web.Response(
                status=status,
                body=api.encode(api.ErrorBody.of("proxy", f"answered {status}")),
                content_type="application/json",
            )
        assert self._session is not None
        headers = {
            name: value
            for name, value in request.headers.items()
            if name.lower() in ("authorization", "content-type", api.STREAM_ID_HEADER.lower())
        }
        async with self._session.post(
            self.upstream + request.path, data=body, headers=headers
        ) as answer:
            return web.Response(
                status=answer.status,
                body=await answer.read(),
                headers={"Content-Type": answer.headers.get("Content-Type", "application/json")},
            )

    async def start(self, port: int = 0) -> str:
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.add_routes([web.post("/cloud/environment/{env}/{op}", self._handle)])
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        address = self._runner.addresses[0]
        self.url = f"http://127.0.0.1:{address[1]}"
        return self.url

    async def aclose(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()


@asynccontextmanager
async def registry_proxy(upstream: str, port: int = 0) -> AsyncIterator[RegistryProxy]:
    proxy = RegistryProxy(upstream)
    await proxy.start(port)
    try:
        yield proxy
    finally:
        await proxy.aclose()


# -- a fake relay: the test is the rendezvous -----------------------------------------------------


class VirtualSocket:
    """One stream of the fake relay's executor socket, shaped like a `RelaySocket` (what a
    `WireStream` needs): frames for its id are routed here; `close()` resets the stream at
    the executor, as a relay does when a harness socket goes."""

    def __init__(self, relay: FakeRelay, stream_id: str) -> None:
        self.relay = relay
        self.stream_id = stream_id
        self.frames: list[Frame] = []
        self.listener: Callable[[Frame], None] | None = None
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        self.changes = relay.changes
        self.seen = 0

    async def send(self, data: bytes | str) -> None:
        await self.relay.send(data)

    async def send_frame(self, frame: Frame) -> None:
        await self.relay.send(encode_frame(frame))

    async def close(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            await self.relay.send(encode_frame(Frame(self.stream_id, Reset("harness_gone"))))
            self.relay.streams.pop(self.stream_id, None)


class FakeRelay:
    """A registry and rendezvous for one executor, played by the test: `/register` hands out
    this server's rendezvous URL, `/validate` accepts the authorizations of `authorize()`
    once each, and the executor's socket is the test's to write anything to (any stream id,
    text, many streams at once). Frames from the executor go to the `VirtualSocket` of their
    stream id, or to `unrouted`."""

    REGISTRATION_ID = "reg_fake"

    def __init__(self, environment_id: str) -> None:
        self.environment_id = environment_id
        self.executor_key: NoisePublicKey | None = None
        self.ws: web.WebSocketResponse | None = None
        self.connections = 0
        self.streams: dict[str, VirtualSocket] = {}
        self.unrouted: list[Frame] = []
        self.changes = Changes()
        self._valid: set[str] = set()
        self._runner: web.AppRunner | None = None
        self.url = ""

    def authorize(self) -> str:
        authorization = "auth-" + uuid.uuid4().hex
        self._valid.add(authorization)
        return authorization

    async def _register(self, request: web.Request) -> web.Response:
        body = api.decode(await request.read(), api.RegisterRequest)
        self.executor_key = raw_key(body.executor_public_key)
        answer = api.RegisterResponse(
            environment_id=self.environment_id,
            url=self.url.replace("http://", "ws://") + "/executor",
            security_profile=api.SECURITY_PROFILE,
            executor_registration_id=self.REGISTRATION_ID,
        )
        return web.Response(body=api.encode(answer), content_type="application/json")

    async def _validate(self, request: web.Request) -> web.Response:
        body = api.decode(await request.read(), api.ValidateRequest)
        valid = body.harness_key_authorization in self._valid
        self._valid.discard(body.harness_key_authorization)
        answer = api.ValidateResponse(valid=valid)
        return web.Response(body=api.encode(answer), content_type="application/json")

    async def _executor(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=0, compress=False)
        await ws.prepare(request)
        self.ws = ws
        self.connections += 1
        self.changes.notify()
        try:
            async for message in ws:
                if message.type is not aiohttp.WSMsgType.BINARY:
                    continue
                frame = decode_frame(message.data)  # our executor sends only valid frames
                stream = self.streams.get(frame.stream_id)
                if stream is None:
                    self.unrouted.append(frame)
                elif stream.listener is not None:
                    stream.listener(frame)
                else:
                    stream.frames.append(frame)
                self.changes.notify()
        finally:
            if self.ws is ws:
                self.ws = None
            for stream in self.streams.values():
                stream.closed.set()
            self.streams.clear()
            self.changes.notify()
        return ws

    async def send(self, data: bytes | str) -> None:
        """One message to the executor (bytes: binary, str: text); dropped when none is
        connected."""
        ws = self.ws
        if ws is None or ws.closed:
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            if isinstance(data, str):
                await ws.send_str(data)
            else:
                await ws.send_bytes(data)

    def stream(self, stream_id: str | None = None) -> VirtualSocket:
        """A virtual socket claiming `stream_id` (fresh by default)."""
        socket = VirtualSocket(self, stream_id or new_stream_id())
        self.streams[socket.stream_id] = socket
        return socket

    async def attempt(
        self,
        identity: NoiseIdentity,
        *,
        stream_id: str | None = None,
        authorization: str | None = None,
        timeout: float = 10.0,
    ) -> Attempt:
        """A handshake on a new virtual stream, as `RelayHarness.attempt` on a real relay."""
        assert self.executor_key is not None, "no executor registered"
        socket = self.stream(stream_id)
        initiator = NoiseInitiator(
            identity,
            self.executor_key,
            prologue(self.environment_id, self.REGISTRATION_ID, socket.stream_id),
        )
        auth = self.authorize() if authorization is None else authorization
        await socket.send_frame(
            Frame(socket.stream_id, Handshake(initiator.write_message1(auth.encode())))
        )
        await self.changes.until(
            lambda: bool(socket.frames) or socket.closed.is_set(), timeout, "a handshake answer"
        )
        if not socket.frames:
            return Attempt(socket, socket.stream_id, "closed")
        socket.seen = 1
        body = socket.frames[0].body
        if isinstance(body, Reset):
            self.streams.pop(socket.stream_id, None)
            return Attempt(socket, socket.stream_id, "reset", reset_reason=body.reason)
        assert isinstance(body, Handshake), body
        payload = initiator.read_message2(body.payload)
        stream = WireStream(socket, socket.stream_id, initiator.transport(), payload)
        return Attempt(socket, socket.stream_id, "established", stream)

    async def start(self) -> str:
        app = web.Application()
        base = f"/cloud/environment/{self.environment_id}"
        app.add_routes(
            [
                web.post(f"{base}/{api.REGISTER}", self._register),
                web.post(f"{base}/{api.VALIDATE}", self._validate),
                web.get("/executor", self._executor),
            ]
        )
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.url

    async def aclose(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()


@asynccontextmanager
async def fake_relay(environment_id: str) -> AsyncIterator[FakeRelay]:
    relay = FakeRelay(environment_id)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.aclose()
