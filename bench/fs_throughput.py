"""Filesystem throughput, ours vs the reference, same client, interleaved runs.

    python bench/fs_throughput.py [--runs 3] [--read-mib 64] [--stream-mib 256]

Measures a whole-file `fs/readFile` of `--read-mib` MiB and an `fs/readBlock` stream of
`--stream-mib` MiB in 1 MiB blocks (one request in flight), and prints MB/s (median of runs).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness.servers import reference_command

from bench.latency import Client, start

MiB = 1024 * 1024


async def read_file(client: Client, path: str) -> int:
    frame = await client.call_raw("fs/readFile", {"path": "file://" + path})
    if b'"result"' not in frame[:40]:
        raise RuntimeError(frame[:200].decode())
    # Base64 size to data size, without decoding (the client's speed is not measured).
    encoded = len(frame) - frame.index(b'"dataBase64":"') - len(b'"dataBase64":"') - 3
    return encoded * 3 // 4


async def read_blocks(client: Client, path: str) -> int:
    handle = f"h{time.monotonic_ns()}"
    await client.call("fs/open", {"handleId": handle, "path": "file://" + path})
    offset = 0
    while True:
        result = (
            await client.call("fs/readBlock", {"handleId": handle, "offset": offset, "len": MiB})
        )["result"]
        offset += len(base64.b64decode(result["chunk"]))  # type: ignore[index]
        if result["eof"]:  # type: ignore[index]
            break
    await client.call("fs/close", {"handleId": handle})
    return offset


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--read-mib", type=int, default=64)
    parser.add_argument("--stream-mib", type=int, default=256)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="execserver-bench-"))
    small, large = workdir / "read.bin", workdir / "stream.bin"
    small.write_bytes(os.urandom(args.read_mib * MiB))
    with open(large, "wb") as f:
        for _ in range(args.stream_mib):
            f.write(os.urandom(MiB))
    ours, ours_url = start([sys.executable, "-m", "execserver", "serve"])
    theirs, their_url = start(reference_command())
    try:
        clients = {
            "ours": await Client.connect(ours_url),
            "reference": await Client.connect(their_url),
        }
        metrics = {
            f"fs/readFile {args.read_mib} MiB": (read_file, str(small)),
            f"fs/readBlock stream {args.stream_mib} MiB": (read_blocks, str(large)),
        }
        for label, (function, path) in metrics.items():
            rates: dict[str, list[float]] = {name: [] for name in clients}
            for run in range(args.runs):
                names = ["ours", "reference"] if run % 2 == 0 else ["reference", "ours"]
                for name in names:
                    begin = time.perf_counter()
                    size = await function(clients[name], path)
                    rates[name].append(size / MiB / (time.perf_counter() - begin))
            ours_rate = statistics.median(rates["ours"])
            their_rate = statistics.median(rates["reference"])
            print(
                f"{label}: ours {ours_rate:7.1f} MB/s  reference {their_rate:7.1f} MB/s  "
                f"ratio {ours_rate / their_rate:.2f}"
            )
    finally:
        for process in (ours, theirs):
            process.terminate()
            process.wait()
        for path in (small, large):
            path.unlink()
        workdir.rmdir()


if __name__ == "__main__":
    asyncio.run(main())
