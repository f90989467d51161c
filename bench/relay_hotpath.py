"""The relay stream's hot path in one process, without sockets: CPU per MiB of process output
and per small message on the sending end (an executor: seal, relay frame, masked WebSocket
frame) and on the receiving end (a harness: WebSocket frames, relay frames, records, messages).

    .venv/bin/python bench/relay_hotpath.py [--rounds N]

Both ends are the real classes (`NoiseStream` on an `ExecutorLink`, `RelayChannel` on a
`HarnessLink`, each over a `WebSocketClientConnection`) opened on a transport that only counts
what is written. The large case sends 16 `process/output` notifications carrying 64 KiB of
output each (1 MiB, two records per message), the small case 5000 notifications of 9 bytes;
the receiving end is fed the frames a relay would write, in 256 KiB reads. The request case
is an executor's whole relayed request path: `process/write` frames through the stream and a
`ServerEndpoint` (whose handler only answers) to the response's frame. Figures are CPU time
(`time.process_time`): sends and requests are the best of N rounds, receives the mean. No
kernel work is included: relay_cpu.py measures whole processes.

Warm figures understate what a relayed echo costs: between an executor's wake-ups the relay,
the harness and the child run on the same cores and evict the executor's code and data from
the CPU caches, and measured in place (relay_cpu.py) the request path takes four to five times
its warm time. The cold request case evicts the caches (writes a buffer larger than the L2
cache and builds some Python objects) before each request and gives the median wall time of
the requests themselves: in that case every call and every extension touched costs about a
microsecond, which a warm loop hides.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from websockets.client import ClientProtocol
from websockets.uri import parse_uri

from execserver.protocol.process import ProcessWriteParams, ProcessWriteResponse
from execserver.relay.executor import ExecutorLink
from execserver.relay.frames import encode_data
from execserver.relay.harness import HarnessLink, RelayChannel
from execserver.relay.noise import CipherState, NoiseTransport
from execserver.relay.records import RecordSealer
from execserver.relay.stream import NoiseStream
from execserver.rpc.router import Router
from execserver.rpc.server import ServerEndpoint
from execserver.transport.http import accept_key
from execserver.transport.websocket import WebSocketClientConnection
from execserver.transport.ws_frames import frame_header

KEY = bytes(range(32))
STREAM = "0f8fad5b-d9cb-469f-a165-70867728950e"
READ_BYTES = 256 * 1024  # what asyncio reads from a socket at most
SMALL = 5000


class CountingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def write(self, data: Any) -> None:
        self.written += len(data)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass


def notifications(count: int, output_bytes: int) -> list[bytes]:
    out = []
    for i in range(count):
        chunk = base64.b64encode(os.urandom(output_bytes)).decode()
        out.append(
            b'{"method":"process/output","params":{"processId":"out-1-1","seq":%d,'
            b'"stream":"stdout","chunk":"%s"}}' % (i, chunk.encode())
        )
    return out


def open_socket(receiver: Any) -> WebSocketClientConnection:
    """A dialled WebSocket after a 101, on a counting transport."""
    protocol = ClientProtocol(parse_uri("ws://127.0.0.1:1/"), max_size=262144)
    request = protocol.connect()
    protocol.send_request(request)
    key = request.headers["Sec-WebSocket-Key"]
    connection = WebSocketClientConnection(protocol, receiver, ping_interval_s=1e6, binary=True)
    connection.connection_made(CountingTransport())
    connection.data_received(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_key(key).encode() + b"\r\n\r\n"
    )
    assert connection.opened.done() and connection.opened.exception() is None
    return connection


def send_cpu(messages: list[bytes], rounds: int) -> float:
    link = ExecutorLink(None, None)  # type: ignore[arg-type]  # no handshakes here
    link.bind(open_socket(link))
    stream = NoiseStream(link, STREAM, NoiseTransport(CipherState(KEY), CipherState(KEY)), "")
    best = float("inf")
    for _ in range(rounds):
        began = time.process_time()
        for message in messages:
            stream.send(message)
        best = min(best, time.process_time() - began)
    return best


class Counter:
    def __init__(self) -> None:
        self.count = 0

    def message_received(self, data: bytes) -> None:
        self.count += 1

    def connection_lost(self) -> None:
        pass


def relay_writes(messages: list[bytes], copies: int) -> list[bytes]:
    """What the relay writes to the harness for `copies` times `messages`, cut in reads."""
    sealer = RecordSealer(CipherState(KEY))
    wire = bytearray()
    for _ in range(copies):
        for message in messages:
            for seq, ciphertext in sealer.seal(message):
                frame = encode_data(STREAM, seq, ciphertext)
                size = len(frame)
                if size < 126:
                    wire += bytes((0x82, size))
                elif size < 65536:
                    wire += bytes((0x82, 126)) + size.to_bytes(2, "big")
                else:
                    wire += bytes((0x82, 127)) + size.to_bytes(8, "big")
                wire += frame
    return [bytes(wire[i : i + READ_BYTES]) for i in range(0, len(wire), READ_BYTES)]


def receive_cpu(messages: list[bytes], rounds: int) -> float:
    reads = relay_writes(messages, rounds)
    link = HarnessLink(STREAM, None, "")  # type: ignore[arg-type]  # past the handshake
    connection = open_socket(link)
    link.channel = connection
    channel = RelayChannel(link, NoiseTransport(CipherState(KEY), CipherState(KEY)), "")
    link.stream = channel
    counter = Counter()
    channel.open(counter)
    began = time.process_time()
    for data in reads:
        connection.data_received(data)
    spent = time.process_time() - began
    if counter.count != len(messages) * rounds:
        raise RuntimeError(f"received {counter.count} of {len(messages) * rounds} messages")
    return spent / rounds


EVICT_BYTES = 8 << 20
"""Written before each cold request: past the L2 cache of the machines we measure on."""


class CacheEvictor:
    """Evicts the CPU caches as the other processes of a relayed echo do: writes a line of
    every 64 bytes of a large buffer and builds a few thousand Python objects."""

    def __init__(self, size: int = EVICT_BYTES) -> None:
        self._buffer = bytearray(size)
        self._ones = b"\x01" * len(self._buffer[::64])

    def __call__(self) -> None:
        self._buffer[::64] = self._ones
        {str(k): k for k in range(2000)}


def request_cpu(rounds: int, count: int = 10_000, cold: bool = False) -> float:
    """An executor's relayed request path: `process/write` frames, one per read, through the
    stream and a `ServerEndpoint` whose handler only answers, to the response's frame written;
    seconds per request, best of `rounds` runs of `count`. `cold`: the caches are evicted
    before each request and the figure is the median wall time of a request (see the module
    docstring)."""
    link = ExecutorLink(None, None)  # type: ignore[arg-type]  # past the handshake
    connection = open_socket(link)
    link.bind(connection)
    stream = NoiseStream(link, STREAM, NoiseTransport(CipherState(KEY), CipherState(KEY)), "")
    link._streams[STREAM] = stream
    router = Router()
    answer = ProcessWriteResponse(status="accepted")
    router.add("process/write", ProcessWriteParams, lambda params: answer, gate="exec")
    endpoint: ServerEndpoint[None] = ServerEndpoint(
        stream, router, gate=lambda family: None, on_notification=lambda method: True,
        on_close=lambda: None,
    )  # fmt: skip
    stream.open(endpoint)
    sealer = RecordSealer(CipherState(KEY))
    best = float("inf")
    for run in range(rounds):
        reads = []
        for i in range(run * count, (run + 1) * count):
            chunk = base64.b64encode(b"%08d\n" % i)
            request = (
                b'{"jsonrpc":"2.0","id":%d,"method":"process/write","params":'
                b'{"processId":"cat-1","chunk":"%s","writeId":"w%d"}}' % (i, chunk, i)
            )
            ((seq, ciphertext),) = sealer.seal(request)
            frame = encode_data(STREAM, seq, ciphertext)
            reads.append(frame_header(0x82, len(frame)) + frame)
        written = connection._transport.written  # type: ignore[union-attr]
        if cold:
            evict = CacheEvictor()
            spent = []
            for data in reads:
                evict()
                began_ns = time.perf_counter_ns()
                connection.data_received(data)
                spent.append(time.perf_counter_ns() - began_ns)
            best = min(best, statistics.median(spent) / 1e9)
        else:
            began = time.process_time()
            for data in reads:
                connection.data_received(data)
            best = min(best, (time.process_time() - began) / count)
        if connection._transport.written == written:  # type: ignore[union-attr]
            raise RuntimeError("no response was written")
    return best


async def main_async(rounds: int) -> None:
    large = notifications(16, 64 * 1024)
    small = notifications(1, 9) * SMALL
    print(f"send    {send_cpu(large, rounds) * 1e3:.3f} ms per MiB of output")
    print(f"receive {receive_cpu(large, rounds) * 1e3:.3f} ms per MiB of output")
    print(f"send    {send_cpu(small, 5) / SMALL * 1e6:.2f} µs per small message")
    print(f"receive {receive_cpu(small, 5) / SMALL * 1e6:.2f} µs per small message")
    print(f"request {request_cpu(5) * 1e6:.2f} µs per relayed process/write, executor side")
    cold = request_cpu(3, 2000, cold=True)
    print(f"request {cold * 1e6:.2f} µs per relayed process/write, executor side, cold caches")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=50)
    asyncio.run(main_async(parser.parse_args().rounds))


if __name__ == "__main__":
    main()
