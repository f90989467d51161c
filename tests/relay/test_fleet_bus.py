"""The fleet's data plane, one rule at a time: a relay node in this process on a real NATS
server, and a fake peer node (a plain NATS client with its own subject and heartbeats) that
sends the node envelopes and reads what the node answers. Nothing is lost silently: every
frame for a route the node does not know is answered so that the other side resets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import msgspec
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from execserver.relay.frames import Frame, Handshake, Reset, Resume, decode_frame, encode_frame
from execserver.relay.service.app import FleetMembership, RelayConfig, RelayServer
from execserver.relay.service.fleet import Envelope, Kind, subject
from execserver.relay.service.metrics import RelayMetrics
from execserver.relay.service.nats_state import NatsEvents, NatsRelayState, connect_nats
from execserver.relay.service.nodes import NodeDirectory
from tests.conftest import TIME
from tests.harness.nats import nats_cluster
from tests.relay.support import (
    TICKET_SECRET,
    FakeClock,
    RelayUnderTest,
    default_access,
    new_stream_id,
    receive_decoded,
)

PEER = "peer"
HEARTBEAT_S = 0.2
TTL_S = 1.0


@dataclass
class Peer:
    """A fake relay node: its subject's messages, and a way to send envelopes."""

    nc: NatsClient
    nodes: NodeDirectory
    inbox: asyncio.Queue[Envelope] = field(default_factory=asyncio.Queue)

    async def receive(self, message: Msg) -> None:
        await self.inbox.put(msgspec.msgpack.decode(message.data, type=Envelope))

    async def send(self, to: str, envelope: Envelope) -> None:
        await self.nc.publish(subject(to), msgspec.msgpack.encode(envelope))
        await self.nc.flush()

    async def next(self, timeout: float = 5.0) -> Envelope:
        return await asyncio.wait_for(self.inbox.get(), timeout * TIME)


@dataclass
class Rig:
    relay: RelayUnderTest
    peer: Peer
    node_id: str


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with nats_cluster(tmp_path, size=1) as cluster, contextlib.AsyncExitStack() as stack:
        events = NatsEvents()
        nc = await connect_nats(cluster.urls, events=events)
        stack.push_async_callback(nc.close)
        metrics = RelayMetrics()
        state = await NatsRelayState.open(nc, metrics=metrics)
        stack.push_async_callback(state.aclose)
        nodes = await NodeDirectory.open(nc, "node", None, heartbeat_s=HEARTBEAT_S, ttl_s=TTL_S)
        stack.push_async_callback(nodes.aclose)
        config = RelayConfig(
            ticket_secret=TICKET_SECRET,
            access=default_access(),
            metrics=True,
            node_id="node",
            connect_wait_s=0.5 * TIME,
        )
        server = RelayServer(
            config, state, metrics=metrics, fleet=FleetMembership(nc, events, nodes)
        )
        await server.start("127.0.0.1", 0)
        stack.push_async_callback(server.aclose)
        peer_nc = await connect_nats(cluster.urls, name="peer")
        stack.push_async_callback(peer_nc.close)
        peer_nodes = await NodeDirectory.open(
            peer_nc, PEER, None, heartbeat_s=HEARTBEAT_S, ttl_s=TTL_S
        )
        stack.push_async_callback(peer_nodes.aclose)
        peer = Peer(peer_nc, peer_nodes)
        await peer_nc.subscribe(subject(PEER), cb=peer.receive)
        session = await stack.enter_async_context(aiohttp.ClientSession())
        relay = RelayUnderTest(server, session, FakeClock())
        await relay.wait_for(lambda: nodes.alive(PEER), timeout=10)
        yield Rig(relay, peer, "node")


def to_executor(kind: Kind, harness: str, *, env: str = "", reg: str = "", conn: str = "",
                data: bytes = b"") -> Envelope:  # fmt: skip
    return Envelope(kind, PEER, harness, env, reg, conn, data)


async def test_bus_frames_for_unknown_routes_are_answered(rig: Rig) -> None:
    """A frame for a harness the executor's node does not know → GONE; an executor frame for
    a harness socket the harness's node does not have → BYE; an OPEN for an executor socket
    this node does not hold → GONE; control messages for unknown routes are not answered
    (no ping-pong); a malformed message is counted and dropped."""
    peer = rig.peer
    frame = encode_frame(Frame(new_stream_id(), Resume()))
    await peer.send(rig.node_id, to_executor(Kind.TO_EXECUTOR, "h1", data=frame))
    assert (await peer.next()).kind == Kind.GONE
    await peer.send(rig.node_id, to_executor(Kind.OPEN, "h2", env="nope", reg="r", conn="c"))
    answer = await peer.next()
    assert (answer.kind, answer.harness) == (Kind.GONE, "h2")
    await peer.send(rig.node_id, Envelope(Kind.TO_HARNESS, PEER, "unknown", data=frame))
    answer = await peer.next()
    assert (answer.kind, answer.harness) == (Kind.BYE, "unknown")
    for kind in (Kind.BYE, Kind.GONE, Kind.CLOSE, Kind.ACK_TO_EXECUTOR, Kind.ACK_TO_HARNESS):
        await peer.send(rig.node_id, Envelope(kind, PEER, "nobody"))
    await peer.nc.publish(subject(rig.node_id), b"\xc1 not msgpack")
    # An answer to any of those would arrive before the answer to this probe.
    await peer.send(rig.node_id, to_executor(Kind.TO_EXECUTOR, "probe", data=frame))
    answer = await peer.next()
    assert (answer.kind, answer.harness) == (Kind.GONE, "probe")
    metrics = await rig.relay.metrics()
    assert 'fleet_messages_dropped_total{reason="malformed"} 1' in metrics


async def test_bus_a_remote_harness_is_a_harness_to_the_hub(rig: Rig) -> None:
    """A peer's harness socket opens a stream on an executor held here: the frames reach the
    executor unchanged, its answers go back to the peer, acknowledgements follow the window;
    when the peer node dies, the executor's stream is reset and the peer is told to DROP."""
    registration, executor = await rig.relay.attached_executor("env1")
    entry = await rig.relay.server.state.get_registration("env1")
    assert entry is not None and entry.value.attachment is not None
    conn = entry.value.attachment.connection_id
    sid = new_stream_id()
    hello = encode_frame(Frame(sid, Handshake(b"m1")))
    route = {"env": "env1", "reg": registration.executor_registration_id, "conn": conn}
    await rig.peer.send(rig.node_id, to_executor(Kind.OPEN, "h1", **route, data=hello))
    assert await receive_decoded(executor) == Frame(sid, Handshake(b"m1"))
    answer = encode_frame(Frame(sid, Handshake(b"m2")))
    await executor.send_bytes(answer)
    back = await rig.peer.next()
    assert (back.kind, back.harness, back.data) == (Kind.TO_HARNESS, "h1", answer)
    # A second socket may not claim the same stream id: refused with a reset and a close.
    await rig.peer.send(rig.node_id, to_executor(Kind.OPEN, "h2", **route, data=hello))
    refused = [await rig.peer.next(), await rig.peer.next()]
    assert [e.kind for e in refused] == [Kind.TO_HARNESS, Kind.CLOSE]
    assert decode_frame(refused[0].data) == Frame(sid, Reset("stream_id_in_use"))
    assert refused[1].amount == 1008  # policy violation, as for a socket on this node
    # The peer node dies (its key is deleted as on a clean stop): the executor learns that
    # the stream ended, and the peer is told to drop its side in case it was only slow.
    await rig.peer.nodes.aclose()
    reset = await receive_decoded(executor)
    assert reset.stream_id == sid and isinstance(reset.body, Reset), reset
    assert (await rig.peer.next()).kind == Kind.DROP
    await rig.relay.wait_for(lambda: not rig.relay.server.nodes.alive(PEER))
