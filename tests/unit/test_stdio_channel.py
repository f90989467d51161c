"""The server's stdio channel (transport/stdio.py) on both event loops `serve` runs on: lines
arrive as messages, and pausing reading stops the read side of the pipe."""

from __future__ import annotations

import asyncio
import os

import pytest

from execserver import event_loop
from execserver.transport.stdio import StdioConnection
from tests.conftest import TIME
from tests.harness.receiver import Receiver


async def _pause_round() -> None:
    in_read, in_write = os.pipe()
    out_read, out_write = os.pipe()
    connection = StdioConnection()
    inbox = Receiver()
    try:
        await connection.open(inbox, in_read, out_write)
        transport = connection._read_transport
        assert transport is not None
        os.write(in_write, b'{"id":1}\n')
        async with asyncio.timeout(10 * TIME):
            await inbox.arrived.wait()
        assert inbox.messages == [b'{"id":1}']
        connection.pause_reading()
        assert not transport.is_reading(), "pause_reading() left the pipe being read"
        connection.resume_reading()
        assert transport.is_reading()
    finally:
        connection.close()
        for fd in (in_read, in_write, out_read, out_write):
            os.close(fd)


@pytest.mark.parametrize("loop_name", ["uvloop", "asyncio"])
def test_stdio_pause_reading_on_either_loop(loop_name: event_loop.EventLoopName) -> None:
    """On uvloop the pause was a no-op (an isinstance check against asyncio's classes): a
    client flooding `serve --listen stdio` with requests was read without limit."""
    event_loop.run(_pause_round(), event_loop.loop_factory(loop_name))
