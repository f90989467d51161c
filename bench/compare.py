"""Side-by-side benchmark: our exec-server vs the pinned reference (`codex exec-server` 0.169.0).

    .venv/bin/python bench/compare.py [--quick] [--rounds N] [--only METRIC[,METRIC]]
                                      [--ours URL] [--reference URL] [--json PATH]
                                      [--ours-command CMD] [--reference-command CMD]
    .venv/bin/python bench/compare.py --render bench/results.json [--markdown]

Without URLs both servers are started here on 127.0.0.1 (and stopped at the end, also on Ctrl-C);
with a URL that server is used as is, and the metrics that need its pid (RSS, CPU) are skipped.
`--ours-command`/`--reference-command` start a different command in that slot (it must print
its ws:// URL first), e.g. an older checkout of ours to measure a change before and after.
Every metric runs on both servers through the same client (bench/wsclient.py), interleaved per
round (A B, B A, A B, ...), each run on a fresh connection. Metric names are stable keys of the
JSON output (docs/BENCHMARKS.md explains them); `--only` takes names or globs (`oneshot_*`).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import base64
import contextlib
import fnmatch
import math
import os
import platform
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness.servers import REFERENCE_CODEX_HOME, ours_command, reference_command

from bench.wsclient import ProcessParams, RpcPeer, WsRpc, b64_decoded_len, retrieve

MiB = 1024 * 1024
SERVERS = ("ours", "reference")
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Every run opens fresh connections, and a closed connection leaves a detached session behind for
# 80 s (both servers). Ours caps sessions at 256 by default, which a full run would reach; the cap
# is a plain count check, so raising it does not change what is measured.
OURS_EXTRA = ["--max-sessions", "100000"]
SMALL_TIMEOUT = 30.0  # any single small request, connect, or one-shot process
LARGE_TIMEOUT = 180.0  # a whole large transfer (256 MiB of output, a 32 MiB file, ...)


# -- settings -------------------------------------------------------------------------------


@dataclass
class Settings:
    """Iteration counts (per server, per round) and sizes."""

    rounds: int = 5
    warmup: int = 2  # unrecorded iterations at the start of each latency run
    oneshot: int = 30
    echo: int = 50
    output_bytes: int = 256 * MiB
    file_1m_reads: int = 20
    file_32m_reads: int = 3
    block_bytes: int = 256 * MiB
    readdir_entries: int = 10_000
    readdir_calls: int = 10
    metadata_calls: int = 500
    connects: int = 30
    pipelined_total: int = 10_000
    pipelined_window: int = 64

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            rounds=3,
            warmup=1,
            oneshot=15,
            echo=20,
            output_bytes=128 * MiB,
            file_1m_reads=10,
            file_32m_reads=2,
            block_bytes=128 * MiB,
            readdir_calls=5,
            metadata_calls=300,
            connects=15,
            pipelined_total=5_000,
        )


# -- servers --------------------------------------------------------------------------------


class ServerFailed(Exception):
    pass


@dataclass
class Server:
    name: str
    url: str
    process: asyncio.subprocess.Process | None = None
    stderr_path: Path | None = None
    command: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def _read_proc(self, name: str) -> str | None:
        if self.pid is None:
            return None
        try:
            return Path(f"/proc/{self.pid}/{name}").read_text()
        except OSError:
            return None

    def cpu_seconds(self) -> float | None:
        """utime + stime of the server process (all its threads, not its children)."""
        stat = self._read_proc("stat")
        if stat is None:
            return None
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def side_cpu_seconds(self) -> dict[str, float]:
        """CPU seconds of other processes this slot depends on (e.g. a relay), by name; the
        runner records them per run next to `cpu_s` (none for a plain server)."""
        return {}

    async def open(self, quickack: bool = False) -> RpcPeer:
        """A fresh initialized connection to this slot (a WebSocket to `url` here)."""
        return await WsRpc.open(self.url, quickack=quickack, timeout=SMALL_TIMEOUT)

    def rss_mib(self) -> float | None:
        status = self._read_proc("status")
        if status is None:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return None

    def stderr_tail(self, lines: int = 20) -> str:
        if self.stderr_path is None:
            return ""
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def check_alive(self) -> None:
        """Raise ServerFailed if the server has exited (waiting briefly, as a run that just failed
        may have seen the connection drop before the exit was reaped)."""
        if self.process is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.process.wait()), 0.5)
        if self.process.returncode is not None:
            raise ServerFailed(
                f"{self.name} server exited with status {self.process.returncode}; "
                f"stderr:\n{self.stderr_tail()}"
            )


_STARTED_PIDS: set[int] = set()


@atexit.register
def _kill_leftover_servers() -> None:
    for pid in list(_STARTED_PIDS):
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)


async def start_server(
    name: str,
    workdir: Path,
    command: list[str] | None = None,
    *,
    env: dict[str, str] | None = None,
    announces: str | None = "ws://",
) -> Server:
    """Start `command` (by default ours or the reference by `name`) in its own process group.
    It must print its URL, starting with `announces`, as its first stdout line; with
    `announces=None` nothing is read (an executor that only dials out) and `url` stays empty."""
    if command is None:
        command = ours_command(extra=OURS_EXTRA) if name == "ours" else reference_command()
    stderr_path = workdir / f"{name}.stderr"
    env = {**os.environ, **(env or {})}
    REFERENCE_CODEX_HOME.mkdir(parents=True, exist_ok=True)
    env.setdefault("CODEX_HOME", str(REFERENCE_CODEX_HOME))
    with open(stderr_path, "wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env=env,
            cwd=str(workdir),
            start_new_session=True,  # Ctrl-C reaches only us; we stop the servers ourselves
        )
    _STARTED_PIDS.add(process.pid)
    server = Server(name, "", process, stderr_path, command)
    if announces is None:
        return server
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 30)
    except TimeoutError:
        await stop_server(server)
        raise ServerFailed(
            f"{name} server printed no URL in 30 s: {server.stderr_tail()}"
        ) from None
    server.url = line.decode().strip()
    if not server.url.startswith(announces):
        await stop_server(server)
        raise ServerFailed(f"{name} server printed {line!r}; stderr:\n{server.stderr_tail()}")
    return server


async def stop_server(server: Server) -> None:
    process = server.process
    if process is None:
        return
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    _STARTED_PIDS.discard(process.pid)


# -- helpers used by metrics ----------------------------------------------------------------


@dataclass
class Context:
    settings: Settings
    workdir: Path
    counter: int = 0

    def fresh_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{os.getpid()}-{self.counter}"

    def uri(self, name: str) -> str:
        return "file://" + str(self.workdir / name)


def process_params(process_id: str, argv: list[str], tty: bool = False, **extra: Any) -> Any:
    params = {
        "processId": process_id,
        "argv": argv,
        "cwd": "file:///tmp",
        "env": {"PATH": "/usr/bin:/bin"},
        "tty": tty,
    }
    params.update(extra)
    return params


class Watch:
    """Follows one process's notifications: output bytes (and data, if asked), closed time."""

    def __init__(self, conn: RpcPeer, process_id: str, keep_data: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self.conn = conn
        self.process_id = process_id
        self.closed: asyncio.Future[float] = loop.create_future()
        self.closed.add_done_callback(retrieve)
        self.output_bytes = 0
        self.keep_data = keep_data
        self.data = bytearray()
        self.waiter: asyncio.Future[float] | None = None
        conn.process_callbacks[process_id] = self._event

    def _event(self, method: str, params: ProcessParams) -> None:
        if method == "process/output":
            self.output_bytes += b64_decoded_len(params.chunk)
            if self.keep_data:
                self.data += base64.b64decode(params.chunk)
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(time.perf_counter())
        elif method == "process/closed":
            if not self.closed.done():
                self.closed.set_result(time.perf_counter())
        elif method == "connection/lost":
            self.fail(ConnectionError("connection lost"))

    def fail(self, error: BaseException) -> None:
        for future in (self.closed, self.waiter):
            if future is not None and not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: whoever awaits it still gets it

    def follow(self, start: asyncio.Future[Any]) -> None:
        """Fail the waits as soon as `process/start` fails (no notification will come)."""

        def done(future: asyncio.Future[Any]) -> None:
            if not future.cancelled() and future.exception() is not None:
                self.fail(future.exception())  # type: ignore[arg-type]

        start.add_done_callback(done)

    def forget(self) -> None:
        self.conn.process_callbacks.pop(self.process_id, None)


@contextlib.asynccontextmanager
async def connection(server: Server, quickack: bool = False) -> AsyncIterator[RpcPeer]:
    conn = await server.open(quickack)
    try:
        yield conn
    finally:
        conn.close()


def b64_field_len(frame: bytes, key: bytes) -> int:
    """Decoded size of the base64 string member `key` of a raw response frame."""
    marker = b'"' + key + b'":"'
    start = frame.find(marker)
    if start < 0:
        raise RuntimeError(f"no {key.decode()} in response: {frame[:200]!r}")
    start += len(marker)
    end = frame.index(b'"', start)
    n = end - start
    if n == 0:
        return 0
    pad = (frame[end - 1] == ord("=")) + (frame[end - 2] == ord("="))
    return n // 4 * 3 - pad


# -- metrics --------------------------------------------------------------------------------

MetricRun = Callable[[Server, Context], Awaitable[list[float]]]


@dataclass
class Metric:
    name: str
    unit: str
    better: str  # "lower" or "higher"
    run: MetricRun
    description: str
    extra_rows: tuple[str, ...] = ()  # percentiles shown as extra table rows
    once: bool = False  # measured once, before everything else (state-dependent: RSS)
    needs_pid: bool = False
    params: Callable[[Settings], dict[str, Any]] = lambda s: {}


def oneshot(argv: list[str], tty: bool, quickack: bool) -> MetricRun:
    async def run(server: Server, ctx: Context) -> list[float]:
        samples: list[float] = []
        async with connection(server, quickack) as conn:
            for i in range(ctx.settings.warmup + ctx.settings.oneshot):
                process_id = ctx.fresh_id("one")
                watch = Watch(conn, process_id)
                begin = time.perf_counter()
                start = conn.request("process/start", process_params(process_id, argv, tty))
                watch.follow(start)
                end = await asyncio.wait_for(watch.closed, SMALL_TIMEOUT)
                await asyncio.wait_for(start, SMALL_TIMEOUT)
                watch.forget()
                if i >= ctx.settings.warmup:
                    samples.append((end - begin) * 1000)
        return samples

    return run


def burst(count: int) -> MetricRun:
    async def run(server: Server, ctx: Context) -> list[float]:
        async with connection(server) as conn:
            return [await run_burst(conn, ctx, count)]

    return run


async def wait_all(futures: list[asyncio.Future[Any]], timeout: float) -> list[Any]:
    """The results of all `futures` (the first exception is raised), or TimeoutError."""
    _, pending = await asyncio.wait(futures, timeout=timeout)
    if pending:
        raise TimeoutError(f"{len(pending)} of {len(futures)} still pending after {timeout} s")
    return [future.result() for future in futures]


async def run_burst(conn: RpcPeer, ctx: Context, count: int) -> float:
    watches = [Watch(conn, ctx.fresh_id("burst")) for _ in range(count)]
    begin = time.perf_counter()
    starts = []
    for watch in watches:
        start = conn.request("process/start", process_params(watch.process_id, ["/bin/true"]))
        watch.follow(start)
        starts.append(start)
    ends: list[float] = await wait_all([watch.closed for watch in watches], LARGE_TIMEOUT)
    await wait_all(starts, SMALL_TIMEOUT)
    for watch in watches:
        watch.forget()
    return (max(ends) - begin) * 1000


async def output_mbps(server: Server, ctx: Context) -> list[float]:
    size = ctx.settings.output_bytes
    async with connection(server) as conn:
        process_id = ctx.fresh_id("out")
        watch = Watch(conn, process_id)
        begin = time.perf_counter()
        start = conn.request(
            "process/start", process_params(process_id, ["head", "-c", str(size), "/dev/zero"])
        )
        watch.follow(start)
        end = await asyncio.wait_for(watch.closed, LARGE_TIMEOUT)
        await start
        if watch.output_bytes != size:
            raise RuntimeError(f"got {watch.output_bytes} bytes of output, expected {size}")
        return [size / MiB / (end - begin)]


def echo_rtt(quickack: bool) -> MetricRun:
    async def run(server: Server, ctx: Context) -> list[float]:
        loop = asyncio.get_running_loop()
        samples: list[float] = []
        async with connection(server, quickack) as conn:
            process_id = ctx.fresh_id("cat")
            watch = Watch(conn, process_id, keep_data=True)
            start = conn.request(
                "process/start", process_params(process_id, ["cat"], pipeStdin=True)
            )
            watch.follow(start)
            await asyncio.wait_for(start, SMALL_TIMEOUT)
            for i in range(ctx.settings.warmup + ctx.settings.echo):
                token = b"%08d\n" % i
                watch.data.clear()
                watch.waiter = loop.create_future()
                begin = time.perf_counter()
                write = conn.request(
                    "process/write",
                    {
                        "processId": process_id,
                        "chunk": base64.b64encode(token).decode(),
                        "writeId": f"w{i}",
                    },
                )
                while True:
                    arrived = await asyncio.wait_for(watch.waiter, SMALL_TIMEOUT)
                    if watch.data.endswith(token):
                        break
                    watch.waiter = loop.create_future()
                result = await asyncio.wait_for(write, SMALL_TIMEOUT)
                if result.get("status") != "accepted":
                    raise RuntimeError(f"process/write answered {result}")
                if i >= ctx.settings.warmup:
                    samples.append((arrived - begin) * 1000)
            watch.waiter = None
            await conn.call("process/terminate", {"processId": process_id}, SMALL_TIMEOUT)
            await asyncio.wait_for(watch.closed, SMALL_TIMEOUT)
        return samples

    return run


def read_file(name: str, size: int, calls: Callable[[Settings], int]) -> MetricRun:
    async def run(server: Server, ctx: Context) -> list[float]:
        samples = []
        async with connection(server) as conn:
            for _ in range(calls(ctx.settings)):
                begin = time.perf_counter()
                frame = await conn.call_raw("fs/readFile", {"path": ctx.uri(name)}, LARGE_TIMEOUT)
                elapsed = time.perf_counter() - begin
                got = b64_field_len(frame, b"dataBase64")
                if got != size:
                    raise RuntimeError(f"fs/readFile returned {got} bytes, expected {size}")
                samples.append(size / MiB / elapsed)
        return samples

    return run


def write_file(size: int, calls: Callable[[Settings], int]) -> MetricRun:
    async def run(server: Server, ctx: Context) -> list[float]:
        target = ctx.workdir / f"write-{server.name}-{size}.bin"
        # Encoded once, outside the timing: the client's base64 and JSON work is not measured.
        params_json = msgspec.json.encode(
            {
                "path": "file://" + str(target),
                "dataBase64": base64.b64encode(os.urandom(size)).decode(),
            }
        )
        samples = []
        async with connection(server) as conn:
            for _ in range(calls(ctx.settings)):
                begin = time.perf_counter()
                future = conn.request("fs/writeFile", raw=True, params_json=params_json)
                await asyncio.wait_for(future, LARGE_TIMEOUT)
                samples.append(size / MiB / (time.perf_counter() - begin))
        if target.stat().st_size != size:
            raise RuntimeError(f"fs/writeFile left {target.stat().st_size} bytes, expected {size}")
        target.unlink()
        return samples

    return run


async def readblock(server: Server, ctx: Context) -> list[float]:
    size = ctx.settings.block_bytes
    async with connection(server) as conn:
        handle = ctx.fresh_id("h")
        begin = time.perf_counter()
        await conn.call("fs/open", {"handleId": handle, "path": ctx.uri("block.bin")})
        offset = 0
        while True:
            frame = await conn.call_raw(
                "fs/readBlock", {"handleId": handle, "offset": offset, "len": MiB}
            )
            offset += b64_field_len(frame, b"chunk")
            if (
                frame.rfind(b'"eof":true', len(frame) - 24) >= 0
                or frame.find(b'"eof":true', 0, 64) >= 0
            ):
                break
            if offset > size:
                raise RuntimeError("fs/readBlock read past the end of the file")
        await conn.call("fs/close", {"handleId": handle})
        elapsed = time.perf_counter() - begin
    if offset != size:
        raise RuntimeError(f"fs/readBlock stream returned {offset} bytes, expected {size}")
    return [size / MiB / elapsed]


async def readdir(server: Server, ctx: Context) -> list[float]:
    samples = []
    async with connection(server) as conn:
        for _ in range(ctx.settings.readdir_calls):
            begin = time.perf_counter()
            frame = await conn.call_raw("fs/readDirectory", {"path": ctx.uri("dir10k")})
            samples.append((time.perf_counter() - begin) * 1000)
        entries = msgspec.json.decode(frame)["result"]["entries"]
        if len(entries) != ctx.settings.readdir_entries:
            raise RuntimeError(f"fs/readDirectory listed {len(entries)} entries")
    return samples


async def getmetadata(server: Server, ctx: Context) -> list[float]:
    samples = []
    params = {"path": ctx.uri("small.txt")}
    async with connection(server) as conn:
        for i in range(ctx.settings.warmup * 10 + ctx.settings.metadata_calls):
            begin = time.perf_counter()
            await conn.call_raw("fs/getMetadata", params)
            if i >= ctx.settings.warmup * 10:
                samples.append((time.perf_counter() - begin) * 1e6)
    return samples


async def connect_init(server: Server, ctx: Context) -> list[float]:
    samples = []
    for _ in range(ctx.settings.connects):
        begin = time.perf_counter()
        conn = await server.open()  # ends with `initialized` sent
        samples.append((time.perf_counter() - begin) * 1000)
        conn.close()
    return samples


async def pipelined_rps(server: Server, ctx: Context) -> list[float]:
    total, window = ctx.settings.pipelined_total, ctx.settings.pipelined_window
    params = {"path": ctx.uri("small.txt")}
    async with connection(server) as conn:
        for _ in range(20):
            await conn.call_raw("fs/getMetadata", params)
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[float] = loop.create_future()
        state = {"sent": 0, "done": 0}

        def send() -> None:
            state["sent"] += 1
            conn.request("fs/getMetadata", params, raw=True).add_done_callback(answered)

        def answered(future: asyncio.Future[Any]) -> None:
            if finished.done():
                return
            if future.cancelled() or future.exception() is not None:
                finished.set_exception(future.exception() or RuntimeError("request cancelled"))
                return
            state["done"] += 1
            if state["sent"] < total:
                send()
            elif state["done"] == total:
                finished.set_result(time.perf_counter())

        begin = time.perf_counter()
        for _ in range(min(window, total)):
            send()
        end = await asyncio.wait_for(finished, LARGE_TIMEOUT)
    return [total / (end - begin)]


def rss_of(server: Server) -> float:
    rss = server.rss_mib()
    if rss is None:
        raise RuntimeError("cannot read VmRSS of the server")
    return rss


async def rss_idle(server: Server, ctx: Context) -> list[float]:
    await asyncio.sleep(0.5)
    return [rss_of(server)]


async def rss_10_sessions(server: Server, ctx: Context) -> list[float]:
    conns = []
    try:
        for _ in range(10):
            conns.append(await server.open())
        for conn in conns:
            await conn.call("environment/status", None, SMALL_TIMEOUT)
        await asyncio.sleep(0.3)
        return [rss_of(server)]
    finally:
        for conn in conns:
            conn.close()


async def rss_after_200_processes(server: Server, ctx: Context) -> list[float]:
    async with connection(server) as conn:
        await run_burst(conn, ctx, 200)
        await asyncio.sleep(0.3)
        return [rss_of(server)]


METRICS: list[Metric] = []
for _suffix, _quickack in (("", False), ("_quickack", True)):
    for _name, _argv, _tty in (
        ("oneshot_true", ["/bin/true"], False),
        ("oneshot_echo", ["sh", "-c", "echo hi"], False),
        ("oneshot_tty", ["sh", "-c", "echo hi"], True),
    ):
        METRICS.append(
            Metric(
                _name + _suffix,
                "ms",
                "lower",
                oneshot(_argv, _tty, _quickack),
                f"process/start -> process/closed of {shlex.join(_argv)}"
                + (" (tty)" if _tty else "")
                + (", quick-ACK client" if _quickack else ""),
                extra_rows=("p95", "p99"),
                params=lambda s: {"iterations": s.oneshot, "warmup": s.warmup},
            )
        )
METRICS += [
    Metric(
        "burst_50",
        "ms",
        "lower",
        burst(50),
        "50 pipelined process/start of /bin/true, until all closed",
    ),
    Metric(
        "burst_200",
        "ms",
        "lower",
        burst(200),
        "200 pipelined process/start of /bin/true, until all closed",
    ),
    Metric(
        "output_mbps",
        "MiB/s",
        "higher",
        output_mbps,
        "process output of head -c SIZE /dev/zero, start -> closed",
        params=lambda s: {"bytes": s.output_bytes},
    ),
    Metric(
        "echo_rtt",
        "ms",
        "lower",
        echo_rtt(False),
        "process/write of 9 bytes to cat (pipeStdin) -> matching process/output",
        extra_rows=("p99",),
        params=lambda s: {"iterations": s.echo, "warmup": s.warmup},
    ),
    Metric(
        "echo_rtt_quickack",
        "ms",
        "lower",
        echo_rtt(True),
        "echo_rtt with the quick-ACK client",
        extra_rows=("p99",),
        params=lambda s: {"iterations": s.echo, "warmup": s.warmup},
    ),
    Metric(
        "readfile_1m",
        "MiB/s",
        "higher",
        read_file("file1m.bin", MiB, lambda s: s.file_1m_reads),
        "fs/readFile of a 1 MiB file (one sample per call)",
        params=lambda s: {"calls": s.file_1m_reads},
    ),
    Metric(
        "readfile_32m",
        "MiB/s",
        "higher",
        read_file("file32m.bin", 32 * MiB, lambda s: s.file_32m_reads),
        "fs/readFile of a 32 MiB file (one sample per call)",
        params=lambda s: {"calls": s.file_32m_reads},
    ),
    Metric(
        "readfile_64m",
        "MiB/s",
        "higher",
        read_file("file64m.bin", 64 * MiB, lambda s: s.file_32m_reads),
        "fs/readFile of a 64 MiB file (one sample per call)",
        params=lambda s: {"calls": s.file_32m_reads},
    ),
    Metric(
        "writefile_1m",
        "MiB/s",
        "higher",
        write_file(MiB, lambda s: s.file_1m_reads),
        "fs/writeFile of 1 MiB (one sample per call)",
        params=lambda s: {"calls": s.file_1m_reads},
    ),
    Metric(
        "writefile_32m",
        "MiB/s",
        "higher",
        write_file(32 * MiB, lambda s: s.file_32m_reads),
        "fs/writeFile of 32 MiB (one sample per call)",
        params=lambda s: {"calls": s.file_32m_reads},
    ),
    Metric(
        "readblock_256m",
        "MiB/s",
        "higher",
        readblock,
        "fs/open + fs/readBlock of 1 MiB blocks, one in flight, + fs/close",
        params=lambda s: {"bytes": s.block_bytes},
    ),
    Metric(
        "readdir_10k",
        "ms",
        "lower",
        readdir,
        "fs/readDirectory of a directory with 10k entries",
        params=lambda s: {"entries": s.readdir_entries, "calls": s.readdir_calls},
    ),
    Metric(
        "getmetadata",
        "µs",
        "lower",
        getmetadata,
        "fs/getMetadata of a file, one request in flight",
        extra_rows=("p99",),
        params=lambda s: {"calls": s.metadata_calls},
    ),
    Metric(
        "connect_init",
        "ms",
        "lower",
        connect_init,
        "TCP connect + WebSocket upgrade + initialize + initialized",
        params=lambda s: {"connects": s.connects},
    ),
    Metric(
        "pipelined_rps",
        "req/s",
        "higher",
        pipelined_rps,
        "fs/getMetadata with a window of 64 requests in flight",
        params=lambda s: {"requests": s.pipelined_total, "window": s.pipelined_window},
    ),
    Metric(
        "rss_idle",
        "MiB",
        "lower",
        rss_idle,
        "server VmRSS right after start, before any benchmark traffic",
        once=True,
        needs_pid=True,
    ),
    Metric(
        "rss_10_sessions",
        "MiB",
        "lower",
        rss_10_sessions,
        "server VmRSS with 10 initialized connections open (measured after rss_idle)",
        once=True,
        needs_pid=True,
    ),
    Metric(
        "rss_after_200_processes",
        "MiB",
        "lower",
        rss_after_200_processes,
        "server VmRSS after 200 /bin/true processes ran (still retained), after rss_10_sessions",
        once=True,
        needs_pid=True,
    ),
]
METRICS_BY_NAME = {metric.name: metric for metric in METRICS}


# -- test data ------------------------------------------------------------------------------


def prepare_files(ctx: Context, metrics: list[Metric]) -> None:
    names = {metric.name for metric in metrics}
    workdir = ctx.workdir
    (workdir / "small.txt").write_bytes(b"hello\n")
    if "readfile_1m" in names:
        (workdir / "file1m.bin").write_bytes(os.urandom(MiB))
    if "readfile_32m" in names:
        (workdir / "file32m.bin").write_bytes(os.urandom(32 * MiB))
    if "readfile_64m" in names:
        (workdir / "file64m.bin").write_bytes(os.urandom(64 * MiB))
    if "readblock_256m" in names:
        with open(workdir / "block.bin", "wb") as f:
            chunk = os.urandom(8 * MiB)
            for _ in range(ctx.settings.block_bytes // len(chunk)):
                f.write(chunk)
            f.write(chunk[: ctx.settings.block_bytes % len(chunk)])
    if "readdir_10k" in names:
        directory = workdir / "dir10k"
        directory.mkdir()
        for i in range(ctx.settings.readdir_entries):
            (directory / f"entry-{i:05d}").touch()


# -- statistics and output ------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def summarize(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "n": len(values),
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "mean": statistics.fmean(values),
        "p95": percentile(values, 0.95),
        "p99": percentile(values, 0.99),
    }


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:.0f}"
    if magnitude >= 100:
        return f"{value:.1f}"
    if magnitude >= 10:
        return f"{value:.2f}"
    return f"{value:.3f}"


def summary_cell(record: dict[str, Any]) -> str:
    if record.get("skipped"):
        return "skipped"
    summary = record.get("summary")
    if summary is None:
        return "error" if record["errors"] else "-"
    if summary["n"] == 1:
        return fmt(summary["median"])
    return f"{fmt(summary['median'])} [{fmt(summary['min'])}..{fmt(summary['max'])}]"


def cpu_cell(record: dict[str, Any]) -> str:
    value = record.get("cpu_s_median")
    return "-" if value is None else f"{value:.2f}"


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, entry in results["metrics"].items():
        per_server = entry["servers"]
        summaries = {server: per_server[server].get("summary") for server in SERVERS}
        ratio = entry.get("ratio")
        rows.append(
            [
                name,
                entry["unit"],
                entry["better"],
                summary_cell(per_server["ours"]),
                summary_cell(per_server["reference"]),
                "-" if ratio is None else f"{ratio:.2f}",
                cpu_cell(per_server["ours"]),
                cpu_cell(per_server["reference"]),
            ]
        )
        for extra in entry.get("extra_rows", []):
            values = [summaries[server][extra] if summaries[server] else None for server in SERVERS]
            extra_ratio = values[0] / values[1] if values[0] and values[1] else None
            rows.append(
                [
                    f"  {extra}",
                    entry["unit"],
                    entry["better"],
                    fmt(values[0]),
                    fmt(values[1]),
                    "-" if extra_ratio is None else f"{extra_ratio:.2f}",
                    "",
                    "",
                ]
            )
    return rows


HEADER = [
    "metric",
    "unit",
    "better",
    "ours median [min..max]",
    "reference median [min..max]",
    "ours/ref",
    "cpu_s ours",
    "cpu_s ref",
]


def format_table(
    header: list[str],
    rows: list[list[str]],
    markdown: bool,
    notes: Sequence[str] = (),
    figures_from: int = 3,
) -> str:
    """Rows as Markdown or as aligned text (columns before `figures_from` left-aligned, the
    figures right-aligned, `notes` below the text table)."""
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in rows:
            first = row[0].replace("  ", "&nbsp;&nbsp;")  # keep the p95/p99 rows indented
            lines.append("| " + " | ".join([first, *row[1:]]) + " |")
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "  ".join(
            cell.rjust(widths[i]) if i >= figures_from else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()

    out = [line(header), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in rows]
    out += [f"note: {note}" for note in notes]
    return "\n".join(out)


def render(results: dict[str, Any], markdown: bool) -> str:
    return format_table(HEADER, table_rows(results), markdown, results.get("notes") or [])


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# -- driver ---------------------------------------------------------------------------------


class Runner:
    """Runs every metric on every slot (`slots`, in that order in even rounds and reversed in
    odd ones) and compares the slots of each pair in `pairs` (first ÷ second)."""

    def __init__(
        self,
        servers: dict[str, Server],
        ctx: Context,
        metrics: list[Metric],
        *,
        slots: tuple[str, ...] = SERVERS,
        pairs: tuple[tuple[str, str], ...] = (SERVERS,),
    ) -> None:
        self.servers = servers
        self.ctx = ctx
        self.metrics = metrics
        self.slots = slots
        self.pairs = pairs
        self.notes: list[str] = []
        self.data: dict[str, dict[str, dict[str, Any]]] = {
            metric.name: {
                name: {"samples": [], "rounds": [], "cpu_s": [], "errors": []} for name in slots
            }
            for metric in metrics
        }

    async def run_one(self, metric: Metric, server: Server, round_index: int) -> None:
        record = self.data[metric.name][server.name]
        if record.get("skipped"):
            return
        cpu_before = server.cpu_seconds()
        side_before = server.side_cpu_seconds()
        try:
            samples = await metric.run(server, self.ctx)
        except Exception as error:
            message = f"{type(error).__name__}: {error}"
            record["errors"].append({"round": round_index, "error": message})
            print(f"  ERROR {metric.name} on {server.name}: {message}", file=sys.stderr)
            await server.check_alive()
            return
        cpu_after = server.cpu_seconds()
        side_after = server.side_cpu_seconds()
        record["samples"].extend(samples)
        record["rounds"].append(samples)
        if cpu_before is not None and cpu_after is not None:
            record["cpu_s"].append(round(cpu_after - cpu_before, 4))
        for key, before in side_before.items():
            if key in side_after:
                side = record.setdefault("side_cpu_s", {}).setdefault(key, [])
                side.append(round(side_after[key] - before, 4))

    def order(self, round_index: int) -> list[Server]:
        names = list(self.slots) if round_index % 2 == 0 else list(reversed(self.slots))
        return [self.servers[name] for name in names]

    async def run(self, rounds: int) -> None:
        runnable = list(self.metrics)
        for metric in self.metrics:
            external = [s.name for s in self.servers.values() if s.pid is None]
            if metric.needs_pid and external:
                for name in external:
                    self.data[metric.name][name]["skipped"] = True
                if len(external) == len(self.servers):
                    runnable.remove(metric)
                self.notes.append(
                    f"{metric.name} skipped for {', '.join(external)}: "
                    "needs the pid of a server started here"
                )
        if any(s.pid is None for s in self.servers.values()):
            self.notes.append("cpu_s is only reported for servers started by this script")
        once = [m for m in runnable if m.once]
        repeated = [m for m in runnable if not m.once]
        for metric in once:
            for server in self.order(0):
                await self.run_one(metric, server, 0)
        if repeated:
            await self.warm_up()
        started = time.monotonic()
        for round_index in range(rounds):
            print(
                f"round {round_index + 1}/{rounds} "
                f"({' '.join(s.name for s in self.order(round_index))}), "
                f"{time.monotonic() - started:.0f} s elapsed",
                file=sys.stderr,
            )
            for metric in repeated:
                for server in self.order(round_index):
                    await self.run_one(metric, server, round_index)

    async def warm_up(self) -> None:
        """A few requests of each kind, so both servers have their code paths loaded."""
        for server in self.servers.values():
            async with connection(server) as conn:
                for i in range(3):
                    watch = Watch(conn, self.ctx.fresh_id("warm"))
                    start = conn.request(
                        "process/start",
                        process_params(watch.process_id, ["/bin/true"], tty=i == 2),
                    )
                    watch.follow(start)
                    await asyncio.wait_for(watch.closed, SMALL_TIMEOUT)
                    await start
                for _ in range(20):
                    await conn.call_raw("fs/getMetadata", {"path": self.ctx.uri("small.txt")})

    def results(self, meta: dict[str, Any]) -> dict[str, Any]:
        metrics_out: dict[str, Any] = {}
        for metric in self.metrics:
            servers_out = {}
            for name in self.slots:
                record = self.data[metric.name][name]
                cpu = record["cpu_s"]
                servers_out[name] = {
                    **record,
                    "summary": summarize(record["samples"]),
                    "cpu_s_median": statistics.median(cpu) if cpu else None,
                    "cpu_s_total": round(sum(cpu), 4) if cpu else None,
                }
                if "side_cpu_s" in record:
                    servers_out[name]["side_cpu_s_median"] = {
                        key: statistics.median(values)
                        for key, values in record["side_cpu_s"].items()
                    }
            ratios = {f"{a}/{b}": self.ratio(metric.name, servers_out, a, b) for a, b in self.pairs}
            first = next(iter(ratios.values()))
            metrics_out[metric.name] = {
                "unit": metric.unit,
                "better": metric.better,
                "description": metric.description,
                "params": metric.params(self.ctx.settings),
                "extra_rows": list(metric.extra_rows),
                "ratio": first["ratio"],
                "paired_ratio": first["paired_ratio"],
                "ratios": ratios,
                "servers": servers_out,
            }
        return {"meta": meta, "notes": self.notes, "metrics": metrics_out}

    def ratio(
        self, metric: str, servers_out: dict[str, Any], a: str, b: str
    ) -> dict[str, float | None]:
        """`a` ÷ `b`: of the medians, and the median of the per-round ratios."""
        mine, theirs = servers_out[a]["summary"], servers_out[b]["summary"]
        # Rounds pair the servers in time (A B / B A), so a per-round ratio cancels slow
        # drifts of background load better than the ratio of overall medians.
        paired = [
            statistics.median(x) / statistics.median(y)
            for x, y in zip(
                self.data[metric][a]["rounds"], self.data[metric][b]["rounds"], strict=False
            )
            if x and y and statistics.median(y)
        ]
        return {
            "ratio": mine["median"] / theirs["median"]
            if mine and theirs and theirs["median"]
            else None,
            "paired_ratio": statistics.median(paired) if paired else None,
        }


def select_metrics(only: str | None) -> list[Metric]:
    if not only:
        return list(METRICS)
    patterns = [p.strip() for p in only.split(",") if p.strip()]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(m.name, pattern) for m in METRICS):
            names = ", ".join(m.name for m in METRICS)
            raise SystemExit(f"--only: no metric matches {pattern!r}; metrics: {names}")
    return [m for m in METRICS if any(fnmatch.fnmatchcase(m.name, p) for p in patterns)]


async def main_async(args: argparse.Namespace) -> int:
    settings = Settings.quick() if args.quick else Settings()
    if args.rounds is not None:
        settings.rounds = args.rounds
    metrics = select_metrics(args.only)
    workdir = Path(tempfile.mkdtemp(prefix="execserver-compare-"))
    ctx = Context(settings, workdir)
    servers: dict[str, Server] = {}
    began = time.monotonic()
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    load_start = list(os.getloadavg())
    exit_code = 0
    runner: Runner | None = None
    try:
        print(f"preparing files in {workdir}", file=sys.stderr)
        prepare_files(ctx, metrics)
        commands = {"ours": args.ours_command, "reference": args.reference_command}
        for name, url in (("ours", args.ours), ("reference", args.reference)):
            command = shlex.split(commands[name]) if commands[name] else None
            servers[name] = Server(name, url) if url else await start_server(name, workdir, command)
            print(f"{name}: {servers[name].url} pid {servers[name].pid}", file=sys.stderr)
        runner = Runner(servers, ctx, metrics)
        try:
            await runner.run(settings.rounds)
        except ServerFailed as error:
            print(f"FATAL: {error}", file=sys.stderr)
            exit_code = 2
    finally:
        for server in servers.values():
            await stop_server(server)
        shutil.rmtree(workdir, ignore_errors=True)
    assert runner is not None
    meta = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "started_at": started_at,
        "duration_s": round(time.monotonic() - began, 1),
        "machine": machine_info(),
        "loadavg_start": load_start,
        "loadavg_end": list(os.getloadavg()),
        "settings": settings.__dict__,
        "servers": {
            name: {"url": s.url, "command": s.command, "started_here": s.pid is not None}
            for name, s in servers.items()
        },
        "client": "bench/wsclient.py (asyncio Protocol, msgspec); quickack variants add "
        "TCP_NODELAY + TCP_QUICKACK after every receive",
    }
    results = runner.results(meta)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_bytes(msgspec.json.format(msgspec.json.encode(results), indent=1))
    print(render(results, args.markdown))
    print(f"\n{meta['duration_s']} s; raw samples in {args.json}", file=sys.stderr)
    errors = sum(len(r["errors"]) for m in runner.data.values() for r in m.values())
    if errors:
        print(f"{errors} run(s) failed, see 'errors' in the JSON", file=sys.stderr)
        exit_code = exit_code or 1
    return exit_code


def run_cancellable(run: Coroutine[Any, Any, int], what: str) -> NoReturn:
    """Run a bench to its exit code; Ctrl-C and SIGTERM cancel it (its `finally` then stops
    the `what` it started) and exit 130."""
    loop = asyncio.new_event_loop()
    task = loop.create_task(run)
    loop.add_signal_handler(signal.SIGINT, task.cancel)
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        code = loop.run_until_complete(task)
    except asyncio.CancelledError:
        print(f"interrupted; {what} stopped", file=sys.stderr)
        code = 130
    finally:
        loop.close()
    sys.exit(code)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, help="rounds (default 5, --quick 2)")
    parser.add_argument("--quick", action="store_true", help="~1 minute: fewer iterations")
    parser.add_argument("--only", help="comma-separated metric names or globs")
    parser.add_argument("--ours", help="URL of a running server instead of starting ours")
    parser.add_argument("--reference", help="URL of a running reference instead of starting it")
    parser.add_argument("--ours-command", help="command line to start in the `ours` slot")
    parser.add_argument("--reference-command", help="command line to start in the `reference` slot")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--render", type=Path, help="only print the table of a JSON result")
    parser.add_argument("--list", action="store_true", help="list the metrics and exit")
    args = parser.parse_args()
    if args.list:
        for metric in METRICS:
            print(f"{metric.name:26s} {metric.unit:6s} {metric.better:6s} {metric.description}")
        return
    if args.render:
        print(render(msgspec.json.decode(args.render.read_bytes()), args.markdown))
        return
    run_cancellable(main_async(args), "servers")


if __name__ == "__main__":
    main()
