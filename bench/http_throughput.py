"""`http/request` throughput for a large body, buffered and streamed, ours vs the reference.

    python bench/http_throughput.py [--mib 50] [--runs 3]

A local HTTP server (started here, on 127.0.0.1) serves `--mib` MiB; each exec-server fetches
it with `http/request`, buffered (one response) and streamed (`http/request/bodyDelta`), and the
client measures until the last byte has arrived. Prints MB/s, median of the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness.servers import reference_command

from bench.latency import Client, start

MiB = 1024 * 1024


async def serve_body(size: int) -> tuple[asyncio.Server, int]:
    body = os.urandom(MiB)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    return
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
                sent = 0
                while sent < size:
                    piece = body[: min(MiB, size - sent)]
                    writer.write(piece)
                    sent += len(piece)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


class Delta(msgspec.Struct):
    deltaBase64: str
    done: bool


class Notification(msgspec.Struct):
    params: Delta | None = None
    id: object = None


async def buffered(client: Client, url: str) -> int:
    frame = await client.call_raw(
        "http/request", {"method": "GET", "url": url, "requestId": f"b{time.monotonic_ns()}"}
    )
    start_at = frame.index(b'"bodyBase64":"') + len(b'"bodyBase64":"')
    return (frame.index(b'"', start_at) - start_at) * 3 // 4


async def streamed(client: Client, url: str) -> int:
    request_id = f"s{time.monotonic_ns()}"
    client.next_id += 1
    await client.ws.send(
        msgspec.json.encode(
            {
                "id": client.next_id,
                "method": "http/request",
                "params": {
                    "method": "GET",
                    "url": url,
                    "requestId": request_id,
                    "streamResponse": True,
                },
            }
        ).decode()
    )
    total = 0
    while True:
        message = msgspec.json.decode(await client.ws.recv(decode=False), type=Notification)
        if message.params is None:
            continue
        total += len(message.params.deltaBase64) * 3 // 4
        if message.params.done:
            return total


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    http_server, port = await serve_body(args.mib * MiB)
    url = f"http://127.0.0.1:{port}/body"
    ours, ours_url = start([sys.executable, "-m", "execserver", "serve"])
    theirs, their_url = start(reference_command())
    try:
        clients = {
            "ours": await Client.connect(ours_url),
            "reference": await Client.connect(their_url),
        }
        for label, function in (("buffered", buffered), ("streamed", streamed)):
            rates: dict[str, list[float]] = {name: [] for name in clients}
            for run in range(args.runs):
                for name in ["ours", "reference"] if run % 2 == 0 else ["reference", "ours"]:
                    begin = time.perf_counter()
                    size = await function(clients[name], url)
                    rates[name].append(size / MiB / (time.perf_counter() - begin))
            mine, other = statistics.median(rates["ours"]), statistics.median(rates["reference"])
            print(
                f"http/request {args.mib} MiB {label}: ours {mine:7.1f} MB/s  "
                f"reference {other:7.1f} MB/s  ratio {mine / other:.2f}"
            )
    finally:
        for client in clients.values():
            await client.ws.close()
        for process in (ours, theirs):
            process.terminate()
            process.wait()
        http_server.close()


if __name__ == "__main__":
    asyncio.run(main())
