"""The relay service over real sockets: registry HTTP, rendezvous upgrades, frame routing,
limits and logs, driven by a raw client (no Noise: the relay never reads payloads)."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from execserver.relay import api
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
    encode_reset,
)
from execserver.relay.service.access import Scopes
from execserver.relay.service.memory_state import MemoryRelayState
from execserver.relay.service.state import (
    Entry,
    Registration,
    RevisionConflict,
    StateUnavailable,
)
from tests.conftest import TIME
from tests.relay.support import (
    EXECUTOR_TOKEN,
    HARNESS_TOKEN,
    RelayUnderTest,
    default_access,
    fake_key,
    new_stream_id,
    receive_decoded,
    receive_frame,
    running_relay,
    wait_closed,
)


@pytest.fixture
async def relay() -> AsyncIterator[RelayUnderTest]:
    async with running_relay() as relay:
        yield relay


def url_with_query(url: str, query: str) -> str:
    return url.split("?", 1)[0] + "?" + query


# --- registry HTTP ----------------------------------------------------------------------------


async def test_service_register_answers_a_ticket_url(relay: RelayUnderTest) -> None:
    """register: 200 with env, ws:// rendezvous URL, profile and a `reg_` id, in codex order."""
    reply = await relay.post(
        "test1",
        api.REGISTER,
        api.RegisterRequest(api.SECURITY_PROFILE, fake_key()),
        token=EXECUTOR_TOKEN,
    )
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    assert list(reply.body) == [
        "environment_id",
        "url",
        "security_profile",
        "executor_registration_id",
    ]
    assert reply.body["environment_id"] == "test1"
    assert reply.body["security_profile"] == "noise_hybrid_ik_v1"
    assert reply.body["executor_registration_id"].startswith("reg_")
    port = relay.url.rsplit(":", 1)[1]
    assert re.fullmatch(
        rf"ws://127\.0\.0\.1:{port}/relay/executor\?ticket=[A-Za-z0-9_.-]+", reply.body["url"]
    )


async def test_service_public_url_is_advertised() -> None:
    """--public-url replaces the bound address in rendezvous URLs."""
    async with running_relay(public_url="wss://relay.example/prefix") as relay:
        registration = await relay.register()
        assert registration.url.startswith("wss://relay.example/prefix/relay/executor?ticket=")


@pytest.mark.parametrize(
    ("operation", "token", "status", "code"),
    [
        (api.REGISTER, None, 401, "unauthorized"),
        (api.REGISTER, "wrong", 401, "unauthorized"),
        (api.REGISTER, HARNESS_TOKEN, 401, "unauthorized"),
        (api.CONNECT, EXECUTOR_TOKEN, 401, "unauthorized"),
        (api.VALIDATE, HARNESS_TOKEN, 401, "unauthorized"),
    ],
)
async def test_service_registry_refuses_bad_tokens(
    relay: RelayUnderTest, operation: str, token: str | None, status: int, code: str
) -> None:
    """A missing, unknown or other-role token is 401 with the error body codex prints."""
    body = {
        api.REGISTER: api.RegisterRequest(api.SECURITY_PROFILE, fake_key()),
        api.CONNECT: api.ConnectRequest(fake_key()),
        api.VALIDATE: api.ValidateRequest("reg_x", fake_key(), "hka_x"),
    }[operation]
    reply = await relay.post("test1", operation, body, token=token)
    assert reply.status == status
    assert reply.body == {"error": {"code": code, "message": "missing or unknown bearer token"}}


@pytest.mark.parametrize(
    ("environment_id", "body", "status", "code"),
    [
        (
            "test1",
            api.RegisterRequest("legacy", fake_key()),
            400,
            "unsupported_security_profile",
        ),
        ("test1", b'{"security_profile":"noise_hybrid_ik_v1"}', 400, "invalid_request"),
        ("test1", b"not json", 400, "invalid_request"),
        (
            ".hidden",
            api.RegisterRequest(api.SECURITY_PROFILE, fake_key()),
            400,
            "invalid_environment_id",
        ),
        (
            "a" * 257,
            api.RegisterRequest(api.SECURITY_PROFILE, fake_key()),
            400,
            "invalid_environment_id",
        ),
    ],
)
async def test_service_register_refuses_bad_requests(
    relay: RelayUnderTest, environment_id: str, body: object, status: int, code: str
) -> None:
    """Wrong profile, malformed bodies and bad environment ids are 400 with a code."""
    reply = await relay.post(environment_id, api.REGISTER, body, token=EXECUTOR_TOKEN)
    assert reply.status == status
    assert reply.body["error"]["code"] == code


async def test_service_connect_unknown_environment_is_404(relay: RelayUnderTest) -> None:
    """connect for an environment nobody registered (within the wait) is 404."""
    reply = await relay.post(
        "nobody", api.CONNECT, api.ConnectRequest(fake_key()), token=HARNESS_TOKEN
    )
    assert reply.status == 404
    assert reply.body["error"]["code"] == "environment_not_found"


async def test_service_connect_without_executor_socket_is_503(relay: RelayUnderTest) -> None:
    """connect for a registration whose executor never dialled in is 503 after the wait."""
    await relay.register("test1")
    reply = await relay.post(
        "test1", api.CONNECT, api.ConnectRequest(fake_key()), token=HARNESS_TOKEN
    )
    assert reply.status == 503
    assert reply.body["error"]["code"] == "executor_unavailable"


async def test_service_connect_waits_for_the_executor() -> None:
    """A connect that arrives before the executor attaches is answered once it does."""
    async with running_relay(connect_wait_s=10 * TIME) as relay:
        registration = await relay.register("test1")
        connect = asyncio.ensure_future(relay.connect("test1"))
        await asyncio.sleep(0)
        assert not connect.done()
        ws = await relay.socket(registration.url)
        bundle = await asyncio.wait_for(connect, 5 * TIME)
        assert bundle.executor_registration_id == registration.executor_registration_id
        await ws.close()


async def test_service_connect_bundle(relay: RelayUnderTest) -> None:
    """connect answers the six fields: ws:// harness URL, the executor's key, an authorization."""
    key = fake_key()
    registration = await relay.register("test1", key)
    ws = await relay.socket(registration.url)
    reply = await relay.post(
        "test1",
        api.CONNECT,
        api.ConnectRequest(fake_key()),
        token=HARNESS_TOKEN,
        **{api.CHATGPT_ACCOUNT_ID_HEADER: "acct_1"},
    )
    assert reply.status == 200
    bundle = api.decode(reply.raw, api.ConnectResponse)
    assert list(reply.body) == [
        "environment_id",
        "url",
        "security_profile",
        "executor_registration_id",
        "executor_public_key",
        "harness_key_authorization",
    ]
    assert bundle.environment_id == "test1"
    assert bundle.url.startswith(relay.url.replace("http://", "ws://") + "/relay/harness?ticket=")
    assert bundle.executor_registration_id == registration.executor_registration_id
    assert bundle.executor_public_key == key
    assert bundle.harness_key_authorization.startswith("hka_")
    await ws.close()


async def test_service_validate_is_single_use_and_key_bound(relay: RelayUnderTest) -> None:
    """validate: valid once for the exact key; reuse, another key or expiry are invalid."""
    registration, ws = await relay.attached_executor("test1")
    reg_id = registration.executor_registration_id
    harness = fake_key()

    async def bundle() -> str:
        reply = await relay.post(
            "test1", api.CONNECT, api.ConnectRequest(harness), token=HARNESS_TOKEN
        )
        return str(reply.body["harness_key_authorization"])

    authorization = await bundle()
    assert (await relay.validate("test1", reg_id, harness, authorization)).body == {"valid": True}
    assert (await relay.validate("test1", reg_id, harness, authorization)).body == {"valid": False}
    other_key = await bundle()
    assert (await relay.validate("test1", reg_id, fake_key(), other_key)).body == {"valid": False}
    # The failed attempt consumed it: the right key cannot use it afterwards.
    assert (await relay.validate("test1", reg_id, harness, other_key)).body == {"valid": False}
    expiring = await bundle()
    relay.clock.advance(61)
    assert (await relay.validate("test1", reg_id, harness, expiring)).body == {"valid": False}
    wrong_registration = await bundle()
    reply = await relay.validate("test1", "reg_other", harness, wrong_registration)
    assert reply.body == {"valid": False}
    too_long = await relay.validate("test1", reg_id, harness, "x" * 5000)
    assert too_long.body == {"valid": False}
    assert 'validations_total{outcome="valid"} 1' in await relay.metrics()
    await ws.close()


async def test_service_validate_with_a_bad_token_is_401(relay: RelayUnderTest) -> None:
    """validate with a wrong executor token is 401 (codex then sends its rejection signal)."""
    registration, ws = await relay.attached_executor("test1")
    harness = fake_key()
    bundle = await relay.connect("test1", harness)
    reply = await relay.validate(
        "test1",
        registration.executor_registration_id,
        harness,
        bundle.harness_key_authorization,
        token="wrong",
    )
    assert reply.status == 401
    await ws.close()


async def test_service_scopes_restrict_environments(tmp_path: Path) -> None:
    """With a scopes file a token reaches only its environments (403 elsewhere)."""
    path = tmp_path / "scopes.toml"
    path.write_text(
        f'[[scope]]\ntoken = "{EXECUTOR_TOKEN}"\nenvironments = ["team-a-*"]\n'
        f'[[scope]]\ntoken = "{HARNESS_TOKEN}"\nenvironments = ["team-a-1"]\n'
    )
    async with running_relay(access=default_access(Scopes.load(path))) as relay:
        await relay.register("team-a-1")
        await relay.register("team-a-2")
        reply = await relay.post(
            "team-b-1",
            api.REGISTER,
            api.RegisterRequest(api.SECURITY_PROFILE, fake_key()),
            token=EXECUTOR_TOKEN,
        )
        assert reply.status == 403
        assert reply.body["error"]["code"] == "forbidden"
        reply = await relay.post(
            "team-a-2", api.CONNECT, api.ConnectRequest(fake_key()), token=HARNESS_TOKEN
        )
        assert reply.status == 403


# --- rendezvous upgrades ----------------------------------------------------------------------


async def test_service_ticket_rejections(relay: RelayUnderTest) -> None:
    """Bad tickets are refused with 4xx and a reason from the codex allowlist."""
    registration = await relay.register("test1")
    url = registration.url
    ticket = url.split("ticket=", 1)[1]
    payload, signature = ticket.split(".")
    forged = url_with_query(url, f"ticket={payload}.{signature[::-1]}")
    harness_path = url.replace("/relay/executor", "/relay/harness")
    cases = {
        "forged": (forged, 401, "invalid_signature"),
        "missing": (url_with_query(url, ""), 400, "malformed_query"),
        "twice": (url_with_query(url, f"ticket={ticket}&ticket={ticket}"), 400, "malformed_query"),
        "extra": (url + "&role=executor", 400, "extra_query_param"),
        "garbage": (url_with_query(url, "ticket=abc"), 400, "malformed_query"),
        "role": (harness_path, 403, "invalid_role"),
    }
    for name, (target, status, reason) in cases.items():
        assert await relay.upgrade_status(target) == (status, reason), name
    relay.clock.advance(3601)
    assert await relay.upgrade_status(url) == (401, "expired")
    for _, _status, reason in cases.values():
        assert reason in api.REJECTION_REASONS
    metrics = await relay.metrics()
    assert 'rejections_total{reason="invalid_signature",role="executor"} 1' in metrics


async def test_service_replaced_registration_ticket_is_410(relay: RelayUnderTest) -> None:
    """After a re-registration the old executor ticket is 410: the registration is gone."""
    old = await relay.register("test1")
    await relay.register("test1")
    assert await relay.upgrade_status(old.url) == (410, "unexpected_executor_registration_id")


async def test_service_harness_ticket_rules(relay: RelayUnderTest) -> None:
    """A harness ticket works once, expires, and needs the executor on this node (503)."""
    registration, executor = await relay.attached_executor("test1")
    bundle = await relay.connect("test1")
    ws = await relay.socket(bundle.url)
    assert await relay.upgrade_status(bundle.url) == (401, "expired")  # used already
    await ws.close()
    late = await relay.connect("test1")
    relay.clock.advance(61)
    assert await relay.upgrade_status(late.url) == (401, "expired")
    stranded = await relay.connect("test1")
    await executor.close()
    await relay.wait_for(
        lambda: relay.server.hub.executor("test1", registration.executor_registration_id) is None
    )
    assert await relay.upgrade_status(stranded.url) == (503, "route_unavailable")


async def test_service_draining_refuses_upgrades(relay: RelayUnderTest) -> None:
    """While shutting down, upgrades get 503 `pod_draining` (the executor retries the URL)."""
    registration = await relay.register("test1")
    relay.server.rendezvous.draining = True
    assert await relay.upgrade_status(registration.url) == (503, "pod_draining")


# --- routing ----------------------------------------------------------------------------------


async def test_service_routes_frames_by_stream_id(relay: RelayUnderTest) -> None:
    """Harness frames reach the executor unchanged; executor frames reach the stream's owner."""
    _, executor = await relay.attached_executor("test1")
    bundle_a = await relay.connect("test1")
    bundle_b = await relay.connect("test1")
    harness_a = await relay.socket(bundle_a.url)
    harness_b = await relay.socket(bundle_b.url)
    sid_a, sid_b = new_stream_id(), new_stream_id()
    # Unusual but valid encodings pass through byte for byte (no re-encoding).
    odd_resume = encode_frame(Frame(sid_a, Resume()))[2:] + b"\x08\x01" + b"\x58\x07"
    await harness_a.send_bytes(odd_resume)
    assert await receive_frame(executor) == odd_resume
    msg1 = encode_frame(Frame(sid_a, Handshake(b"noise msg1")))
    await harness_a.send_bytes(msg1)
    assert await receive_frame(executor) == msg1
    resume_b = encode_frame(Frame(sid_b, Resume()))
    await harness_b.send_bytes(resume_b)
    assert await receive_frame(executor) == resume_b
    # The executor answers both; each answer reaches only its own harness.
    for sid, payload in ((sid_b, b"to b"), (sid_a, b"to a")):
        await executor.send_bytes(encode_frame(Frame(sid, Handshake(payload))))
    assert await receive_decoded(harness_a) == Frame(sid_a, Handshake(b"to a"))
    assert await receive_decoded(harness_b) == Frame(sid_b, Handshake(b"to b"))
    for seq in range(3):
        await executor.send_bytes(encode_data(sid_a, seq, b"x" * 1000))
    for seq in range(3):
        assert await receive_decoded(harness_a) == Frame(sid_a, Data(seq, b"x" * 1000))
    metrics = await relay.metrics()
    assert 'frames_forwarded_total{direction="to_executor"} 3' in metrics
    assert 'frames_forwarded_total{direction="to_harness"} 5' in metrics
    assert 'handshake_frames_total{direction="to_harness"} 2' in metrics
    assert "exec_server_relay_streams_active 2" in metrics
    for ws in (harness_a, harness_b, executor):
        await ws.close()


async def test_service_keeps_frame_order_under_load() -> None:
    """Bursts of frames both ways arrive complete and in order, whether the relay wrote a
    frame at once (idle socket) or queued it behind others (a reader that lags)."""
    async with running_relay(outbox_limit_bytes=64 << 20) as relay:
        await _frame_order_under_load(relay)


async def _frame_order_under_load(relay: RelayUnderTest) -> None:
    _, executor = await relay.attached_executor("test1")
    sid, harness = await relay.harness_stream("test1")
    assert decode_frame(await receive_frame(executor)) == Frame(sid, Resume())
    count = 800

    def payload(seq: int) -> bytes:
        return bytes([seq % 251]) * (seq * 7919 % 60000)

    async def burst(sender: aiohttp.ClientWebSocketResponse) -> None:
        for seq in range(count):
            await sender.send_bytes(encode_data(sid, seq, payload(seq)))

    async def seqs(receiver: aiohttp.ClientWebSocketResponse) -> list[int]:
        out = []
        for _ in range(count):
            frame = decode_frame(await receive_frame(receiver))
            assert isinstance(frame.body, Data)
            assert frame.body.payload == payload(frame.body.seq)
            out.append(frame.body.seq)
            if len(out) % 20 == 0:
                await asyncio.sleep(0.01)  # lag behind now and then: the relay queues
        return out

    to_executor = asyncio.ensure_future(seqs(executor))
    to_harness = asyncio.ensure_future(seqs(harness))
    await asyncio.gather(burst(harness), burst(executor))
    assert await to_executor == list(range(count))
    assert await to_harness == list(range(count))
    await harness.close()
    await executor.close()


async def test_service_drops_unroutable_frames(relay: RelayUnderTest) -> None:
    """Malformed, version≠1, blank-id and unknown-stream frames are dropped, not forwarded."""
    _, executor = await relay.attached_executor("test1")
    sid, harness = await relay.harness_stream("test1")
    assert decode_frame(await receive_frame(executor)) == Frame(sid, Resume())
    await harness.send_bytes(b"\xff\xff")
    await harness.send_bytes(encode_frame(Frame(sid, Resume(), version=2)))
    await harness.send_bytes(encode_frame(Frame("  ", Resume())))
    await executor.send_bytes(encode_frame(Frame(new_stream_id(), Handshake(b"lost"))))
    await executor.send_bytes(encode_frame(Frame(sid, Handshake(b"x"), version=0)))
    marker = encode_frame(Frame(sid, Handshake(b"marker")))
    await harness.send_bytes(marker)
    assert await receive_frame(executor) == marker
    await executor.send_bytes(marker)
    assert await receive_frame(harness) == marker
    metrics = await relay.metrics()
    for reason, count in (
        ("malformed", 1),
        ("version", 2),
        ("blank_stream_id", 1),
        ("unknown_stream", 1),
    ):
        assert f'frames_dropped_total{{reason="{reason}"}} {count}' in metrics
    await harness.close()
    await executor.close()


async def test_service_harness_close_resets_the_stream(relay: RelayUnderTest) -> None:
    """When a harness socket closes the executor gets `reset(S, harness_disconnected)`."""
    _, executor = await relay.attached_executor("test1")
    sid, harness = await relay.harness_stream("test1")
    await receive_frame(executor)
    await harness.close()
    assert await receive_frame(executor) == encode_reset(sid, "harness_disconnected")
    await relay.wait_for(lambda: relay.server.hub.gauges()["streams_active"] == 0)
    await executor.close()


async def test_service_harness_reset_is_forwarded_once(relay: RelayUnderTest) -> None:
    """A harness's own reset is forwarded and ends the stream: no second reset on close."""
    _, executor = await relay.attached_executor("test1")
    sid, harness = await relay.harness_stream("test1")
    await receive_frame(executor)
    bye = encode_frame(Frame(sid, Reset("bye")))
    await harness.send_bytes(bye)
    assert await receive_frame(executor) == bye
    await harness.send_bytes(encode_data(sid, 0, b"late"))  # dropped: the stream is over
    await harness.close()
    marker_sid, marker = await relay.harness_stream("test1")
    assert decode_frame(await receive_frame(executor)) == Frame(marker_sid, Resume())
    await marker.close()
    await executor.close()


def _unreadable_reset(stream_id: str) -> bytes:
    """A reset whose envelope is fine and whose reason is not UTF-8 (found by the fuzz test):
    the ends decode the whole frame and drop it."""
    frame = encode_frame(Frame(stream_id, Reset("àb")))
    bad = frame.replace("à".encode(), b"\xe1\xa0")
    with pytest.raises(FrameError):
        decode_frame(bad)
    return bad


async def test_service_unreadable_reset_is_dropped_not_acted_on(relay: RelayUnderTest) -> None:
    """A reset the other side could not decode would end the stream at the relay only (the
    executor, ours or codex's, drops it and keeps the stream): it is dropped as malformed, in
    either direction, and the stream goes on."""
    _, executor = await relay.attached_executor("test1")
    sid, harness = await relay.harness_stream("test1")
    await receive_frame(executor)
    await harness.send_bytes(_unreadable_reset(sid))
    await executor.send_bytes(_unreadable_reset(sid))
    marker = encode_frame(Frame(sid, Handshake(b"marker")))
    await harness.send_bytes(marker)
    assert await receive_frame(executor) == marker  # the reset was not forwarded
    await executor.send_bytes(marker)
    assert await receive_frame(harness) == marker
    assert relay.server.hub.gauges()["streams_active"] == 1
    assert 'frames_dropped_total{reason="malformed"} 2' in await relay.metrics()
    await harness.close()
    assert await receive_frame(executor) == encode_reset(sid, "harness_disconnected")
    await executor.close()


async def test_service_executor_reset_ends_the_route(relay: RelayUnderTest) -> None:
    """An executor reset reaches the harness and frees the stream slot."""
    _, executor = await relay.attached_executor("test1")
    sid, harness = await relay.harness_stream("test1")
    await receive_frame(executor)
    reset = encode_reset(sid, "noise_relay_protocol_error")
    await executor.send_bytes(reset)
    assert await receive_frame(harness) == reset
    await relay.wait_for(lambda: relay.server.hub.gauges()["streams_active"] == 0)
    await harness.close()
    await executor.close()


async def test_service_executor_close_resets_and_closes_harnesses(relay: RelayUnderTest) -> None:
    """When the executor socket closes, each harness gets a reset and then a close (1001)."""
    _, executor = await relay.attached_executor("test1")
    sid, harness = await relay.harness_stream("test1")
    await receive_frame(executor)
    idle_bundle = await relay.connect("test1")
    idle = await relay.socket(idle_bundle.url)  # no stream yet
    await executor.close()
    assert await receive_frame(harness) == encode_reset(sid, "executor_disconnected")
    assert await wait_closed(harness) == 1001
    assert await wait_closed(idle) == 1001


async def test_service_reregistration_closes_the_old_executor(relay: RelayUnderTest) -> None:
    """Re-registering replaces the registration: the old socket closes, its streams reset."""
    _, executor = await relay.attached_executor("test1")
    sid, harness = await relay.harness_stream("test1")
    await receive_frame(executor)
    new = await relay.register("test1")
    assert await wait_closed(executor) == 1000
    assert await receive_frame(harness) == encode_reset(sid, "executor_disconnected")
    assert await wait_closed(harness) == 1001
    replacement = await relay.socket(new.url)
    await relay.wait_for(
        lambda: relay.server.hub.executor("test1", new.executor_registration_id) is not None
    )
    await replacement.close()


async def test_service_executor_reconnect_replaces_its_old_socket(relay: RelayUnderTest) -> None:
    """A second socket with the same ticket (a reconnect) takes over; the first is closed."""
    registration, first = await relay.attached_executor("test1")
    second = await relay.socket(registration.url)
    assert await wait_closed(first) == 1000
    sid, harness = await relay.harness_stream("test1")
    assert decode_frame(await receive_frame(second)) == Frame(sid, Resume())
    await harness.close()
    await second.close()


async def test_service_second_claim_of_a_stream_id_is_refused(relay: RelayUnderTest) -> None:
    """Another harness socket using a claimed stream id gets a reset and a 1008 close."""
    _, executor = await relay.attached_executor("test1")
    sid, owner = await relay.harness_stream("test1")
    await receive_frame(executor)
    _, intruder = await relay.harness_stream("test1", stream_id=sid)
    assert await receive_frame(intruder) == encode_reset(sid, "stream_id_in_use")
    assert await wait_closed(intruder) == 1008
    # The owner's route is intact.
    await executor.send_bytes(encode_data(sid, 0, b"still yours"))
    assert await receive_decoded(owner) == Frame(sid, Data(0, b"still yours"))
    await owner.close()
    await executor.close()


async def test_service_one_stream_per_harness_socket(relay: RelayUnderTest) -> None:
    """Frames for a second stream id on a harness socket are answered with a reset."""
    _, executor = await relay.attached_executor("test1")
    _, harness = await relay.harness_stream("test1")
    await receive_frame(executor)
    other = new_stream_id()
    await harness.send_bytes(encode_frame(Frame(other, Resume())))
    assert await receive_frame(harness) == encode_reset(other, "one_stream_per_socket")
    await harness.close()
    await executor.close()


async def test_service_129th_stream_is_refused(relay: RelayUnderTest) -> None:
    """An executor carries at most 128 streams; the 129th harness gets reset + 1013."""
    _, executor = await relay.attached_executor("test1")
    harnesses = []
    for _ in range(128):
        harnesses.append(await relay.harness_stream("test1"))
        await receive_frame(executor)
    sid, extra = await relay.harness_stream("test1")
    assert await receive_frame(extra) == encode_reset(sid, "stream_limit")
    assert await wait_closed(extra) == 1013
    # Closing one frees a slot.
    first_sid, first = harnesses.pop(0)
    await first.close()
    assert await receive_frame(executor) == encode_reset(first_sid, "harness_disconnected")
    sid, admitted = await relay.harness_stream("test1")
    assert decode_frame(await receive_frame(executor)) == Frame(sid, Resume())
    for _, ws in [*harnesses, (sid, admitted)]:
        await ws.close()
    await executor.close()


# --- socket limits ----------------------------------------------------------------------------


def data_frame_of_size(stream_id: str, size: int) -> bytes:
    """A data frame of exactly `size` bytes."""
    overhead = len(encode_data(stream_id, 0, b""))
    for payload_size in range(size - overhead, size - overhead - 8, -1):
        frame = encode_data(stream_id, 0, b"p" * payload_size)
        if len(frame) == size:
            return frame
    raise AssertionError(size)


async def test_service_message_size_limit(relay: RelayUnderTest) -> None:
    """262144-byte messages pass; one byte more closes the socket with 1009."""
    _, executor = await relay.attached_executor("test1")
    sid, harness = await relay.harness_stream("test1")
    await receive_frame(executor)
    biggest = data_frame_of_size(sid, 262_144)
    await harness.send_bytes(biggest)
    assert await receive_frame(executor) == biggest
    await executor.send_bytes(biggest)
    assert await receive_frame(harness) == biggest
    await harness.send_bytes(data_frame_of_size(sid, 262_145))
    assert await wait_closed(harness) == 1009
    assert await receive_frame(executor) == encode_reset(sid, "harness_disconnected")
    await executor.close()


@pytest.mark.parametrize("side", ["executor", "harness"])
async def test_service_text_message_closes_the_socket(relay: RelayUnderTest, side: str) -> None:
    """A text message closes the sending socket with 1003."""
    _, executor = await relay.attached_executor("test1")
    _, harness = await relay.harness_stream("test1")
    await receive_frame(executor)
    sender = executor if side == "executor" else harness
    await sender.send_str("{}")
    assert await wait_closed(sender) == 1003
    await executor.close()
    await harness.close()


async def test_service_answers_pings(relay: RelayUnderTest) -> None:
    """WebSocket pings are answered with pongs (codex closes after 60 s without one)."""
    registration = await relay.register("test1")
    ws = await relay.session.ws_connect(registration.url, autoping=False)
    await ws.ping(b"are you there")
    message = await ws.receive(timeout=5 * TIME)
    assert message.type is aiohttp.WSMsgType.PONG
    assert message.data == b"are you there"
    await ws.close()


async def _raw_harness(url: str, stream_id: str) -> socket.socket:
    """A harness socket that sends one frame and then never reads (tiny receive buffer)."""
    host_port, _, path = url.removeprefix("ws://").partition("/")
    host, port = host_port.rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (host, int(port)))
    request = (
        f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    response = b""
    while b"\r\n\r\n" not in response:
        response += await loop.sock_recv(sock, 1)
    assert response.startswith(b"HTTP/1.1 101"), response
    payload = encode_frame(Frame(stream_id, Resume()))
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    await loop.sock_sendall(sock, struct.pack("!BB", 0x82, 0x80 | len(payload)) + mask + masked)
    return sock


async def test_service_slow_harness_is_closed_not_buffered() -> None:
    """A harness that stops reading is closed (1013) once its outbox stayed full for the stall
    timeout; the executor gets `reset(S, harness_too_slow)` and memory stays bounded."""
    async with running_relay(outbox_limit_bytes=256 << 10, harness_stall_s=0.5 * TIME) as relay:
        _, executor = await relay.attached_executor("test1")
        bundle = await relay.connect("test1")
        sid = new_stream_id()
        sock = await _raw_harness(bundle.url, sid)
        try:
            assert decode_frame(await receive_frame(executor)) == Frame(sid, Resume())
            chunk = encode_data(sid, 0, b"z" * 200_000)
            reset = encode_reset(sid, "harness_too_slow")
            received: list[bytes] = []
            reader = asyncio.ensure_future(receive_frame(executor, timeout=30))
            for _ in range(1000):  # at most 200 MB; the socket buffers hold a few MB
                await executor.send_bytes(chunk)
                if reader.done():
                    break
                await asyncio.sleep(0)
            received.append(await reader)
            assert received == [reset]
            assert relay.server.hub.gauges()["streams_active"] == 0
            metrics = await relay.metrics()
            assert 'sockets_closed_total{reason="outbox_full",role="harness"} 1' in metrics
            # That reset settled the stream: the socket's end sends no second one.
            sock.close()
            await relay.wait_for(lambda: relay.server.hub.gauges()["harness_sockets"] == 0)
            marker_sid, marker = await relay.harness_stream("test1")
            assert decode_frame(await receive_frame(executor)) == Frame(marker_sid, Resume())
            await marker.close()
        finally:
            sock.close()
            await executor.close()


# --- observability and secrets ----------------------------------------------------------------


async def test_service_metrics_and_readyz(relay: RelayUnderTest) -> None:
    """/readyz is 200; /metrics needs the bearer and shows registrations and connections."""
    async with relay.session.get(relay.url + "/readyz") as response:
        assert response.status == 200
    async with relay.session.get(relay.url + "/metrics") as response:
        assert response.status == 401
    _, executor = await relay.attached_executor("test1")
    metrics = await relay.metrics()
    assert "exec_server_relay_executors_registered 1" in metrics
    assert "exec_server_relay_executors_connected 1" in metrics
    assert 'registry_requests_total{operation="register",status="200"} 1' in metrics
    assert "# TYPE exec_server_relay_frames_forwarded_total counter" in metrics
    await executor.close()


async def test_service_logs_hold_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    """Tokens, tickets, authorizations and keys never appear in any log record."""
    caplog.set_level(logging.DEBUG)
    secrets_seen: list[str] = [EXECUTOR_TOKEN, HARNESS_TOKEN]
    async with running_relay() as relay:
        executor_key = fake_key()
        registration = await relay.register("test1", executor_key)
        executor = await relay.socket(registration.url)
        harness_key = fake_key()
        bundle = await relay.connect("test1", harness_key)
        harness = await relay.socket(bundle.url)
        sid = new_stream_id()
        await harness.send_bytes(encode_frame(Frame(sid, Handshake(b"m1"))))
        await receive_frame(executor)
        await relay.validate(
            "test1",
            registration.executor_registration_id,
            harness_key,
            bundle.harness_key_authorization,
        )
        await relay.upgrade_status(bundle.url)  # reused ticket
        ticket = registration.url.split("ticket=")[1]
        await relay.upgrade_status(registration.url.replace(ticket, ticket[::-1]))
        await relay.post("test1", api.REGISTER, b"{}", token="wrong-token-value")
        await relay.post("test1", api.CONNECT, b"garbage", token=HARNESS_TOKEN)
        await harness.close()
        await executor.close()
        secrets_seen += [
            registration.url.split("ticket=")[1],
            bundle.url.split("ticket=")[1],
            bundle.harness_key_authorization,
            "wrong-token-value",
        ]
        for key in (executor_key, harness_key):
            for half in (key.x25519_public_key, key.mlkem768_public_key):
                secrets_seen.append(base64.b64encode(half).decode()[:40])
    text = "\n".join(
        f"{record.getMessage()} {record.__dict__} {record.exc_text or ''}"
        for record in caplog.records
    )
    assert "environment registered" in text  # the logs are there
    assert "rendezvous upgrade refused" in text
    for secret in secrets_seen:
        assert secret not in text


async def test_service_closes_sockets_that_stop_answering_pings() -> None:
    """The relay pings every socket; one that stops answering is dropped."""
    async with running_relay(heartbeat_s=0.2) as relay:
        registration = await relay.register("test1")
        ws = await relay.session.ws_connect(registration.url, autoping=False)
        message = await ws.receive(timeout=5 * TIME)
        assert message.type is aiohttp.WSMsgType.PING
        await wait_closed(ws)
        await relay.wait_for(lambda: relay.server.hub.gauges()["executors_connected"] == 0)


class FailingState(MemoryRelayState):
    """A state whose registration writes fail on demand (lost races or an outage)."""

    def __init__(self) -> None:
        super().__init__()
        self.failure: Exception | None = None

    async def put_registration(
        self, registration: Registration, *, expected_revision: int | None
    ) -> Entry[Registration]:
        if self.failure is not None:
            raise self.failure
        return await super().put_registration(registration, expected_revision=expected_revision)

    async def get_registration(self, environment_id: str) -> Entry[Registration] | None:
        if isinstance(self.failure, StateUnavailable):
            raise self.failure
        return await super().get_registration(environment_id)


async def test_service_state_failures_are_409_and_503() -> None:
    """Lost compare-and-swaps are 409; a state outage is 503 with a `Retry-After`, also on
    the executor's upgrade, so a codex executor retries its URL instead of registering again."""
    state = FailingState()
    async with running_relay(state=state) as relay:
        registration = await relay.register("test1")
        state.failure = RevisionConflict("test1")
        body = api.RegisterRequest(api.SECURITY_PROFILE, fake_key())
        reply = await relay.post("test1", api.REGISTER, body, token=EXECUTOR_TOKEN)
        assert (reply.status, reply.body["error"]["code"]) == (409, "registration_conflict")
        assert "Retry-After" not in reply.headers
        state.failure = StateUnavailable("down")
        reply = await relay.post("test1", api.REGISTER, body, token=EXECUTOR_TOKEN)
        assert (reply.status, reply.body["error"]["code"]) == (503, "unavailable")
        # Told when to come back, a few seconds drawn at random (spreads a storm).
        assert 1 <= int(reply.headers["Retry-After"]) <= 5
        assert await relay.upgrade_status(registration.url) == (503, "route_unavailable")
        state.failure = None
        ws = await relay.socket(registration.url)
        await relay.wait_for(lambda: relay.server.hub.gauges()["executors_connected"] == 1)
        await ws.close()


async def test_service_harness_close_resets_a_stream_the_executor_reset(
    relay: RelayUnderTest,
) -> None:
    """An executor reset ends the route, but harness frames forwarded before the relay read
    it may have started the stream again at the executor (a second handshake): so when the
    harness socket closes the executor still gets `reset(S, harness_disconnected)` (unless
    the harness's own reset was the last thing forwarded, or another socket holds S now)."""
    _, executor = await relay.attached_executor("test1")
    sid, harness = await relay.harness_stream("test1")
    await receive_frame(executor)
    for payload in (b"first", b"second"):
        await harness.send_bytes(encode_frame(Frame(sid, Handshake(payload))))
        assert decode_frame(await receive_frame(executor)) == Frame(sid, Handshake(payload))
    # The executor refused the first handshake and accepted the second: its reset ends the
    # route; its msg2 is dropped.
    reset = encode_reset(sid, "noise_relay_protocol_error")
    await executor.send_bytes(reset)
    assert await receive_frame(harness) == reset
    await executor.send_bytes(encode_frame(Frame(sid, Handshake(b"msg2"))))
    await relay.wait_for(lambda: relay.server.hub.gauges()["streams_active"] == 0)
    await harness.close()
    assert await receive_frame(executor) == encode_reset(sid, "harness_disconnected")
    await executor.close()


async def test_service_slow_reading_harness_gets_everything() -> None:
    """A harness that reads slowly is not cut off: the executor's socket waits for it, and
    every frame arrives, in order (the relay holds at most its outbox)."""
    async with running_relay(outbox_limit_bytes=64 << 10, harness_stall_s=10 * TIME) as relay:
        _, executor = await relay.attached_executor("test1")
        sid, harness = await relay.harness_stream("test1")
        assert decode_frame(await receive_frame(executor)) == Frame(sid, Resume())
        chunks = [encode_data(sid, seq, bytes([seq % 251]) * 50_000) for seq in range(80)]

        async def produce() -> None:
            for chunk in chunks:
                await executor.send_bytes(chunk)

        producer = asyncio.ensure_future(produce())
        received = []
        for _ in chunks:
            received.append(await receive_frame(harness, timeout=30 * TIME))
            await asyncio.sleep(0.005)  # a slow reader (4 MB at 10 MB/s > the 64 KiB outbox)
        await producer
        assert received == chunks
        metrics = await relay.metrics()
        assert 'sockets_closed_total{reason="outbox_full",role="harness"}' not in metrics
        await harness.close()
        await executor.close()
