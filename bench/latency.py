"""One-shot command latency, ours vs the reference, same client, interleaved.

Measures process/start of a command to its process/closed notification over one WebSocket
connection per server, alternating servers every round (A B B A ...), and prints p50/p95/p99.

    python bench/latency.py [--runs 100] [--argv /bin/true] [--ours URL] [--reference URL]

Without URLs it starts `python -m execserver serve` and the pinned `codex exec-server` itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness.servers import reference_command


def start(command: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    """Start a server that prints its URL as its first stdout line; exit with a one-line
    message (and its stderr) when it ends before announcing one."""
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr)
        assert process.stdout is not None
        url = process.stdout.readline().decode().strip()
        if not url:
            process.wait()
            stderr.seek(0)
            detail = stderr.read().decode(errors="replace").strip().splitlines()[-1:]
            raise SystemExit(f"server did not start: {' '.join(command)}: {' '.join(detail)}")
    return process, url


class Client:
    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.next_id = 0

    @classmethod
    async def connect(cls, url: str) -> Client:
        client = cls(await websockets.connect(url, max_size=None, ping_interval=None))
        await client.call("initialize", {"clientName": "bench"})
        await client.ws.send(json.dumps({"method": "initialized"}))
        return client

    async def call(self, method: str, params: dict[str, object]) -> dict[str, object]:
        self.next_id += 1
        await self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = msgspec.json.decode(await self.ws.recv(decode=False))
            if message.get("id") == self.next_id:
                return message  # type: ignore[no-any-return]

    async def call_raw(self, method: str, params: dict[str, object]) -> bytes:
        """Send a request and return the raw response frame (no JSON decoding: measures the
        server, not this client's parser)."""
        self.next_id += 1
        await self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        prefix = b'{"id":%d,' % self.next_id
        while True:
            frame = await self.ws.recv(decode=False)
            if frame.startswith(prefix):
                return frame

    async def one_shot(
        self, process_id: str, argv: list[str], tty: bool, extra: dict[str, object] | None = None
    ) -> float:
        """Seconds from sending process/start to its process/closed (`extra`: more params)."""
        params = {
            "processId": process_id,
            "argv": argv,
            "cwd": "file:///tmp",
            "env": {"PATH": "/usr/bin:/bin"},
            "tty": tty,
            **(extra or {}),
        }
        begin = time.perf_counter()
        self.next_id += 1
        await self.ws.send(
            json.dumps({"id": self.next_id, "method": "process/start", "params": params})
        )
        while True:
            message = json.loads(await self.ws.recv())
            if "error" in message:
                raise RuntimeError(message["error"])
            if (
                message.get("method") == "process/closed"
                and message["params"]["processId"] == process_id
            ):
                return time.perf_counter() - begin


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--argv", nargs="+", default=["/bin/true"])
    parser.add_argument("--tty", action="store_true")
    parser.add_argument("--ours")
    parser.add_argument("--reference")
    args = parser.parse_args()
    processes = []
    urls = {"ours": args.ours, "reference": args.reference}
    if urls["ours"] is None:
        process, urls["ours"] = start([sys.executable, "-m", "execserver", "serve"])
        processes.append(process)
    if urls["reference"] is None:
        process, urls["reference"] = start(reference_command())
        processes.append(process)
    try:
        clients = {name: await Client.connect(url) for name, url in urls.items()}
        samples: dict[str, list[float]] = {name: [] for name in clients}
        for client in clients.values():  # warm-up
            for i in range(5):
                await client.one_shot(f"warm{i}", args.argv, args.tty)
        order = ["ours", "reference"]
        for run in range(args.runs):
            for name in order if run % 2 == 0 else reversed(order):
                samples[name].append(await clients[name].one_shot(f"r{run}", args.argv, args.tty))
        mode = " (tty)" if args.tty else ""
        print(f"start->closed of {' '.join(args.argv)}{mode}, {args.runs} runs, ms")
        for name, values in samples.items():
            ms = [v * 1000 for v in values]
            print(
                f"  {name:9s} p50 {statistics.median(ms):7.2f}  p95 {percentile(ms, 0.95):7.2f}  "
                f"p99 {percentile(ms, 0.99):7.2f}  min {min(ms):6.2f}"
            )
        ratio = statistics.median(samples["ours"]) / statistics.median(samples["reference"])
        print(f"  ratio ours/reference (p50): {ratio:.3f}")
    finally:
        for process in processes:
            process.terminate()
            process.wait()


if __name__ == "__main__":
    asyncio.run(main())
