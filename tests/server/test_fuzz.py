"""Fuzz the JSON-RPC surface of a live server, over WebSocket and over stdio (Hypothesis).

Each example is a batch of frames sent over ONE long-lived connection: requests for every
method a client may call (and unknown ones) with valid, mutated and garbage params, envelopes
the server must refuse as a whole, and raw garbage (tests/harness/fuzz_strategies.py, which also
keeps everything confined to a tmp dir, harmless programs and a local HTTP server). A sentinel
request ends each batch. A run fuzzes a connection before its handshake, tours the client
methods (each leads a few batches with valid params), fuzzes at random, then leaves requests in
flight and goes. Over WebSocket the handshake resumes another, detached session. Invariants:

* every request gets exactly one response, with its id (and the id's type), holding a result or
  an error object `{code: int, message: str}` with a JSON-RPC or exec-server code, within a few
  seconds; every refused envelope gets exactly one parse error with id -1; nothing else is sent
  but the server's notifications;
* each process's events have increasing seqs, one exit, then one close and nothing after it;
  `process/read` results are consistent (chunk order and range, `closed` implies `exited`);
* the server stays alive, writes no traceback, and afterwards a fresh connection (or, over stdio,
  the same one) still initializes and runs `echo ok`;
* no process outlives its session: after the fuzz connection closes and the session expires
  (`--session-ttl`), or stdin closes, the server has no descendants left.

Messages that legitimately drop the connection (responses and notifications from the client) are
fuzzed separately, in `test_fuzz_dropping_messages_*`; `test_fuzz_regression_*` pin what the
fuzzer found (compared with the reference too).

`EXECSERVER_SOAK=1` runs 20 times as many examples. `pytest -s` shows a summary line per test.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import queue
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from execserver.protocol import methods
from tests.conftest import SOAK, TIME, ServerProcess
from tests.harness.fuzz_strategies import (
    CHILD_PATH,
    CLIENT_METHODS,
    MAX_WAIT_MS,
    Call,
    Context,
    Frame,
    Json,
    Rendered,
    b64,
    batches,
    junk,
    leading_calls,
    render,
    render_raw,
    sanitize,
    texts,
    wide_int,
)
from tests.harness.httpserver import HttpTestServer, chunked, redirect, respond
from tests.harness.procfs import is_alive, stat_fields
from tests.harness.servers import ours_command

SCALE = 20 if SOAK else 1
# Random batches, after a tour of PER_METHOD batches led by each of the 27 client methods.
WS_EXAMPLES = 150 * SCALE
STDIO_EXAMPLES = 120 * SCALE
PER_METHOD = 2 * SCALE
UNREADY_EXAMPLES = 10 * SCALE  # before the handshake
DROP_EXAMPLES = 12 * SCALE
ANSWER_TIMEOUT_S = 5.0 * TIME
SESSION_TTL_S = 1.0
ERROR_CODES = {-32600, -32601, -32602, -32603, -32004, -32010}
ONCE = "initialize may only be sent once per connection"
ABNORMAL_CLOSURE = 1006
UNIQUE_PROCESS_ID = re.compile(r"x\d+-\d")  # the fresh ids of fuzz_strategies.render()
SERVER_NOTIFICATIONS = {
    methods.PROCESS_OUTPUT,
    methods.PROCESS_EXITED,
    methods.PROCESS_CLOSED,
    methods.HTTP_REQUEST_BODY_DELTA,
    methods.FS_MISSING_CHANGED,
}
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
# Requests that must have succeeded at least once in a run (the fuzz reaches real code paths).
MUST_SUCCEED = (
    methods.PROCESS_START,
    methods.PROCESS_READ,
    methods.FS_WRITE_FILE,
    methods.HTTP_REQUEST,
)

FUZZ_SETTINGS = settings(
    deadline=None,
    database=None,
    # No shrinking: the server's state carries over from example to example, so a shrunk batch
    # would not replay what failed; the failure message shows the frames as sent instead.
    phases=[Phase.generate],
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
)


# -- transports ------------------------------------------------------------------------------------


class Transport(Protocol):
    line_based: bool

    def send(self, data: str | bytes) -> None: ...

    def recv(self, timeout: float) -> Json:
        """The next message; TimeoutError if none came, ConnectionError if the peer is gone."""
        ...


class WsTransport:
    line_based = False

    def __init__(self, url: str) -> None:
        self.ws: ClientConnection = connect(
            url, legacy=True, max_size=None, ping_interval=None, compression=None, proxy=None
        )

    def __enter__(self) -> WsTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: str | bytes) -> None:
        try:
            self.ws.send(data)
        except ConnectionClosed as exc:
            raise ConnectionError(f"websocket closed: {exc}") from None

    def recv(self, timeout: float) -> Json:
        try:
            data = self.ws.recv(timeout=max(timeout, 0.0))
        except ConnectionClosed as exc:
            raise ConnectionError(f"websocket closed: {exc}") from None
        return json.loads(data)

    def close(self) -> None:
        self.ws.close()


class StdioTransport:
    """`execserver serve --listen stdio` as a subprocess; a thread reads its stdout lines."""

    line_based = True

    def __init__(self, cwd: Path, stderr_path: Path) -> None:
        self._stderr = open(stderr_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            ours_command("stdio"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=cwd,
            start_new_session=True,
        )
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._eof = False
        self._reader = threading.Thread(target=self._read, name="fuzz-stdio", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def send(self, data: str | bytes) -> None:
        assert self.process.stdin is not None
        raw = data.encode() if isinstance(data, str) else data
        assert b"\n" not in raw, "one message per line"
        try:
            self.process.stdin.write(raw + b"\n")
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            raise ConnectionError(f"stdin closed: {exc}") from None

    def recv(self, timeout: float) -> Json:
        if self._eof:
            raise ConnectionError("stdout closed")
        try:
            line = self._lines.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            raise TimeoutError from None
        if line is None:
            self._eof = True
            raise ConnectionError("stdout closed")
        assert line.endswith(b"\n"), line
        return json.loads(line)

    def close_stdin(self) -> int:
        """Close stdin and wait for the exit status."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        return self.process.wait(10 * TIME)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._reader.join(5)
        self._stderr.close()


# -- the local HTTP server -------------------------------------------------------------------------


@contextlib.contextmanager
def background_http() -> Iterator[str]:
    """tests/harness/httpserver.py's server, on an event loop in a thread; yields its base URL."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fuzz-http", daemon=True)
    thread.start()

    async def start() -> HttpTestServer:
        server = HttpTestServer()
        server.route("/ok", respond(200, [("x-fuzz", "1")], b"hello"))
        server.route("/redirect", redirect(302, "/ok"))
        server.route("/loop", redirect(302, "/loop"))
        server.route("/chunked", chunked([b"a", b"bc", b"def"]))
        await server.start()
        return server

    server = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield server.url("")
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


# -- processes -------------------------------------------------------------------------------------


def _is_watchdog(pid: int) -> bool:
    """The server's own crash watchdog (local/crash_guard.py), not something a client started."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"execserver/local/watchdog.py" in f.read()
    except OSError:
        return False


def descendants(pid: int) -> list[int]:
    """Every live or zombie process below `pid` (but the server's crash watchdog)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = stat_fields(int(entry))
            if fields is not None and not _is_watchdog(int(entry)):
                children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def describe(pids: list[int]) -> list[str]:
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            out.append(f"{pid}: {cmdline}")
        except OSError:
            out.append(f"{pid}: (gone)")
    return out


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def ensure_directory(path: Path) -> None:
    if not path.is_dir():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        path.mkdir()


def assert_clean_stderr(path: Path) -> None:
    text = path.read_text(errors="replace")
    assert "Traceback" not in text, text[-5000:]


# -- the fuzzer ------------------------------------------------------------------------------------


def _key(request_id: int | str) -> tuple[str, int | str]:
    return type(request_id).__name__, request_id


def _check_read(request: Rendered, result: Json) -> str | None:
    """A `process/read` result agrees with itself and with the request's `afterSeq`."""
    params = json.loads(request.data, parse_int=wide_int).get("params")
    after = params.get("afterSeq") if isinstance(params, dict) else None
    seqs = [chunk["seq"] for chunk in result["chunks"]]
    if seqs != sorted(set(seqs)):
        return "chunks out of order"
    if seqs and (seqs[-1] >= result["nextSeq"] or (type(after) is int and seqs[0] <= after)):
        return "chunk seq out of range"
    if result["closed"] and not result["exited"]:
        return "closed but not exited"
    if result["exited"] != (result["exitCode"] is not None):
        return "exitCode does not match exited"
    if result["failure"] is not None:
        return "failure is set"
    return None


def _brief(data: str | bytes, limit: int = 300) -> str:
    text = repr(data)
    return text if len(text) <= limit else text[:limit] + f"... ({len(data)} long)"


class Fuzzer:
    """Sends batches over one connection and checks that every frame is answered exactly once."""

    def __init__(self, transport: Transport, ctx: Context, root: Path) -> None:
        self.transport = transport
        self.ctx = ctx
        self.root = root
        self.number = 0
        self.example = 0
        self.requests = 0
        self.parse_errors = 0
        self.notifications = 0
        self.sent: Counter[str] = Counter()
        self.succeeded: Counter[str] = Counter()
        # The first failure, raised again for any later batch: the connection's state is
        # unknown after it (and Hypothesis replays the failing example, which must fail alike).
        self.failure: AssertionError | None = None
        # Events seen per process started by this fuzzer under an id unique to the run.
        self.events: dict[str, list[tuple[str, int]]] = {}
        self.resumed = False
        self.slowest = 0.0  # seconds, from the first frame sent to the last answer

    def _next_number(self) -> int:
        self.number += 1
        return self.number

    def plain_call(self, method: str, params: Json = None) -> Rendered:
        return render(Call(method, params), self._next_number(), self.example, self.ctx)

    def request(self, method: str, params: Json = None) -> Json:
        """One request, answered like any other; returns its response."""
        rendered = self.plain_call(method, params)
        return self.exchange([rendered])[_key(self._id(rendered))]

    @staticmethod
    def _id(rendered: Rendered) -> int | str:
        assert rendered.request_id is not None
        return rendered.request_id

    def initialize(self, resume: str | None = None) -> str | None:
        """The handshake (resuming `resume` if it has not expired yet); the session id, or None
        if a fuzzed `initialize` did it already."""
        response = self.request(
            methods.INITIALIZE, {"clientName": "fuzz", "resumeSessionId": resume}
        )
        if resume is not None and response.get("error", {}).get("message", "").startswith(
            "unknown session id"
        ):
            response = self.request(methods.INITIALIZE, {"clientName": "fuzz"})
        session_id: str | None = None
        if "error" in response:
            assert response["error"]["message"] == ONCE, response
        else:
            session_id = response["result"]["sessionId"]
            self.resumed = session_id == resume
        self.transport.send(json.dumps({"method": methods.INITIALIZED}))
        return session_id

    def run_unready(self, count: int) -> None:
        """`count` batches before the handshake: everything is gated, except `initialize`, which
        may start or resume a session."""

        @settings(FUZZ_SETTINGS, max_examples=count)
        @given(batch=batches(self.ctx, max_size=4))
        def unready(batch: list[Frame]) -> None:
            self.run_batch(batch)

        unready()

    def abandon(self) -> None:
        """Send requests that stay in flight (a long poll, a streamed HTTP body, a process and a
        large write to it, an open file) and do not wait for them: the connection goes next."""
        fresh = "abandoned"
        frames = [
            (methods.PROCESS_READ, {"processId": "p0", "afterSeq": 10**6, "waitMs": MAX_WAIT_MS}),
            (
                methods.HTTP_REQUEST,
                {
                    "method": "GET",
                    "url": self.ctx.http_base + "/chunked",
                    "requestId": fresh,
                    "streamResponse": True,
                },
            ),
            (
                methods.PROCESS_START,
                {
                    "processId": fresh,
                    "argv": ["cat"],
                    "cwd": self.ctx.root_uri,
                    "env": {"PATH": CHILD_PATH},
                    "tty": False,
                    "pipeStdin": True,
                },
            ),
            (
                methods.PROCESS_WRITE,
                {"processId": fresh, "chunk": b64(b"x" * 1_000_000), "writeId": fresh},
            ),
            (
                methods.FS_OPEN,
                {"handleId": fresh, "path": self.ctx.root_uri + "/a", "mode": "replace"},
            ),
        ]
        for method, params in frames:
            self.transport.send(self.plain_call(method, params).data)

    def seed(self) -> None:
        """Start the pool's processes, so requests naming them meet a live pipe, a live
        terminal and a finished process."""
        seeds = {
            "p0": {"argv": ["cat"], "pipeStdin": True, "tty": False},
            "p1": {"argv": ["echo", "seed"], "tty": False},
            "p2": {"argv": ["cat"], "tty": True},
        }
        for process_id, spec in seeds.items():
            env = {"PATH": CHILD_PATH}
            params = {"processId": process_id, "cwd": self.ctx.root_uri, "env": env, **spec}
            response = self.request(methods.PROCESS_START, params)
            if "error" in response:  # a resumed session has them already
                assert response["error"]["message"].endswith("already exists"), response

    def run_batch(self, batch: list[Frame]) -> None:
        """Send `batch` and a sentinel, check the answers, end the processes the batch started."""
        if self.failure is not None:
            raise self.failure
        try:
            self._run_batch(batch)
        except AssertionError as exc:
            self.failure = exc
            raise

    def _run_batch(self, batch: list[Frame]) -> None:
        self.example += 1
        ensure_directory(self.root)  # the fuzz may have removed it (or replaced it with a file)
        rendered = [
            render(frame, self._next_number(), self.example, self.ctx)
            if isinstance(frame, Call)
            else render_raw(frame, line_based=self.transport.line_based)
            for frame in batch
        ]
        rendered.append(self.plain_call(methods.ENVIRONMENT_STATUS))  # the sentinel
        self.exchange(rendered)
        fresh = {pid for r in rendered for pid in r.fresh_processes}
        if fresh:  # keep the live processes bounded: end what this batch started
            self.exchange(
                [
                    self.plain_call(methods.PROCESS_TERMINATE, {"processId": p})
                    for p in sorted(fresh)
                ]
            )

    def exchange(self, rendered: list[Rendered]) -> dict[tuple[str, int | str], Json]:
        """Send the frames, then read until each has its answer; the last one must be a request
        answered inline (so every parse error of the batch precedes its response)."""
        started = time.monotonic()
        pending: dict[tuple[str, int | str], Rendered] = {}
        expected_errors = 0
        for frame in rendered:
            if frame.request_id is None:
                expected_errors += 1
            else:
                key = _key(frame.request_id)
                assert key not in pending, f"duplicate id {frame.request_id!r}"
                pending[key] = frame
                self.requests += 1
                self.sent[frame.method] += 1
            try:
                self.transport.send(frame.data)
            except ConnectionError as exc:
                raise AssertionError(self._report(rendered, f"send failed: {exc}")) from None
        assert rendered and rendered[-1].request_id is not None
        answers: dict[tuple[str, int | str], Json] = {}
        errors = 0
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        while pending:
            try:
                message = self.transport.recv(deadline - time.monotonic())
            except (TimeoutError, ConnectionError) as exc:
                unanswered = [_brief(r.data) for r in pending.values()]
                problem = f"{type(exc).__name__} {exc}; unanswered: {unanswered}"
                raise AssertionError(self._report(rendered, problem)) from None
            bad_shape = self._check_shape(message)
            if bad_shape:
                raise AssertionError(self._report(rendered, f"{bad_shape}: {message!r:.2000}"))
            if "method" in message:
                self.notifications += 1
                bad_event = self._check_event(message)
                if bad_event:
                    raise AssertionError(self._report(rendered, f"{bad_event}: {message!r:.2000}"))
                continue
            request_id = message["id"]
            if request_id == -1 and type(request_id) is int and "error" in message:
                errors += 1
                error = message["error"]
                if (
                    errors > expected_errors
                    or error["code"] != -32600
                    or "failed to parse" not in error["message"]
                ):
                    raise AssertionError(self._report(rendered, f"unexpected {message}"))
                continue
            key = _key(request_id)
            request = pending.get(key)
            if request is None:
                raise AssertionError(self._report(rendered, f"unexpected response {message}"))
            del pending[key]
            answers[key] = message
            if "result" in message:
                self.succeeded[request.method] += 1
                if request.method == methods.PROCESS_READ:
                    bad_read = _check_read(request, message["result"])
                    if bad_read:
                        problem = f"{bad_read}: {message!r:.2000}"
                        raise AssertionError(self._report(rendered, problem))
        if errors != expected_errors:
            problem = f"{errors} parse errors for {expected_errors} refused frames"
            raise AssertionError(self._report(rendered, problem))
        self.slowest = max(self.slowest, time.monotonic() - started)
        self.parse_errors += errors
        return answers

    def _check_event(self, message: Json) -> str | None:
        """One sequence per process: seqs increase, one exit, one close and nothing after it."""
        method, params = message["method"], message["params"]
        if method not in (methods.PROCESS_OUTPUT, methods.PROCESS_EXITED, methods.PROCESS_CLOSED):
            return None
        process_id = params.get("processId")
        if not isinstance(process_id, str) or not UNIQUE_PROCESS_ID.fullmatch(process_id):
            return None  # ids from the pool or random text may name successive processes
        seq = params.get("seq")
        if type(seq) is not int:
            return "no seq"
        events = self.events.setdefault(process_id, [])
        if events and seq <= events[-1][1]:
            return f"seq after {events[-1]}"
        if any(kind == methods.PROCESS_CLOSED for kind, _ in events):
            return "event after process/closed"
        if method != methods.PROCESS_OUTPUT and any(kind == method for kind, _ in events):
            return "repeated event"
        exited = any(kind == methods.PROCESS_EXITED for kind, _ in events)
        if method == methods.PROCESS_CLOSED and not exited:
            return "closed before exited"
        events.append((method, seq))
        return None

    @staticmethod
    def _check_shape(message: Json) -> str | None:
        if not isinstance(message, dict):
            return "not an object"
        if "method" in message:
            if set(message) != {"method", "params"}:
                return "a notification has other members"
            if message["method"] not in SERVER_NOTIFICATIONS:
                return "unknown notification"
            return None
        if "result" in message:
            return None if set(message) == {"id", "result"} else "bad response members"
        if set(message) != {"error", "id"}:
            return "bad response members"
        if type(message["id"]) not in (int, str):
            return "bad id"
        error = message["error"]
        if not isinstance(error, dict) or not set(error) <= {"code", "message", "data"}:
            return "bad error object"
        if type(error.get("code")) is not int or error["code"] not in ERROR_CODES:
            return "bad error code"
        if not isinstance(error.get("message"), str):
            return "bad error message"
        return None

    def _report(self, rendered: list[Rendered], problem: str) -> str:
        frames = "\n".join(f"  {_brief(r.data)} -> {r.request_id!r}" for r in rendered)
        return f"example {self.example}: {problem}\nframes sent:\n{frames}"

    def echo_ok(self) -> None:
        """`echo ok` runs (in the root) and its output can be read."""
        ensure_directory(self.root)
        process_id = f"echo-ok-{self.number}"
        started = self.request(
            methods.PROCESS_START,
            {
                "processId": process_id,
                "argv": ["echo", "ok"],
                "cwd": self.root.as_uri(),
                "env": {"PATH": CHILD_PATH},
                "tty": False,
            },
        )
        assert started.get("result", {}).get("processId") == process_id, started
        output = b""
        after = 0
        deadline = time.monotonic() + 10 * TIME
        while time.monotonic() < deadline:
            read = self.request(
                methods.PROCESS_READ, {"processId": process_id, "afterSeq": after, "waitMs": 200}
            )["result"]
            for chunk in read["chunks"]:
                if chunk["stream"] == "stdout":
                    output += base64.b64decode(chunk["chunk"])
            after = read["nextSeq"] - 1
            if read["closed"]:
                break
        assert output == b"ok\n"
        assert read["exitCode"] == 0, read

    def run(self, count: int, per_method: int) -> None:
        """A tour (for each client method, `per_method` batches led by a clean call of it, so
        every method is covered whatever Hypothesis favours), then `count` random batches."""
        for lead in leading_calls(self.ctx).values():

            @settings(FUZZ_SETTINGS, max_examples=per_method)
            @given(lead=lead, batch=batches(self.ctx, max_size=4))
            def tour(lead: Call, batch: list[Frame]) -> None:
                self.run_batch([lead, *batch])

            tour()

        @settings(FUZZ_SETTINGS, max_examples=count)
        @given(batch=batches(self.ctx))
        def fuzz(batch: list[Frame]) -> None:
            self.run_batch(batch)

        fuzz()

    def assert_coverage(self) -> None:
        missing = [m for m in CLIENT_METHODS if not self.sent[m]]
        assert not missing, f"never sent: {missing}"
        failing = [m for m in MUST_SUCCEED if not self.succeeded[m]]
        assert not failing, f"never succeeded: {failing}; successes: {dict(self.succeeded)}"

    def summary(self, transport: str) -> str:
        return (
            f"fuzz: {self.requests} requests (+{self.parse_errors} refused frames, "
            f"{self.notifications} notifications, {sum(self.succeeded.values())} results) "
            f"over {transport} in {self.example} examples"
            f"{' (on a resumed session)' if self.resumed else ''}, all answered "
            f"(slowest batch {self.slowest:.2f} s)"
        )


@pytest.fixture
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's HTTP client must reach 127.0.0.1 directly."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def fuzz_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    return root


# -- tests -----------------------------------------------------------------------------------------


def detached_session(url: str, ctx: Context, root: Path) -> str:
    """A session with the pool's processes, left detached (it expires after the TTL)."""
    with WsTransport(url) as transport:
        fuzzer = Fuzzer(transport, ctx, root)
        session_id = fuzzer.initialize()
        assert session_id is not None
        fuzzer.seed()
    return session_id


@pytest.mark.usefixtures("no_proxies")
def test_fuzz_websocket(tmp_path: Path) -> None:
    """Fuzz a WebSocket connection before its handshake (fuzzed `initialize`s may resume a
    detached session), then one that resumes a detached session; then the server works and
    leaks no process."""
    root = fuzz_root(tmp_path)
    extra = ["--session-ttl", str(SESSION_TTL_S), "--max-processes-per-session", "1000000"]
    with background_http() as http_base:
        server = ServerProcess(ours_command(extra=extra), tmp_path, "fuzz-ws")
        try:
            plain = Context(root.as_uri(), http_base)
            ctx = Context(root.as_uri(), http_base, (detached_session(server.url, plain, root),))
            with WsTransport(server.url) as transport:
                unready = Fuzzer(transport, ctx, root)
                unready.run_unready(UNREADY_EXAMPLES)
            other_session = detached_session(server.url, plain, root)
            with WsTransport(server.url) as transport:
                fuzzer = Fuzzer(transport, ctx, root)
                fuzzer.initialize(resume=other_session)
                fuzzer.seed()
                fuzzer.run(WS_EXAMPLES, PER_METHOD)
                fuzzer.abandon()
                tree = descendants(server.pid)
            assert server.process.poll() is None, "the server died"

            with WsTransport(server.url) as transport:
                fresh = Fuzzer(transport, ctx, root)
                fresh.initialize()
                fresh.echo_ok()

            # Both sessions are detached now; once they expire, nothing they started is left.
            assert wait_until(lambda: not descendants(server.pid), 15 * TIME), describe(
                descendants(server.pid)
            )
            assert not [pid for pid in tree if is_alive(pid)], describe(tree)
            assert server.process.poll() is None, "the server died"
        finally:
            server.stop()
        assert_clean_stderr(server.stderr_path)
    fuzzer.assert_coverage()
    print(unready.summary("ws before the handshake"))
    print(fuzzer.summary("ws"))


@pytest.mark.usefixtures("no_proxies")
def test_fuzz_stdio(tmp_path: Path) -> None:
    """Fuzz the stdio session; it keeps answering, and EOF ends the server and its processes."""
    root = fuzz_root(tmp_path)
    stderr_path = tmp_path / "fuzz-stdio-stderr.log"
    with background_http() as http_base:
        transport = StdioTransport(tmp_path, stderr_path)
        try:
            fuzzer = Fuzzer(transport, Context(root.as_uri(), http_base), root)
            fuzzer.run_unready(UNREADY_EXAMPLES)
            fuzzer.initialize()
            fuzzer.seed()
            fuzzer.run(STDIO_EXAMPLES, PER_METHOD)
            status = fuzzer.request(methods.ENVIRONMENT_STATUS)
            assert status.get("result") == {"status": "ready"}, status
            fuzzer.echo_ok()
            fuzzer.abandon()
            tree = descendants(transport.process.pid)
            assert transport.close_stdin() == 0
            assert wait_until(lambda: not any(is_alive(p) for p in tree), 10 * TIME), describe(tree)
        finally:
            transport.stop()
    assert_clean_stderr(stderr_path)
    fuzzer.assert_coverage()
    print(fuzzer.summary("stdio"))


# -- messages that drop the connection -----------------------------------------------------------

_valid_ids = st.one_of(st.integers(-(2**63), 2**63 - 1), texts)
dropping_messages = st.one_of(
    st.fixed_dictionaries({"id": _valid_ids, "result": junk}),
    st.fixed_dictionaries(
        {
            "error": st.fixed_dictionaries(
                {"code": st.integers(-(2**63), 2**63 - 1), "message": texts},
                optional={"data": junk},
            ),
            "id": _valid_ids,
        }
    ),
    st.fixed_dictionaries(
        {"method": st.one_of(st.sampled_from([*CLIENT_METHODS, "process/output"]), texts)},
        optional={"params": junk, "jsonrpc": st.just("2.0")},
    ).filter(lambda m: m["method"] != methods.INITIALIZED),
    st.just({"method": methods.INITIALIZED}),  # dropped only before `initialize`
)


def expect_drop(transport: Transport, message: Json) -> None:
    """The peer goes away without answering (notifications of earlier processes may come)."""
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    with pytest.raises(ConnectionError):
        while True:
            got = transport.recv(deadline - time.monotonic())
            if "method" not in got:
                raise AssertionError(f"{message!r:.500} was answered: {got!r:.500}")


def _dropping_frame(message: dict[str, Json], ctx: Context) -> str:
    if "params" in message:
        message = {**message, "params": sanitize(message["method"], message["params"], ctx)}
    return json.dumps(message)


def test_fuzz_dropping_messages_websocket(tmp_path: Path) -> None:
    """Client responses and notifications other than `initialized` drop the connection; the
    server goes on serving new connections."""
    root = fuzz_root(tmp_path)
    server = ServerProcess(ours_command(), tmp_path, "fuzz-drop")
    ctx = Context(root.as_uri(), "http://127.0.0.1:9")
    drops = 0
    try:

        @settings(FUZZ_SETTINGS, max_examples=DROP_EXAMPLES)
        @given(message=dropping_messages, initialize_first=st.booleans())
        def drop(message: dict[str, Json], initialize_first: bool) -> None:
            nonlocal drops
            if message == {"method": methods.INITIALIZED}:
                initialize_first = False
            with WsTransport(server.url) as transport:
                fuzzer = Fuzzer(transport, ctx, root)
                if initialize_first:
                    fuzzer.initialize()
                transport.send(_dropping_frame(message, ctx))
                expect_drop(transport, message)
                # Dropped, as the reference does: TCP closed without a close frame.
                assert transport.ws.close_code == ABNORMAL_CLOSURE, message
            drops += 1

        drop()
        with WsTransport(server.url) as transport:
            fuzzer = Fuzzer(transport, ctx, root)
            fuzzer.initialize()
            fuzzer.echo_ok()
        assert server.process.poll() is None
    finally:
        server.stop()
    assert_clean_stderr(server.stderr_path)
    assert drops == DROP_EXAMPLES
    print(f"fuzz: {drops} dropping messages over ws, each dropped the connection")


@pytest.mark.parametrize(
    ("message", "initialized"),
    [
        ({"id": 7, "result": {}}, True),
        ({"error": {"code": 1, "message": "x"}, "id": "e"}, True),
        ({"method": "process/output", "params": {}}, True),
        ({"method": "fs/readFile"}, True),
        ({"method": "initialized"}, False),
    ],
    ids=[
        "response",
        "error",
        "server-notification",
        "request-as-notification",
        "early-initialized",
    ],
)
def test_fuzz_dropping_messages_stdio(
    tmp_path: Path, message: dict[str, Json], initialized: bool
) -> None:
    """Over stdio a dropped connection ends the server, and with it the session's processes."""
    root = fuzz_root(tmp_path)
    transport = StdioTransport(tmp_path, tmp_path / "stderr.log")
    try:
        fuzzer = Fuzzer(transport, Context(root.as_uri(), "http://127.0.0.1:9"), root)
        tree: list[int] = []
        if initialized:
            fuzzer.initialize()
            fuzzer.seed()
            tree = descendants(transport.process.pid)
            assert len(tree) >= 2, describe(tree)  # the two `cat`s (`echo` may be gone)
        transport.send(json.dumps(message))
        expect_drop(transport, message)
        assert transport.process.wait(10 * TIME) == 0
        assert wait_until(lambda: not any(is_alive(p) for p in tree), 10 * TIME), describe(tree)
    finally:
        transport.stop()
    assert_clean_stderr(tmp_path / "stderr.log")


def test_fuzz_confinement() -> None:
    """The sanitizer keeps every path inside the root, every program harmless, every URL local,
    whatever the params say (the fuzz tests' safety net, checked without a server)."""
    ctx = Context("file:///tmp/fz/root", "http://127.0.0.1:1234")
    hostile_paths = [
        "file:///etc/passwd",
        "file:///tmp/fz/root/../x",
        "file:///tmp/fz/root/a/..",
        "file:///tmp/fz/root/%2e%2e/x",
        "file:///tmp/fz/root/%2F..%2Fx",
        "file:///tmp/fz/rootx",
        "file:///TMP/fz/root",
        "FILE:///etc",
        " \tfile:///etc",
        "fi\tle:///etc",
        "file://localhost/etc",
        "file:////tmp/fz/root",
        "file:///tmp/fz/root\\..\\x",
        "file:/etc",
    ]
    for path in hostile_paths:
        assert sanitize(methods.FS_REMOVE, {"path": path}, ctx) == {
            "path": "file:///tmp/fz/root/sanitized"
        }, path
        assert sanitize(methods.FS_COPY, [path], ctx) == ["file:///tmp/fz/root/sanitized"], path
    for path in [
        "file:///tmp/fz/root",
        "file:///tmp/fz/root/a b",
        "file://LOCALHOST/tmp/fz/root/x",
    ]:
        assert sanitize(methods.FS_REMOVE, {"path": path}, ctx) == {"path": path}
    for argv in (["rm", "-rf", "/"], ["cat", "/etc/shadow"], ["sleep", "1000"], ["sh"]):
        start = sanitize(methods.PROCESS_START, {"argv": argv, "env": {"PATH": "/tmp"}}, ctx)
        assert start == {"argv": ["echo", "sanitized"], "env": {"PATH": CHILD_PATH}}
        # The positional form follows the reference's member order: processId, metadata, argv.
        positional = sanitize(methods.PROCESS_START, ["p", None, argv], ctx)
        assert positional == ["p", None, ["echo", "sanitized"]]
    for url in ("http://example.com/", "http://127.0.0.1:1234@evil/", "HTTP:evil", " https://x"):
        request = sanitize(methods.HTTP_REQUEST, {"url": url, "method": "connect"}, ctx)
        assert request == {"url": "http://127.0.0.1:1234/sanitized", "method": "GET"}, url
    assert sanitize(methods.PROCESS_READ, {"waitMs": 10**6}, ctx) == {"waitMs": 200}
    assert sanitize(methods.FS_WRITE_BLOCK, ["h", 2**40], ctx) == ["h", 4096]


# -- regressions found by the fuzzer -------------------------------------------------------------

# serde_json (arbitrary precision) parses numbers of any size; msgspec refused some, which made
# the whole request a parse error (id -1) instead of an answer to it.
WIDE = "1" + "0" * 5000
OUT_OF_RANGE_NUMBERS = [
    ('"environment/status","params":1e400', -32602, "invalid type: number, expected unit"),
    (
        '"process/read","params":{"processId":-1e400}',
        -32602,
        "invalid type: number, expected a string",
    ),
    ('"process/read","params":{"processId":"p","waitMs":1e400}', -32602, "invalid number"),
    (f'"process/read","params":{{"processId":"p","afterSeq":{WIDE}}}', -32602, "invalid number"),
    (
        f'"fuzz/x","params":[{WIDE},1e400]',
        -32601,
        "exec-server stub does not implement `fuzz/x` yet",
    ),
]
# Ids past u128/i128 are not integers to serde's untagged enum at all.
BAD_IDS = [
    (2**128 - 1, f"invalid type: integer `{2**128 - 1}` as u128, expected any value"),
    (2**128, "data did not match any variant of untagged enum RequestId"),
    (-(2**127), f"invalid type: integer `{-(2**127)}` as i128, expected any value"),
    (-(2**127) - 1, "data did not match any variant of untagged enum RequestId"),
    (10**40, "data did not match any variant of untagged enum RequestId"),
]


def test_fuzz_regression_out_of_range_numbers(any_server: ServerProcess) -> None:
    """Numbers past f64/i64/u64 in params are answered like the reference, with the request's id;
    ids past u128/i128 are refused with the reference's wording."""
    with WsTransport(any_server.url) as transport:
        transport.send('{"id":0,"method":"initialize","params":{"clientName":"fuzz"}}')
        assert "result" in transport.recv(ANSWER_TIMEOUT_S)
        for number, (member, code, message) in enumerate(OUT_OF_RANGE_NUMBERS, 1):
            transport.send(f'{{"id":{number},"method":{member}}}')
            response = transport.recv(ANSWER_TIMEOUT_S)
            assert response == {"error": {"code": code, "message": message}, "id": number}
        for request_id, detail in BAD_IDS:
            transport.send(f'{{"id":{request_id},"method":"environment/status"}}')
            response = transport.recv(ANSWER_TIMEOUT_S)
            assert response["id"] == -1, response
            assert response["error"]["message"].endswith(f": {detail}"), response


def test_fuzz_regression_u64_members_take_the_whole_range(
    any_server: ServerProcess, tmp_path: Path
) -> None:
    """u64/usize members accept values past i64::MAX, like the reference (msgspec's bounds stop
    at i64, so they were `invalid number`): they reach the handlers' own checks."""
    top = 2**64 - 1
    process_id = f"u64-{os.getpid()}-{time.monotonic_ns()}"
    walk = {"maxDirectories": 1, "maxEntries": 1, "followDirectorySymlinks": False}
    limits = "filesystem walk limits exceed maximums: depth=64, directories=10000, entries=50000"
    cases: list[tuple[str, Json, Json]] = [
        (methods.PROCESS_READ, {"processId": process_id, "afterSeq": top}, "result"),
        (methods.PROCESS_READ, {"processId": process_id, "maxBytes": top}, "result"),
        (methods.PROCESS_READ, [process_id, top, top, 0], "result"),
        (methods.PROCESS_READ, {"processId": process_id, "afterSeq": top + 1}, "invalid number"),
        (methods.PROCESS_READ, {"processId": process_id, "waitMs": top + 1}, "invalid number"),
        (
            methods.FS_WALK,
            {"path": tmp_path.as_uri(), "options": {"maxDepth": top, **walk}},
            limits,
        ),
        (
            methods.FS_WALK,
            {"path": tmp_path.as_uri(), "options": {"maxDepth": top + 1, **walk}},
            "invalid number",
        ),
        (
            methods.FS_READ_BLOCK,
            {"handleId": "h", "offset": 0, "len": top},
            "file read block length must be between 1 and 1048576",
        ),
        (methods.FS_READ_BLOCK, {"handleId": "h", "offset": 0, "len": top + 1}, "invalid number"),
    ]
    with WsTransport(any_server.url) as transport:
        transport.send('{"id":0,"method":"initialize","params":{"clientName":"fuzz"}}')
        assert "result" in transport.recv(ANSWER_TIMEOUT_S)
        transport.send(json.dumps({"method": methods.INITIALIZED}))
        start = {
            "processId": process_id,
            "argv": ["true"],
            "cwd": tmp_path.as_uri(),
            "env": {"PATH": CHILD_PATH},
            "tty": False,
        }
        transport.send(json.dumps({"id": 1, "method": methods.PROCESS_START, "params": start}))
        for number, (method, params, _) in enumerate(cases, 2):
            transport.send(json.dumps({"id": number, "method": method, "params": params}))
        answers: dict[int, Json] = {}
        while len(answers) < len(cases) + 1:
            message = transport.recv(ANSWER_TIMEOUT_S)
            if "id" in message:
                answers[message["id"]] = message
    assert "result" in answers[1], answers[1]
    for number, (method, params, expected) in enumerate(cases, 2):
        answer = answers[number]
        got = "result" if "result" in answer else answer["error"]["message"]
        assert got == expected, (method, params, answer)
