"""Differential wire cases for the core: transport, envelope, lifecycle, processes.

Each case talks to one server through a `CaseContext` and returns observations; the test runs
it against ours and the reference and compares. Keep cases deterministic: wait for events
instead of sleeping, and order what the protocol does not order (e.g. two pipes).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any

from tests.harness.differential import Case, CaseContext
from tests.harness.wire import Json, WireClient

CASES: dict[str, Case] = {}


def case(fn: Case) -> Case:
    CASES[fn.__name__] = fn
    return fn


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def start_params(ctx: CaseContext, process_id: str, argv: list[str], **extra: Any) -> Json:
    params: Json = {
        "processId": process_id,
        "argv": argv,
        "cwd": ctx.uri(),
        "env": {"PATH": "/usr/bin:/bin"},
        "tty": False,
    }
    params.update(extra)
    return params


def summarize(events: list[Json]) -> Json:
    """What a client can rely on from a process's notifications, independent of chunking and of
    the reference's occasional exit-before-last-output numbering: the output of each stream in
    order, the exit, and that the seqs are gap-free with `closed` last."""
    ordered = sorted(events, key=lambda m: m["params"]["seq"])
    output: list[list[str]] = []
    for event in ordered:
        if event["method"] == "process/output":
            stream = event["params"]["stream"]
            data = base64.b64decode(event["params"]["chunk"]).decode(errors="replace")
            if output and output[-1][0] == stream:
                output[-1][1] += data
            else:
                output.append([stream, data])
    exits = [
        {k: v for k, v in e["params"].items() if k != "seq"}
        for e in ordered
        if e["method"] == "process/exited"
    ]
    seqs = [e["params"]["seq"] for e in ordered]
    return {
        "output": output,
        "exited": exits,
        "gap_free": seqs == list(range(1, len(seqs) + 1)),
        "closed_last": ordered[-1]["method"] == "process/closed",
    }


async def run_to_close(
    client: WireClient, ctx: CaseContext, process_id: str, argv: list[str], **extra: Any
) -> list[Json]:
    """Start a process; return its start response and a summary of its notifications."""
    response = await client.request("process/start", start_params(ctx, process_id, argv, **extra))
    if "error" in response:
        return [response]
    events = await client.process_events(process_id)
    return [response, summarize(events)]


async def dropped(client: WireClient) -> str:
    """'dropped' if the server closes the connection without a close frame."""
    code = await client.wait_closed(5)
    return "dropped" if code == 1006 else f"closed {code}"


# -- HTTP routes ------------------------------------------------------------------------------

UPGRADE = (
    b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)


@case
async def http_readyz(ctx: CaseContext) -> Any:
    return [
        await ctx.http(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"),
        await ctx.http(b"HEAD /readyz HTTP/1.1\r\nHost: x\r\n\r\n"),
        await ctx.http(b"GET /readyz?probe=1 HTTP/1.1\r\nHost: x\r\n\r\n"),
    ]


@case
async def http_readyz_wrong_methods(ctx: CaseContext) -> Any:
    return [
        await ctx.http(b"POST /readyz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
        await ctx.http(b"PUT /readyz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
    ]


@case
async def http_origin_is_forbidden_everywhere(ctx: CaseContext) -> Any:
    return [
        await ctx.http(b"GET /readyz HTTP/1.1\r\nHost: x\r\nOrigin: null\r\n\r\n"),
        await ctx.http(b"GET /nope HTTP/1.1\r\nHost: x\r\nOrigin: http://localhost\r\n\r\n"),
        await ctx.http(b"GET / HTTP/1.1\r\nHost: x\r\nOrigin: http://a\r\n" + UPGRADE + b"\r\n"),
    ]


@case
async def http_unknown_paths(ctx: CaseContext) -> Any:
    return [
        await ctx.http(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
        await ctx.http(b"GET /other HTTP/1.1\r\nHost: x\r\n" + UPGRADE + b"\r\n"),
        await ctx.http(b"DELETE /x HTTP/1.1\r\nHost: x\r\n\r\n"),
    ]


@case
async def http_upgrade_rejections(ctx: CaseContext) -> Any:
    key = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    return [
        await ctx.http(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        await ctx.http(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n" + UPGRADE + b"\r\n"),
        await ctx.http(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n"),
        await ctx.http(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        ),
        await ctx.http(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            + key
            + b"Sec-WebSocket-Version: 8\r\n\r\n"
        ),
    ]


@case
async def http_upgrade_accepts_token_lists(ctx: CaseContext) -> Any:
    response = await ctx.http(
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        timeout=0.5,
    )
    return response.lower()


# -- envelope ---------------------------------------------------------------------------------

GARBAGE = [
    "garbage",
    "",
    "   ",
    "[]",
    "[1]",
    '{"foo":1}',
    '{"id":1,"method":"x"} garbage',
    '{"a":1} {"b":2}',
    '{"id":1,"method":"x",}',
    '{"id":1,"method":"x","params":{"a":1,"a":2}}',
    '{"id":1.5,"method":"x"}',
    '{"id":null,"method":"x"}',
    '{"id":true,"method":"x"}',
    '{"id":9223372036854775808,"method":"x"}',
    '{"id":18446744073709551616,"method":"x"}',
    '{"id":-9223372036854775809,"method":"x"}',
    '{"id":1,"method":5}',
    '{"id":1,"method":"x","trace":"garbage"}',
    '{"id":1,"method":"x","trace":{"traceparent":5}}',
    '{"id":1,"method":"x","trace":["a","b","c"]}',
    '{"id":2,"error":5}',
    '{"result":1}',
    '{"id":1,"error":{"code":1}}',
    '{"id":1,"method":"x","params":"\\ud800"}',
    '{"id":1,"method":"x","params":' + "[" * 130 + "]" * 130 + "}",
]


@case
async def envelope_parse_errors_keep_connection(ctx: CaseContext) -> Any:
    client = await ctx.client(initialize=False)
    out = []
    for text in GARBAGE:
        await client.send_raw(text)
        out.append(await client.next_message())
    out.append(await client.request("environment/status", request_id="still-alive"))
    return out


@case
async def envelope_binary_frames_are_parsed(ctx: CaseContext) -> Any:
    client = await ctx.client(initialize=False)
    await client.send_raw(b'{"id":7,"method":"environment/status"}')
    first = await client.next_message()
    await client.send_raw(b"\xff\xfe")
    second = await client.next_message()
    return [first, second]


@case
async def envelope_ids_echo_with_their_type(ctx: CaseContext) -> Any:
    client = await ctx.client(initialize=False)
    out = []
    for request_id in ["abc", "", 0, -7, 9223372036854775807, -9223372036854775808, "1"]:
        out.append(await client.request("nope/method", request_id=request_id))
    return out


@case
async def envelope_jsonrpc_member_ignored(ctx: CaseContext) -> Any:
    client = await ctx.client(initialize=False)
    await client.send_raw('{"jsonrpc":"2.0","id":1,"method":"x"}')
    await client.send_raw('{"jsonrpc":"1.0","id":2,"method":"x","params":null,"trace":null}')
    await client.send_raw('{"jsonrpc":5,"id":3,"method":"x","extra":{"a":[1]}}')
    await client.send_raw('{"id":4,"method":"x","trace":{"traceparent":"00-x","y":1}}')
    await client.send_raw('{"id":5,"method":"x","trace":[]}')
    return [await client.next_message() for _ in range(5)]


@case
async def envelope_unknown_methods(ctx: CaseContext) -> Any:
    client = await ctx.client(initialize=False)
    before = [
        await client.request(m) for m in ("process/pause", "fs/rename", "ping", "process/output")
    ]
    await client.initialize()
    # Not process/kill or process/resize: those are our extensions (process_handles_extension).
    unknown = ("process/suspend", "session/list", "$/cancelRequest")
    after = [await client.request(m) for m in unknown]
    return before + after


@case
async def envelope_unit_params(ctx: CaseContext) -> Any:
    client = await ctx.client()
    out = [await client.request("environment/status", omit_params=True)]
    for index, params in enumerate([None, {}, {"a": 1}, [], [1], "s", 5, True]):
        await client.send({"id": index, "method": "environment/status", "params": params})
        out.append(await client.response(index))
    return out


@case
async def envelope_struct_params_shapes(ctx: CaseContext) -> Any:
    client = await ctx.client()
    out = []
    for params in ["s", 5, None, [], ["x"], ["x", 1, 2, 3, 4], True]:
        out.append(await client.request("process/read", params))
    await client.send({"id": "absent", "method": "process/terminate"})
    out.append(await client.response("absent"))
    return out


@case
async def envelope_serde_type_errors(ctx: CaseContext) -> Any:
    client = await ctx.client()
    variants: list[Json] = [
        {"processId": True},
        {"processId": [1]},
        {"processId": {"a": 1}},
        {"processId": 1.5},
        {"processId": None},
        {"processId": "x", "afterSeq": "s"},
        {"processId": "x", "afterSeq": -1},
        {"processId": "x", "afterSeq": 1.5},
        {"processId": "x", "afterSeq": True},
        {"processId": "x", "waitMs": []},
        {"processId": "x", "maxBytes": {}},
        {"afterSeq": "s"},
        {"afterSeq": 1},
        {"processId": '\u00e9\n\t"q\u0000'},
    ]
    return [await client.request("process/read", v) for v in variants]


@case
async def envelope_duplicate_keys_anywhere(ctx: CaseContext) -> Any:
    client = await ctx.client(initialize=False)
    texts = [
        '{"id":1,"method":"x","method":"y"}',
        '{"id":1,"method":"x","params":{"a":{"b":1,"b":2}}}',
        '{"id":1,"method":"x","params":[{"a":1,"a":1}]}',
        '{"id":1,"method":"x","params":{"\\u0061":1,"a":2}}',
    ]
    out = []
    for text in texts:
        await client.send_raw(text)
        out.append(await client.next_message())
    return out


# -- lifecycle --------------------------------------------------------------------------------


@case
async def lifecycle_gating_before_initialize(ctx: CaseContext) -> Any:
    client = await ctx.client(initialize=False)
    return [
        await client.request("environment/info"),
        await client.request("environment/status"),
        await client.request("process/read", {"processId": "x"}),
        await client.request("process/start", start_params(ctx, "p", ["true"])),
        await client.request("process/read", {}),
    ]


@case
async def lifecycle_gating_before_initialized(ctx: CaseContext) -> Any:
    client = await ctx.client(initialize=False)
    init = await client.request("initialize", {"clientName": "c"})
    out = [
        init,
        await client.request("environment/status"),
        await client.request("process/terminate", {"processId": "x"}),
    ]
    await client.notify("initialized")
    out.append(await client.request("environment/status"))
    return out


@case
async def lifecycle_initialize_errors_and_retry(ctx: CaseContext) -> Any:
    client = await ctx.client(initialize=False)
    return [
        await client.request("initialize", {}),
        await client.request("initialize", omit_params=True),
        await client.request("initialize", {"clientName": 5}),
        await client.request("initialize", {"clientName": "c", "resumeSessionId": 7}),
        await client.request(
            "initialize",
            {"clientName": "c", "resumeSessionId": "00000000-0000-0000-0000-000000000000"},
        ),
        await client.request("initialize", {"clientName": "c", "resumeSessionId": None}),
        await client.request("initialize", {"clientName": "c"}),
    ]


@case
async def lifecycle_initialized_twice_is_ignored(ctx: CaseContext) -> Any:
    client = await ctx.client()
    await client.notify("initialized", {"anything": [1]})
    await client.notify("initialized")
    return await client.request("environment/status")


@case
async def lifecycle_initialized_before_initialize_drops(ctx: CaseContext) -> Any:
    client = await ctx.client(initialize=False)
    await client.notify("initialized")
    return await dropped(client)


@case
async def lifecycle_unknown_notification_drops(ctx: CaseContext) -> Any:
    client = await ctx.client()
    await client.notify("process/output", {"processId": "x"})
    return await dropped(client)


@case
async def lifecycle_client_response_drops(ctx: CaseContext) -> Any:
    client = await ctx.client()
    await client.send({"id": 5, "result": {}})
    return await dropped(client)


@case
async def lifecycle_client_error_object_drops(ctx: CaseContext) -> Any:
    client = await ctx.client(initialize=False)
    await client.send({"id": 5, "error": {"code": 1, "message": "m"}})
    return await dropped(client)


@case
async def lifecycle_resume_conflict_and_reattach(ctx: CaseContext) -> Any:
    first = await ctx.client()
    session_id = first.messages[0]["result"]["sessionId"]
    start = await first.request(
        "process/start",
        start_params(ctx, "keep", ["sh", "-c", "read x; echo got:$x"], pipeStdin=True),
    )
    second = await ctx.client(initialize=False)
    conflict = await second.request(
        "initialize", {"clientName": "c2", "resumeSessionId": session_id}
    )
    await first.close()
    third = await ctx.client(initialize=False)
    resumed: Json = {}
    for _ in range(100):  # the server notices the disconnect asynchronously
        resumed = await third.request(
            "initialize", {"clientName": "c3", "resumeSessionId": session_id}
        )
        if "result" in resumed:
            break
        await asyncio.sleep(0.05)
    await third.notify("initialized")
    same = resumed["result"]["sessionId"] == session_id
    write = await third.request(
        "process/write", {"processId": "keep", "chunk": b64("hi\n"), "writeId": "w"}
    )
    events = await third.process_events("keep")
    read = (await third.request("process/read", {"processId": "keep"}))["result"]
    # The reference sometimes numbers the exit before the output of a short-lived child.
    chunks = [(c["stream"], c["chunk"]) for c in read.pop("chunks")]
    return [start, conflict, same, write, sorted(e["method"] for e in events), read, chunks]


@case
async def lifecycle_sessions_are_isolated(ctx: CaseContext) -> Any:
    one = await ctx.client()
    await one.request("process/start", start_params(ctx, "iso", ["true"]))
    two = await ctx.client()
    return [
        await two.request("process/read", {"processId": "iso"}),
        await two.request("process/write", {"processId": "iso", "chunk": "", "writeId": "1"}),
        await two.request("process/terminate", {"processId": "iso"}),
    ]


# -- environment ------------------------------------------------------------------------------


@case
async def environment_info_matches_initialize(ctx: CaseContext) -> Any:
    client = await ctx.client(initialize=False)
    init = await client.request("initialize", {"clientName": "c"})
    await client.notify("initialized")
    info = await client.request("environment/info")
    return [
        sorted(info["result"]),
        info["result"] == init["result"]["environmentInfo"],
        sorted(info["result"]["capabilities"]),
        info["result"]["platformOs"],
        info["result"]["shell"],
        info["result"]["userHomeDir"],
        info["result"]["tempDir"],
    ]


# -- processes --------------------------------------------------------------------------------


@case
async def process_true_lifecycle(ctx: CaseContext) -> Any:
    client = await ctx.client()
    return await run_to_close(client, ctx, "t", ["/bin/true"])


@case
async def process_output_and_exit_code(ctx: CaseContext) -> Any:
    client = await ctx.client()
    return await run_to_close(
        client, ctx, "p1", ["sh", "-c", "echo out; sleep 0.1; echo err >&2; exit 3"]
    )


@case
async def process_exit_code_of_signal_death(ctx: CaseContext) -> Any:
    client = await ctx.client()
    return await run_to_close(client, ctx, "s", ["sh", "-c", "kill -TERM $$"])


@case
async def process_pty_transcript(ctx: CaseContext) -> Any:
    client = await ctx.client()
    # The shell waits for a second line before it exits: the 0.169.0 reference can drop PTY output
    # written just before an exit (we never do), and that race is not what this case compares.
    script = (
        "tty >/dev/null && echo is-a-tty; stty size; read x; echo got:$x; echo err >&2; "
        "read y; exit 5"
    )
    start = await client.request(
        "process/start", start_params(ctx, "t1", ["sh", "-c", script], tty=True)
    )

    def printed(text: bytes) -> Callable[[Any], bool]:
        def seen(_message: Any) -> bool:
            return text in b"".join(
                base64.b64decode(m["params"]["chunk"])
                for m in client.messages
                if m.get("method") == "process/output"
            )

        return seen

    await client.wait_for(printed(b"24 80"))
    write = await client.request(
        "process/write", {"processId": "t1", "chunk": b64("abc\n"), "writeId": "1"}
    )
    await client.wait_for(printed(b"err"))
    await client.request("process/write", {"processId": "t1", "chunk": b64("\n"), "writeId": "2"})
    events = await client.process_events("t1")
    output = b"".join(
        base64.b64decode(e["params"]["chunk"]) for e in events if e["method"] == "process/output"
    )
    tail = [
        (e["method"], {k: v for k, v in e["params"].items() if k != "seq"})
        for e in events
        if e["method"] != "process/output"
    ]
    streams = sorted({e["params"]["stream"] for e in events if e["method"] == "process/output"})
    return [start, write, output.decode(), tail, streams]


@case
async def process_late_output_after_exit_keeps_seq(ctx: CaseContext) -> Any:
    client = await ctx.client()
    await client.request(
        "process/start",
        start_params(
            ctx, "late", ["sh", "-c", "echo parent; sleep 0.2; (sleep 0.5; echo late) & exit 0"]
        ),
    )
    events = await client.process_events("late")
    return [
        (e["method"], e["params"]["seq"], e["params"].get("chunk"))
        for e in sorted(events, key=lambda m: m["params"]["seq"])
    ]


@case
async def process_read_semantics(ctx: CaseContext) -> Any:
    client = await ctx.client()
    await run_to_close(
        client,
        ctx,
        "r",
        ["sh", "-c", "printf a; sleep 0.1; printf bb; sleep 0.1; printf ccc; sleep 0.1"],
    )
    reads = [
        {"processId": "r"},
        {"processId": "r", "afterSeq": 1},
        {"processId": "r", "afterSeq": 3},
        {"processId": "r", "afterSeq": 99},
        {"processId": "r", "maxBytes": 0},
        {"processId": "r", "maxBytes": 3},
        {"processId": "r", "maxBytes": 100},
        {"processId": "r", "afterSeq": None, "maxBytes": None, "waitMs": None},
        {"processId": "r", "waitMs": 5000},
        {"processId": "nope"},
    ]
    return [await client.request("process/read", r) for r in reads]


@case
async def process_long_poll_returns_on_output(ctx: CaseContext) -> Any:
    client = await ctx.client()
    await client.request(
        "process/start", start_params(ctx, "lp", ["sh", "-c", "sleep 0.3; echo x; sleep 5"])
    )
    first = await client.request("process/read", {"processId": "lp", "waitMs": 10000}, timeout=20)
    silent = await client.request("process/read", {"processId": "lp", "afterSeq": 1, "waitMs": 200})
    await client.request("process/terminate", {"processId": "lp"})
    return [first, silent]


@case
async def process_write_statuses(ctx: CaseContext) -> Any:
    client = await ctx.client()
    await client.request(
        "process/start",
        start_params(ctx, "cat", ["sh", "-c", "read a; echo got:$a"], pipeStdin=True),
    )
    await client.request("process/start", start_params(ctx, "nostdin", ["sleep", "5"]))
    out = [
        await client.request(
            "process/write", {"processId": "cat", "chunk": b64("one\n"), "writeId": "w1"}
        ),
        await client.request(
            "process/write", {"processId": "cat", "chunk": b64("one\n"), "writeId": "w1"}
        ),
        await client.request("process/write", {"processId": "nope", "chunk": "", "writeId": "w"}),
        await client.request(
            "process/write", {"processId": "nostdin", "chunk": b64("x"), "writeId": "w"}
        ),
        await client.request(
            "process/write", {"processId": "cat", "chunk": b64("x"), "writeId": ""}
        ),
        await client.request("process/write", {"processId": "cat", "chunk": "QQ", "writeId": "z"}),
        await client.request("process/write", {"processId": "cat", "chunk": b64("x")}),
    ]
    events = await client.process_events("cat")
    out.append(
        [
            base64.b64decode(e["params"]["chunk"]).decode()
            for e in events
            if e["method"] == "process/output"
        ]
    )
    out.append(
        await client.request(
            "process/write", {"processId": "cat", "chunk": b64("late"), "writeId": "w2"}
        )
    )
    out.append(
        await client.request(
            "process/write", {"processId": "cat", "chunk": b64("again"), "writeId": "w1"}
        )
    )
    await client.request("process/terminate", {"processId": "nostdin"})
    return out


@case
async def process_signal_interrupt(ctx: CaseContext) -> Any:
    client = await ctx.client()
    await client.request("process/start", start_params(ctx, "c2", ["sleep", "10"]))
    signal_response = await client.request(
        "process/signal", {"processId": "c2", "signal": "interrupt"}
    )
    events = await client.process_events("c2")
    return [
        signal_response,
        sorted(events, key=lambda m: m["params"]["seq"]),
        await client.request("process/signal", {"processId": "nope", "signal": "interrupt"}),
        await client.request("process/signal", {"processId": "c2", "signal": "interrupt"}),
        await client.request("process/signal", {"processId": "c2", "signal": "kill"}),
        await client.request("process/signal", {"processId": "c2"}),
    ]


@case
async def process_terminate(ctx: CaseContext) -> Any:
    client = await ctx.client()
    await client.request(
        "process/start", start_params(ctx, "c3", ["sh", "-c", "trap '' TERM INT; sleep 10"])
    )
    first = await client.request("process/terminate", {"processId": "c3"})
    events = await client.process_events("c3")
    return [
        first,
        sorted(events, key=lambda m: m["params"]["seq"]),
        await client.request("process/terminate", {"processId": "c3"}),
        await client.request("process/terminate", {"processId": "nope"}),
        await client.request("process/start", start_params(ctx, "c3", ["true"])),
    ]


@case
async def process_start_errors(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "afile").write_text("x")
    cwd = ctx.uri()
    base = {"processId": "e", "argv": ["true"], "cwd": cwd, "env": {}, "tty": False}
    variants: list[Json] = [
        {**base, "argv": []},
        {**base, "cwd": str(ctx.workdir)},
        {"argv": ["true"], "cwd": "/tmp"},
        {**base, "cwd": ctx.uri("missing")},
        {**base, "cwd": ctx.uri("afile")},
        {**base, "argv": ["definitely-not-a-program-xyz"]},
        {**base, "argv": ["/etc/passwd"]},
        {**base, "argv": ["/tmp"]},
        {**base, "argv": [""]},
        {**base, "env": {"A": "x\u0000y"}},
        {**base, "argv": ["tr\u0000ue"]},
        {**base, "env": {"A": 5}},
        {**base, "tty": "yes"},
        {k: v for k, v in base.items() if k != "tty"},
        {**base, "pipeStdin": None},
        {**base, "arg0": 5},
        {**base, "envPolicy": {}},
        {
            **base,
            "envPolicy": {
                "inherit": "x",
                "ignoreDefaultExcludes": False,
                "exclude": [],
                "set": {},
                "includeOnly": [],
            },
        },
        {**base, "envPolicy": "x"},
        {**base, "sandbox": {}},
        {**base, "cwd": "file://server/share/x"},
        {**base, "cwd": "file:///C:/x"},
    ]
    return [await client.request("process/start", v) for v in variants]


@case
async def process_duplicate_id(ctx: CaseContext) -> Any:
    client = await ctx.client()
    first = await client.request("process/start", start_params(ctx, "dup", ["sleep", "5"]))
    second = await client.request("process/start", start_params(ctx, "dup", ["true"]))
    empty = await client.request("process/start", start_params(ctx, "", ["true"]))
    await client.process_events("")
    await client.request("process/terminate", {"processId": "dup"})
    return [first, second, empty]


@case
async def process_env_is_exact(ctx: CaseContext) -> Any:
    client = await ctx.client()
    return await run_to_close(
        client, ctx, "env", ["/usr/bin/env"], env={"ONLY": "this", "A=B": "c", "EMPTY": ""}
    )


@case
async def process_env_policy(ctx: CaseContext) -> Any:
    client = await ctx.client()
    out = []
    policies: list[Json] = [
        {
            "inherit": "none",
            "ignoreDefaultExcludes": False,
            "exclude": [],
            "set": {"S": "1"},
            "includeOnly": [],
        },
        {
            "inherit": "core",
            "ignoreDefaultExcludes": False,
            "exclude": [],
            "set": {},
            "includeOnly": ["HOME", "USER", "TERM"],
        },
        {
            "inherit": "none",
            "ignoreDefaultExcludes": False,
            "exclude": [],
            "set": {"API_KEY": "k", "PLAIN": "s"},
            "includeOnly": [],
        },
        {
            "inherit": "none",
            "ignoreDefaultExcludes": False,
            "exclude": ["pl*"],
            "set": {"PLAIN": "s", "OTHER": "o"},
            "includeOnly": [],
        },
        {
            "inherit": "none",
            "ignoreDefaultExcludes": False,
            "exclude": [],
            "set": {"A1": "s", "B1": "o", "CODEX_EXEC_SERVER_EXIT_ON_STDIN_CLOSE": "x"},
            "includeOnly": ["a?"],
        },
    ]
    for index, policy in enumerate(policies):
        _, summary = await run_to_close(
            client,
            ctx,
            f"pol{index}",
            ["/usr/bin/env"],
            envPolicy=policy,
            env={"PLAIN": "fromenv", "openai_identity_token_file": "x"},
        )
        out.append(sorted("".join(data for _, data in summary["output"]).splitlines()))
    return out


@case
async def process_arg0_and_relative_program(ctx: CaseContext) -> Any:
    client = await ctx.client()
    script = ctx.workdir / "script.sh"
    script.write_text("#!/bin/sh\necho script:$0:$1\n")
    script.chmod(0o755)
    first = await run_to_close(client, ctx, "a0", ["sh", "-c", "echo $0"], arg0="custom-name")
    second = await run_to_close(client, ctx, "rel", ["./script.sh", "arg"])
    third = await run_to_close(client, ctx, "path", ["script.sh"], env={"PATH": str(ctx.workdir)})
    fourth = await run_to_close(client, ctx, "nopath", ["true"], env={"PATH": "/nonexistent"})
    return [first, second, third, fourth]


@case
async def process_write_after_terminate(ctx: CaseContext) -> Any:
    """A new write once a process killed by `process/terminate` has exited fails (codex 0.169
    and 0.171; a retried writeId is still `accepted`); after an exit of its own it is accepted
    and dropped.
    (Between the terminate and the exit the outcome is a race in the reference: not asked.)"""
    client = await ctx.client()
    out = []
    for pid, extra in (("pipe", {"pipeStdin": True}), ("tty", {"tty": True}), ("none", {})):
        await client.request("process/start", start_params(ctx, pid, ["sleep", "30"], **extra))
        write = {"processId": pid, "chunk": b64("x\n"), "writeId": "w1"}
        out.append(await client.request("process/write", write))
        out.append(await client.request("process/terminate", {"processId": pid}))
        await client.process_events(pid)
        out.append(await client.request("process/write", write))
        out.append(await client.request("process/write", {**write, "writeId": "w2"}))
    await run_to_close(client, ctx, "exited", ["true"], pipeStdin=True)
    out.append(await client.request("process/terminate", {"processId": "exited"}))
    out.append(
        await client.request(
            "process/write", {"processId": "exited", "chunk": b64("x"), "writeId": "w1"}
        )
    )
    return out


@case
async def process_read_closed_returns_immediately(ctx: CaseContext) -> Any:
    client = await ctx.client()
    await run_to_close(client, ctx, "done", ["true"])
    return await client.request(
        "process/read", {"processId": "done", "afterSeq": 2, "waitMs": 60000}, timeout=5
    )


@case
async def process_many_pipelined_requests(ctx: CaseContext) -> Any:
    client = await ctx.client()
    ids = [f"m{i}" for i in range(20)]
    for i, pid in enumerate(ids):
        await client.send(
            {
                "id": i + 1,
                "method": "process/start",
                "params": start_params(ctx, pid, ["sh", "-c", f"echo {i}"]),
            }
        )
    responses = [await client.response(i + 1) for i in range(20)]
    outputs = []
    for pid in ids:
        events = await client.process_events(pid)
        # The reference sometimes reports the exit before the output of a short-lived child
        # (both orders carry consecutive seqs); compare the set of events.
        outputs.append(sorted(e["method"] for e in events))
    return [responses, outputs]


def dumps(value: Any) -> str:
    return json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False)


@case
async def process_pty_arg0_rules(ctx: CaseContext) -> Any:
    """PTY + arg0 (codex 0.171): argv[0] is what runs, the child sees arg0 as its argv[0];
    resolution errors have their own wording; a NUL in a program name is not a crash."""
    client = await ctx.client()
    (ctx.workdir / "sub" / "true").mkdir(parents=True)
    (ctx.workdir / "plain").write_text("x")
    (ctx.workdir / "plain").chmod(0o644)
    out = []
    variants: list[tuple[list[str], str | None, dict[str, str]]] = [
        (["sh", "-c", "echo $0"], "renamed", {"PATH": "/usr/bin:/bin"}),
        (["nonexist-prog"], "A0", {"PATH": "/usr/bin:/bin"}),
        (["true"], "A0", {"PATH": f"{ctx.workdir}/sub"}),
        (["true"], "A0", {}),
        (["/nonexistent/x"], "A0", {}),
        (["./nope"], "A0", {}),
        (["./plain"], "A0", {}),
        (["./sub"], "A0", {}),
        ([""], "A0", {"PATH": "/bin"}),
        (["tr\0ue"], "A0", {"PATH": "/bin"}),
        (["tr\0ue"], None, {"PATH": "/bin"}),
    ]
    for index, (argv, arg0, env) in enumerate(variants):
        params: dict[str, Any] = {
            "processId": f"t{index}", "argv": argv, "cwd": ctx.uri(), "env": env, "tty": True,
        }  # fmt: skip
        if arg0 is not None:
            params["arg0"] = arg0
        response = await client.request("process/start", params)
        if "error" in response:
            out.append(response)
            continue
        events = await client.process_events(f"t{index}")
        output = b"".join(
            base64.b64decode(e["params"]["chunk"])
            for e in events
            if e["method"] == "process/output"
        )
        out.append([response, output.decode()])
    return out


@case
async def process_pty_spawn_rules(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "sub" / "true").mkdir(parents=True)
    (ctx.workdir / "plain").write_text("x")
    (ctx.workdir / "plain").chmod(0o644)
    out = []
    variants: list[tuple[list[str], str, dict[str, str]]] = [
        (["/usr/bin/env"], ctx.uri(), {"PATH": "/bin", "ZZ": "1"}),
        (["/usr/bin/env"], ctx.uri(), {"PATH": "/bin", "SHELL": "/nonexistent"}),
        (["true"], ctx.uri(), {"PATH": f"{ctx.workdir}/sub:/nonexistent:rel"}),
        (["plain"], ctx.uri(), {"PATH": str(ctx.workdir)}),
        (["true"], ctx.uri(), {}),
        (["/nonexistent/x"], ctx.uri(), {}),
        (["./nope"], ctx.uri(), {}),
        (["./sub"], ctx.uri(), {}),
        (["./plain"], ctx.uri(), {}),
        ([""], ctx.uri(), {"PATH": "/bin"}),
        (["/bin/pwd"], ctx.uri("missing"), {"PATH": "/bin", "HOME": "/usr"}),
    ]
    for index, (argv, cwd, env) in enumerate(variants):
        params = {"processId": f"t{index}", "argv": argv, "cwd": cwd, "env": env, "tty": True}
        response = await client.request("process/start", params)
        if "error" in response:
            out.append(response)
            continue
        events = await client.process_events(f"t{index}")
        output = b"".join(
            base64.b64decode(e["params"]["chunk"])
            for e in events
            if e["method"] == "process/output"
        )
        out.append([response, output.decode()])
    return out


# -- the other process/start members ------------------------------------------------------------

_ECHO = ["/bin/sh", "-c", "echo ran"]
_PROXY: Json = {
    "enabled": True,
    "enableSocks5": True,
    "enableSocks5Udp": False,
    "allowUpstreamProxy": False,
    "dangerouslyAllowAllUnixSockets": False,
    "mode": "limited",
    "allowLocalBinding": False,
}
_UUID = "01a24b6f-5086-7bf3-a8f5-429081499670"
_BASH = {"name": "bash", "path": "/bin/bash"}


async def _start_rows(ctx: CaseContext, rows: list[Json], prefix: str) -> list[Any]:
    """`process/start` with each row's members over a plain `echo ran` start; the answer, and
    for a started process its output and exit."""
    client = await ctx.client()
    out: list[Any] = []
    for index, row in enumerate(rows):
        params = start_params(ctx, f"{prefix}{index}", _ECHO)
        params.update(row)
        response = await client.request("process/start", params)
        response = {k: v for k, v in response.items() if k != "id"}
        if "result" in response:
            out.append([response, summarize(await client.process_events(params["processId"]))])
        else:
            out.append(response)
    return out


def _proxy(**members: Any) -> Json:
    return {key: value for key, value in {**_PROXY, **members}.items() if value != "-"}


@case
async def process_start_metadata_params(ctx: CaseContext) -> Any:
    """`metadata {threadId?, toolCallId?}`: the thread id must be a UUID (any of the crate's
    text forms); errors come in the order the members arrive."""
    thread_ids: list[Any] = [
        _UUID,
        _UUID.upper(),
        _UUID.replace("-", ""),
        f"urn:uuid:{_UUID}",
        f"{{{_UUID}}}",
        None,
        "t1",
        "",
        5,
        _UUID[:-1],
        _UUID + "0",
        _UUID[:-1] + "g",
        _UUID[:23] + "_" + _UUID[24:],
        _UUID[:9] + _UUID[10:13] + "-" + _UUID[14:],
        _UUID[:8] + "5" + _UUID[8:],
        _UUID + "-",
        "zz",
        "\u00e9",
        f"{{{_UUID}0}}",
        f"{{{_UUID[:-1]}}}",
        f"urn:uuid:{_UUID[:-1]}g",
        f"{{{_UUID[:-1]}g}}",
        f"urn:uuid:{_UUID[:8]}",
        "{" + _UUID,
        "urn:uuid:",
        "-" * 36,
        "0" * 31,
    ]
    rows: list[Json] = [{"metadata": {"threadId": value}} for value in thread_ids]
    rows += [
        {"metadata": None},
        {"metadata": {}},
        {"metadata": "x"},
        {"metadata": []},
        {"metadata": ["x"]},
        {"metadata": [None, 5]},
        {"metadata": [None, None, 1]},
        {"metadata": {"toolCallId": 5}},
        {"metadata": {"toolCallId": None, "other": 1}},
        {"metadata": {"threadId": _UUID, "toolCallId": "c1"}},
        {"metadata": {"threadId": "t1"}, "argv": []},
    ]
    return await _start_rows(ctx, rows, "m")


@case
async def process_start_shell_snapshot_params(ctx: CaseContext) -> Any:
    """`shellSnapshot {scopeId, shell {name, path}}`: its serde errors, the scope's 1..=256
    bytes, and `unsupported for shell` only when the argv is the shell's `-lc` form."""
    rows: list[Json] = [
        {"shellSnapshot": None},
        {"shellSnapshot": "x"},
        {"shellSnapshot": {}},
        {"shellSnapshot": {"scopeId": "a"}},
        {"shellSnapshot": {"shell": _BASH}},
        {"shellSnapshot": {"scopeId": "", "shell": _BASH}},
        {"shellSnapshot": {"scopeId": "x" * 256, "shell": _BASH}},
        {"shellSnapshot": {"scopeId": "x" * 257, "shell": _BASH}},
        {"shellSnapshot": {"scopeId": "\u00e9" * 128, "shell": _BASH}},
        {"shellSnapshot": {"scopeId": "\u00e9" * 129, "shell": _BASH}},
        {"shellSnapshot": {"scopeId": 5, "shell": _BASH}},
        {"shellSnapshot": {"scopeId": "a", "shell": {}}},
        {"shellSnapshot": {"scopeId": "a", "shell": {"name": "bash"}}},
        {"shellSnapshot": {"scopeId": "a", "shell": {"name": 1, "path": "/bin/bash"}}},
        {"shellSnapshot": {"scopeId": "a", "shell": "bash"}},
        {"shellSnapshot": {"scopeId": "a", "shell": {**_BASH, "extra": 1}, "extra": 1}},
        {"shellSnapshot": []},
        {"shellSnapshot": ["a"]},
        {"shellSnapshot": ["a", ["bash"]]},
        {"shellSnapshot": ["a", ["bash", "/bin/bash", 3]]},
        {"shellSnapshot": ["", ["bash", "/bin/bash"]]},
        {"shellSnapshot": {"scopeId": "a", "shell": {"name": "fish", "path": "/bin/sh"}}},
    ]
    for name in ("fish", "", "BASH", "dash", "powershell"):
        rows.append(
            {
                "argv": ["/bin/sh", "-lc", "echo ran"],
                "shellSnapshot": {"scopeId": "u", "shell": {"name": name, "path": "/bin/sh"}},
            }
        )
    rows += [
        {"shellSnapshot": {"scopeId": "", "shell": _BASH}, "argv": []},
        {"shellSnapshot": {"scopeId": "", "shell": _BASH}, "cwd": "file://server/x"},
        {"shellSnapshot": {"scopeId": "", "shell": _BASH}, "processId": "s0"},
        {"shellSnapshot": {"scopeId": "", "shell": _BASH}, "cwd": ctx.uri("missing")},
        {
            "argv": ["/bin/sh", "-lc", "echo ran"],
            "shellSnapshot": {"scopeId": "v", "shell": {"name": "fish", "path": "/bin/sh"}},
            "processId": "s0",
        },
        {
            "argv": ["/bin/sh", "-lc", "echo ran"],
            "shellSnapshot": {"scopeId": "w", "shell": {"name": "sh", "path": "/bin/sh"}},
            "cwd": ctx.uri("missing"),
        },
    ]
    return await _start_rows(ctx, rows, "s")


@case
async def process_start_network_params(ctx: CaseContext) -> Any:
    """`networkProxy` and `managedNetwork`: their serde errors and the reference's checks
    (a launch is refused later here, so only malformed ones are sent)."""
    rows: list[Json] = [
        {"networkProxy": None},
        {"networkProxy": {}},
        {"networkProxy": "x"},
        {"networkProxy": {"proxy": {}}},
        {"networkProxy": {"proxy": "x"}},
    ]
    for member in _PROXY:
        rows.append({"networkProxy": {"proxy": _proxy(**{member: "-"})}})
    rows += [
        {"networkProxy": {"proxy": _proxy(mode="bogus")}},
        {"networkProxy": {"proxy": _proxy(mode=None)}},
        {"networkProxy": {"proxy": _proxy(enabled=False)}},
        {"networkProxy": {"proxy": _proxy(enabled=1)}},
        {"networkProxy": {"proxy": _proxy(enableSocks5=None)}},
        {"networkProxy": {"proxy": _proxy(domains={"a.com": "ask"})}},
        {"networkProxy": {"proxy": _proxy(domains=[])}},
        {"networkProxy": {"proxy": _proxy(domains={"a": 1})}},
        {"networkProxy": {"proxy": _proxy(unixSockets={"x": 1})}},
        {"networkProxy": {"proxy": _proxy(unixSockets=[])}},
        {"networkProxy": {"proxy": _proxy(unixSockets={"/x": "none"})}},
        {"networkProxy": {"proxy": _proxy(unixSockets={"x": "allow"})}},
        {
            "networkProxy": {
                "proxy": _proxy(unixSockets={"/x": "allow", "rel": "deny", "y": "allow"})
            }
        },
        {"networkProxy": {"proxy": _proxy(reviewDomains="a.com")}},
        {"networkProxy": {"proxy": _proxy(reviewDomains=[1])}},
        {"networkProxy": {"proxy": _proxy(transparentTcp="x")}},
        {"networkProxy": {"proxy": _proxy(transparentTcp=True)}},
        {"networkProxy": {"proxy": _proxy(credentialMasking="x")}},
        {"networkProxy": {"proxy": _proxy(credentialProviders={"x": {"envVar": "A"}})}},
        {"networkProxy": {"proxy": _proxy(credentialProviders={"x": "s"})}},
        {"networkProxy": {"proxy": _proxy(credentialProviders={"x": {"env": "A"}})}},
        {"networkProxy": {"proxy": _proxy(credentialProviders={"x": {"header": 1}})}},
        {"networkProxy": {"proxy": _proxy(credentialProviders=[])}},
        {"networkProxy": {"proxy": _proxy(credentialProviders={"x": {"auth": ["nope"]}})}},
        {"networkProxy": {"proxy": _proxy(credentialProviders={"x": {"auth": [1]}})}},
        {"networkProxy": {"proxy": _proxy(credentialProviders={"x": {"auth": "bearer"}})}},
        {"networkProxy": {"proxy": _PROXY, "policyDecisionTimeoutMs": 0}},
        {"networkProxy": {"proxy": _PROXY, "policyDecisionTimeoutMs": -1}},
        {"networkProxy": {"proxy": _PROXY, "policyDecisionTimeoutMs": "x"}},
        {"networkProxy": {"proxy": _PROXY, "environmentId": 5}},
        {"networkProxy": {"proxy": _PROXY, "executionId": 5}},
        {"networkProxy": {"proxy": _PROXY, "auditMetadata": None}},
        {"networkProxy": {"proxy": _PROXY, "auditMetadata": "x"}},
        {"networkProxy": {"proxy": _PROXY, "auditMetadata": {"conversationId": 5}}},
        {"networkProxy": {"proxy": _PROXY, "auditMetadata": {"slug": 1}}},
        {"networkProxy": [_PROXY, None]},
        {"networkProxy": [_PROXY, {}, 5]},
        {"networkProxy": [_PROXY, {}, None, None, None, 5]},
        {"managedNetwork": None},
        {"managedNetwork": {}},
        {"managedNetwork": "x"},
        {"managedNetwork": []},
        {"managedNetwork": [False, [80], False]},
        {"managedNetwork": [True, True]},
        {"managedNetwork": [[1]]},
        {"managedNetwork": {"loopbackPorts": [70000]}},
        {"managedNetwork": {"loopbackPorts": [-1]}},
        {"managedNetwork": {"loopbackPorts": "x"}},
        {"managedNetwork": {"loopbackPorts": None}},
        {"managedNetwork": {"allowLocalBinding": 1}},
        {"managedNetwork": {"allowLocalBinding": True, "loopbackPorts": [1, 2]}},
        {"managedNetwork": {"domainPolicy": "ignored", "extra": 1}},
        {"managedNetwork": {"transparentTcp": "x"}},
        {"managedNetwork": {"transparentTcp": False}},
        {"managedNetwork": {"transparentTcp": True}},
        {"managedNetwork": {"transparentTcp": True}, "networkProxy": {"proxy": _PROXY}},
        {"enforceManagedNetwork": True, "managedNetwork": {}},
    ]
    return await _start_rows(ctx, rows, "n")


@case
async def process_start_check_order(ctx: CaseContext) -> Any:
    """Which error wins when several members are wrong (the reference's order of checks)."""
    mxc = {"permissions": {"type": "disabled"}, "windowsSandboxLevel": "mxc"}
    bad_path = {
        "permissions": {
            "type": "managed",
            "file_system": {
                "type": "restricted",
                "entries": [
                    {"path": {"type": "path", "path": "file://server/x"}, "access": "read"}
                ],
            },
            "network": "restricted",
        },
        "windowsSandboxLevel": "disabled",
    }
    timeout0 = {"proxy": _PROXY, "policyDecisionTimeoutMs": 0}
    disabled = {"proxy": _proxy(enabled=False)}
    transparent = {"proxy": _proxy(transparentTcp=True)}
    managed_tcp = {"transparentTcp": True}
    empty_scope = {"scopeId": "", "shell": _BASH}
    fish = {"scopeId": "f", "shell": {"name": "fish", "path": "/bin/sh"}}
    login = ["/bin/sh", "-lc", "echo ran"]
    rows: list[Json] = [
        {"cwd": "file://server/x", "managedNetwork": managed_tcp},
        {"cwd": "file://server/x", "networkProxy": timeout0},
        {"cwd": "file://server/x", "sandbox": mxc},
        {"cwd": "file://server/x", "networkProxy": disabled},
        {"managedNetwork": managed_tcp, "networkProxy": timeout0},
        {"managedNetwork": managed_tcp, "argv": []},
        {"managedNetwork": managed_tcp, "sandbox": mxc},
        {"managedNetwork": managed_tcp, "shellSnapshot": empty_scope},
        {"networkProxy": timeout0, "sandbox": mxc},
        {"networkProxy": timeout0, "argv": []},
        {"networkProxy": timeout0, "shellSnapshot": empty_scope},
        {"networkProxy": transparent, "sandbox": mxc},
        {"networkProxy": {"proxy": _proxy(transparentTcp=True, enabled=False)}},
        {"networkProxy": disabled, "sandbox": mxc},
        {"networkProxy": disabled, "argv": []},
        {"networkProxy": disabled, "sandbox": bad_path},
        {"networkProxy": disabled, "shellSnapshot": empty_scope},
        {"argv": [], "sandbox": mxc},
        {"argv": [], "sandbox": bad_path},
        {"argv": [], "shellSnapshot": empty_scope},
        {"sandbox": mxc, "shellSnapshot": empty_scope},
        {"sandbox": bad_path, "shellSnapshot": empty_scope},
        {"sandbox": bad_path, "shellSnapshot": fish, "argv": login},
        {"shellSnapshot": fish, "argv": login, "cwd": ctx.uri("missing")},
        {"shellSnapshot": fish, "argv": login, "networkProxy": disabled},
    ]
    return await _start_rows(ctx, rows, "o")


@case
async def process_start_positional_params(ctx: CaseContext) -> Any:
    """`process/start` params as an array: the reference's member order and defaults."""
    client = await ctx.client()
    cwd = ctx.uri()
    full = [None, ["/bin/sh", "-c", "echo ran"], cwd, None, None, {}, False, False, None, None]
    rows: list[list[Any]] = [
        [*full, False, None, None],
        [*full[:5], {}, False],
        [*full[:7]],
        [*full],
        [*full, False],
        [*full, False, None],
        [*full, False, None, None, None],
        [*full, False, None, 7],
        [*full, False, 7, None],
        [*full[:4], 7, None, {}, False],
        [*full[:5], 7, {}, False],
        [[], *full[1:], False, None, None],
    ]
    out: list[Any] = []
    for index, row in enumerate(rows):
        process_id = f"a{index}"
        response = await client.request("process/start", [process_id, *row])
        response = {k: v for k, v in response.items() if k != "id"}
        if "result" in response:
            out.append([response, summarize(await client.process_events(process_id))])
        else:
            out.append(response)
    return out
