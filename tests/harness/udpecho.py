"""A UDP destination for SOCKS5 UDP tests: on 127.0.0.1 and 127.0.0.2 (and ::1 if asked; one
port), it records
each datagram, acknowledges it straight to the client (`ack ` + payload, to 127.0.0.1:OWN_PORT
named after the last `|` of the payload; see tests/harness/netclient.py `socks-udp-relay`) and
echoes it to its sender (`echo ` + payload) unless it is an echo itself: the reference's relay
sends answers back to where they came from, and an echo of an echo would loop."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import cast

ADDRESSES = ("127.0.0.1", "127.0.0.2")


@dataclass
class UdpEcho:
    port: int
    received: list[tuple[str, str]] = field(default_factory=list)
    """(the address that got it, payload before the last `|`), in arrival order."""
    acknowledger: asyncio.DatagramTransport | None = None
    """The 127.0.0.1 socket: acknowledgements leave from it."""


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, echo: UdpEcho, address: str) -> None:
        self._echo = echo
        self._address = address
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        text = data.decode("latin-1")
        self._echo.received.append((self._address, text.rsplit("|", 1)[0]))
        if self._transport is None:
            return
        own = text.rsplit("|", 1)[-1]
        if own.isdigit() and self._echo.acknowledger is not None:
            self._echo.acknowledger.sendto(b"ack " + data, ("127.0.0.1", int(own)))
        if not text.startswith("echo "):
            self._transport.sendto(b"echo " + data, addr)


async def _bind(echo: UdpEcho, address: str, port: int) -> asyncio.BaseTransport:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        functools.partial(_Protocol, echo, address), local_addr=(address, port)
    )
    return transport


@contextlib.asynccontextmanager
async def udp_echo(*, ipv6: bool = False) -> AsyncIterator[UdpEcho]:
    echo = UdpEcho(0)
    others = (*ADDRESSES[1:], "::1") if ipv6 else ADDRESSES[1:]
    transports: list[asyncio.BaseTransport] = []
    try:
        for _ in range(20):  # the first address's port must be free on the others too
            first = await _bind(echo, ADDRESSES[0], 0)
            transports.append(first)
            echo.port = first.get_extra_info("sockname")[1]
            echo.acknowledger = cast(asyncio.DatagramTransport, first)
            try:
                for address in others:
                    transports.append(await _bind(echo, address, echo.port))
                break
            except OSError:
                for transport in transports:
                    transport.close()
                transports.clear()
        else:
            raise OSError("no UDP port free on both test addresses")
        yield echo
    finally:
        for transport in transports:
            transport.close()
