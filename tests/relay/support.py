"""Support for the relay tests: an in-process relay with a raw registry/frame client.

`RelayUnderTest` runs a `RelayServer` on 127.0.0.1:0 with a controllable clock and known
tokens; its helpers speak the registry JSON and open rendezvous sockets the way the codex
binaries do (binary messages, no compression), without any Noise: the relay never looks
inside payloads, so random bytes of the right lengths stand in for keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from execserver.relay import api
from execserver.relay.frames import Frame, Resume, decode_frame, encode_frame
from execserver.relay.service.access import AccessPolicy, Role, Scopes, TokenSet, token_digest
from execserver.relay.service.app import RelayConfig, RelayServer
from execserver.relay.service.memory_state import MemoryRelayState
from tests.conftest import TIME

EXECUTOR_TOKEN = "executor-" + secrets.token_hex(8)
HARNESS_TOKEN = "harness-" + secrets.token_hex(8)
TICKET_SECRET = secrets.token_bytes(32)


class FakeClock:
    """UNIX time that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def fake_key() -> api.NoisePublicKey:
    """A public key of the right shape (the relay never uses it cryptographically)."""
    return api.NoisePublicKey.from_raw(os.urandom(32), os.urandom(1184))


def new_stream_id() -> str:
    return str(uuid.uuid4())


def default_access(scopes: Scopes | None = None) -> AccessPolicy:
    executor = TokenSet((token_digest(EXECUTOR_TOKEN),))
    return AccessPolicy(
        tokens={
            Role.EXECUTOR: executor,
            Role.HARNESS: TokenSet((token_digest(HARNESS_TOKEN),)),
            Role.METRICS: executor,
        },
        scopes=scopes,
    )


@dataclass
class Reply:
    status: int
    raw: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def body(self) -> Any:
        return json.loads(self.raw)


class RelayUnderTest:
    """A running in-process relay plus an HTTP client session."""

    def __init__(self, server: RelayServer, session: aiohttp.ClientSession, clock: FakeClock):
        self.server = server
        self.session = session
        self.clock = clock
        self.url = server.base_url

    async def post(
        self, environment_id: str, operation: str, body: Any, *, token: str | None, **headers: str
    ) -> Reply:
        if token is not None:
            headers.update(api.bearer(token))
        data = body if isinstance(body, bytes) else api.encode(body)
        async with self.session.post(
            api.registry_url(self.url, environment_id, operation),
            data=data,
            headers={"Content-Type": "application/json", **headers},
        ) as response:
            return Reply(response.status, await response.read(), dict(response.headers))

    async def register(
        self, environment_id: str = "env1", key: api.NoisePublicKey | None = None
    ) -> api.RegisterResponse:
        reply = await self.post(
            environment_id,
            api.REGISTER,
            api.RegisterRequest(api.SECURITY_PROFILE, key or fake_key()),
            token=EXECUTOR_TOKEN,
        )
        assert reply.status == 200, reply
        return api.decode(reply.raw, api.RegisterResponse)

    async def connect(
        self, environment_id: str = "env1", key: api.NoisePublicKey | None = None
    ) -> api.ConnectResponse:
        reply = await self.post(
            environment_id,
            api.CONNECT,
            api.ConnectRequest(key or fake_key()),
            token=HARNESS_TOKEN,
        )
        assert reply.status == 200, reply
        return api.decode(reply.raw, api.ConnectResponse)

    async def validate(
        self,
        environment_id: str,
        registration_id: str,
        key: api.NoisePublicKey,
        authorization: str,
        *,
        token: str = EXECUTOR_TOKEN,
    ) -> Reply:
        return await self.post(
            environment_id,
            api.VALIDATE,
            api.ValidateRequest(registration_id, key, authorization),
            token=token,
            **{api.STREAM_ID_HEADER: new_stream_id()},
        )

    async def socket(self, url: str) -> aiohttp.ClientWebSocketResponse:
        return await self.session.ws_connect(url, autoping=True, max_msg_size=1 << 22)

    async def upgrade_status(self, url: str) -> tuple[int, str | None]:
        """Status and rejection reason of a refused upgrade."""
        try:
            ws = await self.session.ws_connect(url)
        except aiohttp.WSServerHandshakeError as exc:
            reason = exc.headers.get(api.REJECTION_REASON_HEADER) if exc.headers else None
            return exc.status, reason
        await ws.close()
        raise AssertionError("the upgrade was accepted")

    async def attached_executor(
        self, environment_id: str = "env1"
    ) -> tuple[api.RegisterResponse, aiohttp.ClientWebSocketResponse]:
        """Register and attach an executor socket; returns once the relay has attached it."""
        registration = await self.register(environment_id)
        ws = await self.socket(registration.url)
        await self.wait_for(
            lambda: (
                self.server.hub.executor(environment_id, registration.executor_registration_id)
                is not None
            )
        )
        return registration, ws

    async def harness_stream(
        self, environment_id: str = "env1", stream_id: str | None = None
    ) -> tuple[str, aiohttp.ClientWebSocketResponse]:
        """A harness socket that has claimed `stream_id` (its resume frame was forwarded)."""
        bundle = await self.connect(environment_id)
        ws = await self.socket(bundle.url)
        stream_id = stream_id or new_stream_id()
        await ws.send_bytes(encode_frame(Frame(stream_id, Resume())))
        return stream_id, ws

    async def metrics(self) -> str:
        async with self.session.get(
            self.url + "/metrics", headers=api.bearer(EXECUTOR_TOKEN)
        ) as response:
            assert response.status == 200
            return await response.text()

    async def wait_for(self, predicate: Any, timeout: float = 5.0) -> None:
        """Poll `predicate` on the loop until true (the relay runs in this loop)."""
        async with asyncio.timeout(timeout * TIME):
            while True:
                if predicate():
                    return
                await asyncio.sleep(0.005)  # a poll with a deadline, not a wait for time


async def receive_frame(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> bytes:
    """The next binary message (fails on anything else)."""
    message = await ws.receive(timeout=timeout * TIME)
    assert message.type is aiohttp.WSMsgType.BINARY, message
    data: bytes = message.data
    return data


async def receive_decoded(ws: aiohttp.ClientWebSocketResponse) -> Frame:
    return decode_frame(await receive_frame(ws))


async def wait_closed(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> int | None:
    """Read until the socket is closed; returns the close code (frames before it are dropped)."""
    async with asyncio.timeout(timeout * TIME):
        while True:
            message = await ws.receive()
            if message.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                break
    return ws.close_code


@asynccontextmanager
async def running_relay(
    *, clock: FakeClock | None = None, state: MemoryRelayState | None = None, **config: Any
) -> AsyncIterator[RelayUnderTest]:
    clock = clock or FakeClock()
    config.setdefault("access", default_access())
    config.setdefault("connect_wait_s", 0.5 * TIME)
    config.setdefault("metrics", True)
    state = state or MemoryRelayState(clock=clock)
    server = RelayServer(RelayConfig(ticket_secret=TICKET_SECRET, **config), state, clock=clock)
    await server.start("127.0.0.1", 0)
    try:
        # No pool limit: some tests hold more than aiohttp's default 100 sockets.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            yield RelayUnderTest(server, session, clock)
    finally:
        await server.aclose()
        await state.aclose()


@dataclass
class RelayProcess:
    """`python -m execserver relay …` as a subprocess; `url` is its first stdout line."""

    url: str
    process: asyncio.subprocess.Process
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    async def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait (SIGKILL after `timeout`); returns the exit status.

        A relay's exit is bounded by its own timeouts, about 22 s at worst (open requests 10 s;
        a fleet node's key 2 s and two NATS connections 5 s each: docs/fleet.md); past those a
        SIGKILL's -9 fails the caller's check of the status."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout * TIME)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        assert self.process.returncode is not None
        return self.process.returncode


async def start_relay_process(args: list[str], workdir: Path, name: str = "relay") -> RelayProcess:
    """Start the relay CLI with `args` and wait for the URL it prints."""
    stderr_path = workdir / f"{name}-{secrets.token_hex(3)}.stderr"
    with open(stderr_path, "wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "execserver",
            "--log-level",
            "info",
            "relay",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,
        )
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 30 * TIME)
    except BaseException:  # a timeout, or the test cancelled: no relay is left running
        process.kill()
        await asyncio.shield(process.wait())
        raise
    url = line.decode().strip()
    if not url.startswith("http://"):
        await process.wait()
        raise RuntimeError(f"relay printed {url!r}: {stderr_path.read_text()}")
    return RelayProcess(url, process, stderr_path)


async def relay_metrics(url: str, token: str) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url + "/metrics", headers=api.bearer(token)) as response,
    ):
        return await response.text()


async def wait_for_metric(url: str, token: str, line: str, timeout: float = 30.0) -> str:
    """Poll the relay's /metrics until it has `line`; returns the page."""
    page = ""
    try:
        async with asyncio.timeout(timeout * TIME):
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    page = await relay_metrics(url, token)
                    if line in page.splitlines():
                        return page
                await asyncio.sleep(0.05)  # a poll with a deadline
    except TimeoutError:
        raise AssertionError(f"no `{line}` in the relay metrics:\n{page}") from None
