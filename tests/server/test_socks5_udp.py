"""SOCKS5 UDP ASSOCIATE through the managed proxy, with real sockets: the test is the SOCKS5
client of a proxy our server started for a waiting process, and runs the UDP destination
(tests/harness/udpecho.py). The reference's behaviour is compared in
tests/wire/cases_network.py (`network_proxy_socks5_udp`)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import struct
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast

import pytest

from tests.conftest import TIME
from tests.harness.udpecho import UdpEcho, udp_echo
from tests.harness.wire import Json, WireClient, process_params
from tests.server.conftest import StartServer
from tests.wire.cases_network import PROXY

SHOW_SOCKS = "import os, sys; print(os.environ['ALL_PROXY'], flush=True); sys.stdin.read()"
ALLOWED = {**PROXY, "enableSocks5Udp": True, "domains": {"127.0.0.1": "allow"}}


async def socks_port(client: WireClient, process_id: str, proxy: Json) -> int:
    """Start a process that prints its ALL_PROXY and waits; that SOCKS5 proxy's port."""
    argv = [sys.executable, "-c", SHOW_SOCKS]
    params = process_params(process_id, argv, pipeStdin=True, networkProxy={"proxy": proxy})
    assert "result" in await client.request("process/start", params)
    message = await client.wait_for(
        lambda m: m.get("method") == "process/output" and m["params"]["processId"] == process_id,
        timeout=10 * TIME,
    )
    return int(base64.b64decode(message["params"]["chunk"]).decode().strip().rsplit(":", 1)[1])


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.refused = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr))

    def error_received(self, exc: Exception) -> None:
        if isinstance(exc, ConnectionRefusedError):
            self.refused.set()


@dataclass
class Association:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    reply: bytes
    udp: asyncio.DatagramTransport
    inbox: _Inbox

    @property
    def relay(self) -> tuple[str, int]:
        return "127.0.0.1", struct.unpack(">H", self.reply[8:10])[0]

    def send(self, header: bytes, payload: bytes) -> None:
        self.udp.sendto(header + payload, self.relay)

    async def receive(self) -> tuple[bytes, tuple[str, int]]:
        async with asyncio.timeout(10 * TIME):
            return await self.inbox.queue.get()

    async def control_closed(self) -> None:
        async with asyncio.timeout(10 * TIME):
            assert await self.reader.read(1) == b""


def header(host: str, port: int, *, frag: int = 0) -> bytes:
    return bytes([0, 0, frag, 1]) + socket.inet_aton(host) + struct.pack(">H", port)


@contextlib.asynccontextmanager
async def associate(port: int) -> AsyncIterator[Association]:
    """A UDP socket on 127.0.0.1 and a UDP ASSOCIATE naming it."""
    loop = asyncio.get_running_loop()
    transport, inbox = await loop.create_datagram_endpoint(_Inbox, local_addr=("127.0.0.1", 0))
    udp = cast(asyncio.DatagramTransport, transport)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"\x05\x01\x00")
        assert await reader.readexactly(2) == b"\x05\x00"
        host, own = udp.get_extra_info("sockname")
        writer.write(b"\x05\x03\x00\x01" + socket.inet_aton(host) + struct.pack(">H", own))
        reply = await reader.readexactly(10)
        yield Association(reader, writer, reply, udp, inbox)
    finally:
        writer.close()
        udp.close()


def decisions(client: WireClient, process_id: str) -> list[tuple[str, str, str, int]]:
    return [
        (p["decision"], p["reason"], p["host"], p["port"])
        for p in (m["params"] for m in client.notifications("network/policyDecision"))
        if p["processId"] == process_id and p["protocol"] == "socks5_udp"
    ]


async def until_decisions(client: WireClient, process_id: str, count: int) -> list[Json]:
    async with asyncio.timeout(10 * TIME):
        while len(decisions(client, process_id)) < count:
            await client.wait_for(
                lambda m: (
                    m.get("method") == "network/policyDecision"
                    and len(decisions(client, process_id)) >= count
                ),
            )
    return client.notifications("network/policyDecision", processId=process_id)


def first_hand(echo: UdpEcho) -> list[tuple[str, str]]:
    return [item for item in echo.received if not item[1].startswith("echo ")]


@pytest.fixture
async def server_client(start_server: StartServer) -> AsyncIterator[WireClient]:
    _, url = await start_server()
    async with await WireClient.connect(url) as client:
        await client.initialize()
        yield client


async def test_round_trip_with_the_answer_header(server_client: WireClient) -> None:
    """An allowed datagram reaches the destination; its answer comes back with the header
    naming the source; both are decided and reported."""
    client = server_client
    async with udp_echo() as echo:
        port = await socks_port(client, "rt", ALLOWED)
        async with associate(port) as assoc:
            assert assoc.reply[:8] == b"\x05\x00\x00\x01\x00\x00\x00\x00"
            assoc.send(header("127.0.0.1", echo.port), b"hello")
            data, source = await assoc.receive()
            assert source == assoc.relay
            assert data == header("127.0.0.1", echo.port) + b"echo hello"
        assert first_hand(echo) == [("127.0.0.1", "hello")]
        allow = ("allow", "allow", "127.0.0.1", echo.port)
        await until_decisions(client, "rt", 2)
        assert decisions(client, "rt") == [allow, allow]


async def test_denied_datagram_dropped_reported_and_ending_the_association(
    server_client: WireClient,
) -> None:
    client = server_client
    async with udp_echo() as echo:
        port = await socks_port(client, "dn", ALLOWED)
        async with associate(port) as assoc:
            assoc.send(header("127.0.0.2", echo.port), b"denied")
            await assoc.control_closed()
        (notice,) = await until_decisions(client, "dn", 1)
        assert notice["params"]["decision"] == "deny"
        assert notice["params"]["reason"] == "not_allowed_local"
        assert notice["params"]["scope"] == "domain"
        assert first_hand(echo) == []


async def test_limited_mode_refuses_every_datagram(server_client: WireClient) -> None:
    client = server_client
    async with udp_echo() as echo:
        port = await socks_port(client, "lm", {**ALLOWED, "mode": "limited"})
        async with associate(port) as assoc:
            assoc.send(header("127.0.0.1", echo.port), b"limited")
            await assoc.control_closed()
        (notice,) = await until_decisions(client, "lm", 1)
        params = notice["params"]
        assert (params["scope"], params["source"], params["reason"]) == (
            "non_domain",
            "mode_guard",
            "method_not_allowed",
        )
        assert first_hand(echo) == []


async def test_fragments_names_and_strangers_dropped_unseen(server_client: WireClient) -> None:
    """A fragment, a name as destination and a datagram from another socket than the one the
    request named are dropped without a decision; the next datagram goes through."""
    client = server_client
    loop = asyncio.get_running_loop()
    async with udp_echo() as echo:
        port = await socks_port(client, "fr", ALLOWED)
        async with associate(port) as assoc:
            assoc.send(header("127.0.0.1", echo.port, frag=1), b"fragment")
            name = b"\x00\x00\x00\x03\x09127.0.0.1" + struct.pack(">H", echo.port)
            assoc.send(name, b"name")
            stranger, _ = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
            )
            try:
                cast(asyncio.DatagramTransport, stranger).sendto(
                    header("127.0.0.1", echo.port) + b"stranger", assoc.relay
                )
            finally:
                stranger.close()
            assoc.send(header("127.0.0.1", echo.port), b"last")
            data, _ = await assoc.receive()
            assert data.endswith(b"echo last")
        assert first_hand(echo) == [("127.0.0.1", "last")]
        await until_decisions(client, "fr", 2)
        assert len(decisions(client, "fr")) == 2  # the datagram and its answer


async def test_association_ends_with_its_control_connection(server_client: WireClient) -> None:
    """Once the control connection is closed, the relay socket is gone (a datagram sent to it
    is refused by the kernel); the proxy keeps serving new associations."""
    client = server_client
    async with udp_echo():
        port = await socks_port(client, "lt", ALLOWED)
        async with associate(port) as assoc:
            relay = assoc.relay
        loop = asyncio.get_running_loop()
        transport, probe = await loop.create_datagram_endpoint(_Inbox, remote_addr=relay)
        try:
            async with asyncio.timeout(10 * TIME):
                while not probe.refused.is_set():  # the close is asynchronous: retry until refused
                    transport.sendto(b"\x00\x00\x00\x01\x7f\x00\x00\x01\x00\x01probe")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(probe.refused.wait(), 0.2 * TIME)
        finally:
            transport.close()
        async with associate(port) as again:
            assert again.reply[1] == 0


async def test_udp_associate_refused_without_enable_socks5_udp(
    server_client: WireClient,
) -> None:
    port = await socks_port(server_client, "off", {**ALLOWED, "enableSocks5Udp": False})
    async with associate(port) as assoc:
        assert assoc.reply[:2] == b"\x05\x07"
        await assoc.control_closed()


async def test_named_client_address_refused(server_client: WireClient) -> None:
    port = await socks_port(server_client, "nm", ALLOWED)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"\x05\x01\x00\x05\x03\x00\x03\x09localhost\x00\x00")
        assert await reader.readexactly(2) == b"\x05\x00"
        assert (await reader.readexactly(10))[:2] == b"\x05\x08"
    finally:
        writer.close()


async def test_association_ends_with_the_proxy(server_client: WireClient) -> None:
    """The process ends, its proxy closes, and an open association's control connection with
    it."""
    client = server_client
    port = await socks_port(client, "px", ALLOWED)
    async with associate(port) as assoc:
        assert assoc.reply[1] == 0
        await client.request("process/terminate", {"processId": "px"})
        await assoc.control_closed()
