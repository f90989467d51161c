"""Cheap load generators for bench/fleet_flood.py: relay endpoints that do the real setup and
then move pre-serialised frames, so that what limits a flood is the relay, not the client.

The relay never decrypts (RELAY.md §5): it reads a frame's envelope (stream id, kind,
version) and forwards the bytes unchanged. What it needs before it routes a stream:

* executor: `POST /register` (executor token, a Noise public key) and a WebSocket to the
  rendezvous URL of the answer (its ticket); the node records the attachment in the shared
  state, and the socket then receives its streams' frames;
* harness: `POST /connect` (harness token, a Noise public key) and a WebSocket to the bundle's
  URL (a single-use ticket; any node's `/node/<id>/` path); its first frame claims the stream
  id it carries. Only the executor reads the handshake (none is done here: the relay does not
  look at it, and no stream is decrypted).

Those calls are the real ones (`RegistryClient`, HTTP through the balancer). After them a
`RawSocket` floods WebSocket binary frames built once: `RelayData` frames (`encode_data`) of
the stream(s) it owns, each masked with one random key chosen when the run starts, the whole
batch written with one `transport.write` at a time (as fast as the socket drains, or paced to a
rate). The receiving side counts WebSocket data frames and their bytes from their headers,
skipping the payloads (it answers pings, so the relay's heartbeat keeps the sockets). A
harness socket's first frame is a `RelayResume`, as a codex harness sends it.

Run as a worker (`python bench/flood_clients.py`), it speaks `fleet_clients.serve_commands`'
protocol; see `FloodWorker` for the commands.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))  # this checkout's execserver, not an installed one

from bench.fleet_clients import holder_of, serve_commands, to_node
from bench.wsclient import frame_header
from execserver.relay import api
from execserver.relay.frames import Frame, Resume, encode_data, encode_frame
from execserver.relay.noise import NoiseIdentity
from execserver.relay.registry_client import RegistryClient, registry_http_client

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - pure Python fallback
    from websockets.utils import apply_mask

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0x2, 0x8, 0x9, 0xA
UPGRADE_TIMEOUT_S = 30.0
BATCH_BYTES = 64 * 1024
"""Bytes of frames written at once in a flood (whole frames; at least one)."""
WRITE_HIGH_WATER = 256 * 1024
"""Bytes queued in a flooding socket's transport before it waits for the socket to drain."""
WRITES_PER_TURN = 8
"""Batches written before yielding to the event loop (the kernel may take them all)."""
SEND_BUFFER_BYTES = 128 * 1024
PACE_S = 0.01
"""The tick of a paced flood."""


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """One client-to-server WebSocket frame (FIN set, masked with a fresh random key)."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    mask = os.urandom(4)
    return header + mask + apply_mask(payload, mask)


def flood_batch(stream_ids: list[str], frame_bytes: int) -> tuple[bytes, int]:
    """WebSocket frames carrying `RelayData` frames of `frame_bytes` bytes each (at least the
    envelope), round robin over `stream_ids`, about `BATCH_BYTES` in all: (bytes, frames)."""
    frames: list[bytes] = []
    size = 0
    seq = 0
    while size < BATCH_BYTES or not frames:
        for stream_id in stream_ids:
            envelope = len(encode_data(stream_id, seq, b"x"))
            payload = os.urandom(max(1, frame_bytes - envelope + 1))
            frame = masked_frame(_OP_BINARY, encode_data(stream_id, seq, payload))
            frames.append(frame)
            size += len(frame)
        seq += 1
    return b"".join(frames), len(frames)


class RawSocket(asyncio.Protocol):
    """A client WebSocket that counts what it receives and floods pre-built bytes."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.transport: asyncio.Transport | None = None
        self.frames_in = 0
        self.bytes_in = 0
        self.frames_out = 0
        self.closed = False
        self._key = base64.b64encode(os.urandom(16))
        self._upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._head = bytearray()
        self._partial = b""
        self._skip = 0
        self._writable = asyncio.Event()
        self._writable.set()
        self._flood: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url: str) -> RawSocket:
        """Connect to `url` (ws://HOST:PORT/PATH?QUERY) and upgrade; raises ConnectionError
        with the answer's status line when the upgrade is refused."""
        parts = urlsplit(url)
        if parts.scheme != "ws" or parts.hostname is None or parts.port is None:
            raise ValueError(f"expected ws://HOST:PORT/…, got {url!r}")
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(UPGRADE_TIMEOUT_S):
            _, protocol = await loop.create_connection(lambda: cls(url), parts.hostname, parts.port)
            assert protocol.transport is not None
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            protocol.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
            # A small kernel buffer: a flood queues less that must drain after it stops.
            sock = protocol.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
            protocol.transport.write(
                f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {protocol._key.decode()}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            try:
                await protocol._upgraded
            except BaseException:
                protocol.abort()
                raise
        return protocol

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._writable.set()
        if not self._upgraded.done():
            self._upgraded.set_exception(ConnectionError(f"connection lost: {exc}"))

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def data_received(self, data: bytes) -> None:
        if not self._upgraded.done():
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = bytes(self._head[:end]), bytes(self._head[end + 4 :])
            self._head.clear()
            self._check_upgrade(head)
            if not self._upgraded.done() or self._upgraded.exception() is not None:
                return
        self._count(data)

    def _check_upgrade(self, head: bytes) -> None:
        status = head.split(b"\r\n", 1)[0]
        accept = base64.b64encode(hashlib.sha1(self._key + _GUID).digest())
        if b" 101 " not in status + b" " or accept.lower() not in head.lower():
            self._upgraded.set_exception(
                ConnectionError(f"upgrade refused: {status.decode(errors='replace')}")
            )
            self.abort()
            return
        self._upgraded.set_result(None)

    def _count(self, data: bytes) -> None:
        """Count the server's frames in `data` from their headers; payloads are skipped."""
        size = len(data)
        pos = 0
        if self._skip:
            pos = min(self._skip, size)
            self._skip -= pos
        if self._partial:
            data, size, pos = self._partial + data[pos:], len(self._partial) + size - pos, 0
            self._partial = b""
        while (parsed := frame_header(data, pos, size)) is not None:
            first, header, length = parsed
            opcode = first & 0x0F
            end = pos + header + length
            if opcode < 0x8:
                self.frames_in += opcode != 0  # a continuation is part of its message
                self.bytes_in += length
                if end > size:
                    self._skip = end - size
                    return
            else:
                if end > size:  # a control frame (at most 125 bytes): wait for all of it
                    break
                self._control(opcode, data[pos + header : end])
            pos = end
        self._partial = data[pos:]

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == _OP_PING and self.transport is not None:
            self.transport.write(masked_frame(_OP_PONG, payload))
        elif opcode == _OP_CLOSE:
            self.abort()

    # -- sending ----------------------------------------------------------------------------

    def send(self, payload: bytes) -> None:
        """One binary message."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(masked_frame(_OP_BINARY, payload))

    def start_flood(self, stream_ids: list[str], frame_bytes: int, rate: float) -> None:
        """Send `RelayData` frames of `stream_ids` until `stop_flood()`: as fast as the socket
        drains (`rate` 0), or `rate` frames per second."""
        batch, count = flood_batch(stream_ids, frame_bytes)
        self._flood = asyncio.get_running_loop().create_task(
            self._paced(batch, count, rate) if rate > 0 else self._drain(batch, count)
        )

    async def _drain(self, batch: bytes, count: int) -> None:
        transport = self.transport
        assert transport is not None
        while not self.closed:
            await self._writable.wait()
            for _ in range(WRITES_PER_TURN):
                if self.closed or not self._writable.is_set():
                    break
                transport.write(batch)
                self.frames_out += count
            await asyncio.sleep(0)

    async def _paced(self, batch: bytes, count: int, rate: float) -> None:
        """Write whole frames of `batch` so that `rate` per second have gone on average."""
        transport = self.transport
        assert transport is not None
        frame = len(batch) // count
        began = time.monotonic()
        sent = 0
        while not self.closed:
            due = int((time.monotonic() - began) * rate) - sent
            while due > 0 and not self.closed:
                await self._writable.wait()
                start = (sent % count) * frame
                take = min(due, count - sent % count)
                transport.write(batch[start : start + take * frame])
                sent += take
                due -= take
                self.frames_out += take
            await asyncio.sleep(PACE_S)

    async def stop_flood(self) -> None:
        if self._flood is not None:
            self._flood.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flood
            self._flood = None

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class FloodWorker:
    """Commands (one JSON object per line; each answered by one JSON line):

    - `{"cmd": "executors", "token": T, "registry_url": U, "envs": [env, …]}`: register each
      environment at `U` and attach a raw socket to its rendezvous URL; answers
      `{"attached": n}` once all are upgraded.
    - `{"cmd": "harnesses", "token": T, "registry_url": U, "streams": [[env, stream id,
      shift], …], "nodes": [node id, …]}`: `/connect` for env at `U`; the bundle's URL goes
      to the node `shift` places after the executor's in `nodes` (0: the executor's own),
      then a raw socket claims the stream with a `RelayResume`; answers
      `{"holders": [[stream id, executor's node id, harness's node id], …]}` (node ids are
      null for a relay that advertises no `/node/<id>/` URL).
    - `{"cmd": "flood", "targets": {key: [stream id, …]}, "frame_bytes": B, "rates": {key:
      R}}`: socket `key` (an env of `executors`, a stream id of `harnesses`) floods those
      streams with data frames of B bytes, at R frames/s (0 or absent: as fast as it drains);
      answers at once.
    - `{"cmd": "counts"}`: `{"at": monotonic time, "sockets": {key: [frames in, bytes in,
      frames out]}, "closed": [key, …]}`.
    - `{"cmd": "stop"}`: stop every flood. `{"cmd": "close"}`: close the harness sockets.
    """

    def __init__(self) -> None:
        self._http = registry_http_client()
        identity = NoiseIdentity.generate().public_key
        self._key = api.NoisePublicKey.from_raw(identity.x25519, identity.mlkem768)
        self.sockets: dict[str, RawSocket] = {}
        self.harnesses: list[str] = []

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        name = command["cmd"]
        if name == "executors":
            envs = command["envs"]
            await asyncio.gather(
                *(self._executor(command["registry_url"], command["token"], env) for env in envs)
            )
            return {"attached": len(envs)}
        if name == "harnesses":
            holders = await asyncio.gather(
                *(
                    self._harness(command, env, stream_id, int(shift))
                    for env, stream_id, shift in command["streams"]
                )
            )
            return {"holders": holders}
        if name == "flood":
            rates = command.get("rates") or {}
            for key, stream_ids in command["targets"].items():
                self.sockets[key].start_flood(
                    stream_ids, int(command["frame_bytes"]), float(rates.get(key, 0))
                )
            return {"flooding": len(command["targets"])}
        if name == "counts":
            return {
                "at": time.monotonic(),
                "sockets": {
                    key: [s.frames_in, s.bytes_in, s.frames_out] for key, s in self.sockets.items()
                },
                "closed": [key for key, s in self.sockets.items() if s.closed],
            }
        if name == "stop":
            await asyncio.gather(*(s.stop_flood() for s in self.sockets.values()))
            return {"stopped": True}
        if name == "close":
            for key in self.harnesses:
                self.sockets.pop(key).abort()
            self.harnesses.clear()
            return {"closed": True}
        raise ValueError(f"unknown command {name!r}")

    async def _executor(self, registry_url: str, token: str, env: str) -> None:
        registry = RegistryClient(registry_url, env, token, http=self._http)
        answer = await registry.register(self._key)
        self.sockets[env] = await RawSocket.open(answer.url)

    async def _harness(
        self, command: dict[str, Any], env: str, stream_id: str, shift: int
    ) -> list[str | None]:
        registry = RegistryClient(command["registry_url"], env, command["token"], http=self._http)
        bundle = await registry.connect(self._key)
        holder = node = holder_of(bundle.url)
        url = bundle.url
        if shift:
            nodes: list[str] = command["nodes"]
            if holder is None:
                raise ValueError(f"the bundle names no node: {bundle.url}")
            node = nodes[(nodes.index(holder) + shift) % len(nodes)]
            url = to_node(url, node)
        raw = await RawSocket.open(url)
        raw.send(encode_frame(Frame(stream_id, Resume())))
        self.sockets[stream_id] = raw
        self.harnesses.append(stream_id)
        return [stream_id, holder, node]

    async def aclose(self) -> None:
        for raw in self.sockets.values():
            await raw.stop_flood()
            raw.abort()
        await self._http.aclose()


if __name__ == "__main__":
    asyncio.run(serve_commands(FloodWorker()))
