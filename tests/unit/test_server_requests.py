"""Server-to-client requests (`ServerEndpoint.call`, the `network/policyRequest` mechanism):
ids, answers, errors, a late answer after giving up, a response nobody asked for, and the
connection going away while a call waits. Over the in-memory channel pair, with raw JSON on the
client side so the wire is what is checked."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from execserver.errors import Disconnected, RpcError
from execserver.rpc.router import Router
from execserver.rpc.server import ServerEndpoint
from execserver.transport.memory import MemoryChannel, memory_pair
from tests.conftest import TIME


class RawClient:
    """The client side: collects what the server sends."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[Any] = asyncio.Queue()
        self.lost = asyncio.Event()

    def message_received(self, data: bytes) -> None:
        self.received.put_nowait(json.loads(data))

    def connection_lost(self) -> None:
        self.lost.set()

    async def next(self) -> Any:
        async with asyncio.timeout(5 * TIME):
            return await self.received.get()


async def _pair() -> tuple[ServerEndpoint[Any], RawClient, MemoryChannel]:
    client_channel, server_channel = memory_pair()
    router = Router()
    router.add("ping", None, lambda _params: "pong", gate=None)
    endpoint: ServerEndpoint[Any] = ServerEndpoint(
        server_channel,
        router,
        gate=lambda _family: None,
        on_notification=lambda _method: True,
        on_close=lambda: None,
    )
    server_channel.open(endpoint)
    client = RawClient()
    client_channel.open(client)
    return endpoint, client, client_channel


def _send(channel: MemoryChannel, message: Any) -> None:
    channel.send(json.dumps(message).encode())


async def test_call_is_answered_with_the_clients_result() -> None:
    endpoint, client, channel = await _pair()
    first = asyncio.ensure_future(endpoint.call("network/policyRequest", {"a": 1}))
    second = asyncio.ensure_future(endpoint.call("network/policyRequest", {"a": 2}))
    sent = [await client.next(), await client.next()]
    assert sent == [
        {"id": 1, "method": "network/policyRequest", "params": {"a": 1}},
        {"id": 2, "method": "network/policyRequest", "params": {"a": 2}},
    ]
    _send(channel, {"id": 2, "result": {"decision": {"type": "deny", "reason": "r"}}})
    _send(channel, {"id": 1, "result": {"decision": {"type": "allow"}}})
    async with asyncio.timeout(5 * TIME):
        assert await first == {"decision": {"type": "allow"}}
        assert await second == {"decision": {"type": "deny", "reason": "r"}}
    # The connection goes on serving requests.
    _send(channel, {"id": 7, "method": "ping"})
    assert await client.next() == {"id": 7, "result": "pong"}


async def test_an_error_answer_raises_it() -> None:
    endpoint, client, channel = await _pair()
    call = asyncio.ensure_future(endpoint.call("network/policyRequest", {}))
    request = await client.next()
    _send(channel, {"id": request["id"], "error": {"code": -32000, "message": "nope"}})
    with pytest.raises(RpcError) as raised:
        async with asyncio.timeout(5 * TIME):
            await call
    assert (raised.value.code, raised.value.message) == (-32000, "nope")


async def test_a_late_answer_after_giving_up_is_dropped() -> None:
    endpoint, client, channel = await _pair()
    call = asyncio.ensure_future(endpoint.call("network/policyRequest", {}))
    request = await client.next()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    _send(channel, {"id": request["id"], "result": {"decision": {"type": "allow"}}})
    _send(channel, {"id": 8, "method": "ping"})
    assert await client.next() == {"id": 8, "result": "pong"}
    assert not client.lost.is_set()


async def test_a_response_to_no_request_drops_the_connection() -> None:
    endpoint, client, channel = await _pair()
    call = asyncio.ensure_future(endpoint.call("network/policyRequest", {}))
    request = await client.next()
    _send(channel, {"id": request["id"] + 1, "result": {}})
    async with asyncio.timeout(5 * TIME):
        await client.lost.wait()
        with pytest.raises(Disconnected):
            await call
    assert endpoint.closed


async def test_call_on_a_closed_connection_fails_at_once() -> None:
    endpoint, _client, channel = await _pair()
    channel.close()
    async with asyncio.timeout(5 * TIME):
        await endpoint.channel.wait_closed()  # type: ignore[attr-defined]
        assert endpoint.closed
        with pytest.raises(Disconnected):
            await endpoint.call("network/policyRequest", {})
