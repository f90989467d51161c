"""A `MessageReceiver` (transport/base.py) for tests that drive a channel directly."""

from __future__ import annotations

import asyncio


class Receiver:
    """Keeps the messages it gets; `arrived` is set on each, `lost` when the channel ends."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.arrived = asyncio.Event()
        self.lost = asyncio.Event()

    def message_received(self, data: bytes) -> None:
        self.messages.append(data)
        self.arrived.set()

    def connection_lost(self) -> None:
        self.lost.set()
