"""Differential wire cases for `http/request` and its `http/request/bodyDelta` stream (§11).

Each case starts its own scripted HTTP server (tests/harness/httpserver.py) on 127.0.0.1, sends
`http/request`s through the exec-server under test and returns what came back *and* what the
HTTP server received (request line, the raw header list in wire order with the names' case,
the body). Ports differ between the two runs: every observation goes through `server.mask()`.

Normalised on purpose:

* Response bodies are shown as text (or `hex:`), large ones as length + SHA-256.
* Streamed bodies are summarised (`stream_view`): the concatenated data, whether the seqs are
  1..N without gaps, whether only the last delta is `done`, and the last delta itself. How the
  body is cut into deltas depends on the HTTP stack and the socket, so delta sizes and counts
  are never compared.
* Nothing sleeps: stalls wait on events of the scripted routes or on the client disconnecting;
  timeouts are the exec-server's own (`timeoutMs`), observed through their error texts.

Not here: https (TLS handshake failures have stack-specific texts), real DNS names, proxies.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from typing import Any

from tests.harness.differential import Case, CaseContext
from tests.harness.httpserver import (
    HoldHeaders,
    HttpTestServer,
    StalledBody,
    chunked,
    close_without_response,
    deterministic_bytes,
    echo,
    gzipped,
    http_test_server,
    large,
    raw,
    redirect,
    respond,
    text,
    unused_port,
)
from tests.harness.wire import Json, WireClient

CASES: dict[str, Case] = {}

MIB = 1024 * 1024


def case(fn: Case) -> Case:
    CASES[fn.__name__] = fn
    return fn


# -- helpers ----------------------------------------------------------------------------------


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def digest(data: bytes) -> Json:
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def params(url: str, method: str = "GET", **extra: Any) -> Json:
    """`http/request` params: a method, a url, requestId "r" unless given."""
    out: Json = {"method": method, "url": url, "requestId": "r"}
    out.update(extra)
    return out


def headers(*pairs: tuple[str, str]) -> list[Json]:
    return [{"name": name, "value": value} for name, value in pairs]


def view(response: Json, *, digest_over: int = 4096) -> Json:
    """A response without its id; a result's body as text (or its digest when large)."""
    if "result" not in response:
        return {"error": response.get("error")}
    result = dict(response["result"])
    body = base64.b64decode(result.pop("bodyBase64"))
    result["body"] = digest(body) if len(body) > digest_over else text(body)
    return {"result": result}


async def call(client: WireClient, p: Json, *, timeout: float = 20.0) -> Json:
    return view(await client.request("http/request", p, timeout=timeout))


def is_delta(message: Json, request_id: str) -> bool:
    return (
        message.get("method") == "http/request/bodyDelta"
        and message["params"]["requestId"] == request_id
    )


async def stream(client: WireClient, p: Json, *, timeout: float = 30.0) -> tuple[Json, list[Json]]:
    """Send a streaming request; return its response and its deltas up to the terminal one."""
    before = {id(m) for m in client.messages}
    response = await client.request("http/request", {**p, "streamResponse": True}, timeout=timeout)
    if "result" not in response:
        return view(response), []
    return view(response), await deltas_after(client, p["requestId"], before, timeout=timeout)


async def deltas_after(
    client: WireClient, request_id: str, before: set[int], *, timeout: float = 30.0
) -> list[Json]:
    """The deltas of `request_id` not in `before`, once the terminal one has arrived."""

    def fresh(m: Json) -> bool:
        return id(m) not in before and is_delta(m, request_id)

    await client.wait_for(lambda m: fresh(m) and m["params"]["done"], timeout=timeout)
    return [m["params"] for m in client.messages if fresh(m)]


def stream_view(deltas: list[Json], *, digest_over: int = 4096) -> Json:
    """What a client may rely on from a streamed body (see the module docstring)."""
    if not deltas:
        return {"deltas": "none"}
    data = b"".join(base64.b64decode(d["deltaBase64"]) for d in deltas)
    return {
        "data": digest(data) if len(data) > digest_over else text(data),
        "seqsFromOneWithoutGaps": [d["seq"] for d in deltas] == list(range(1, len(deltas) + 1)),
        "onlyLastDone": [d["done"] for d in deltas] == [False] * (len(deltas) - 1) + [True],
        "errorsBeforeLast": sorted({str(d["error"]) for d in deltas[:-1]}),
        "last": {k: v for k, v in deltas[-1].items() if k != "seq"},
        "memberNames": sorted(deltas[-1]),
    }


def received(server: HttpTestServer, start: int = 0) -> list[Json]:
    """What the HTTP server received (from request number `start` on)."""
    return [r.view() for r in server.requests[start:]]


# -- what goes on the wire ----------------------------------------------------------------------


@case
async def http_get_default_request_headers(ctx: CaseContext) -> Any:
    client = await ctx.client()
    async with http_test_server({"/echo": echo()}) as server:
        out = [
            await call(client, params(server.url("/echo"))),
            await call(client, params(server.url("/echo?q=1&r=%20"))),
            await call(client, params(server.url(""))),
        ]
        return server.mask([out, received(server)])


@case
async def http_methods_on_the_wire(ctx: CaseContext) -> Any:
    client = await ctx.client()
    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "get", "post", "FOO"]
    methods += ["X-Custom_Method.1~!", "CONNECT"]
    async with http_test_server({"/echo": echo()}) as server:
        out = [await call(client, params(server.url("/echo"), m)) for m in methods]
        return server.mask([out, received(server)])


@case
async def http_head_responses(ctx: CaseContext) -> Any:
    client = await ctx.client()
    async with http_test_server() as server:
        server.route("/doc", respond(200, [("content-type", "text/plain")], b"a body for GET"))
        server.route("/empty", respond(204, [("x-a", "1")], b""))
        out = [
            await call(client, params(server.url("/doc"), "HEAD")),
            await call(client, params(server.url("/doc"), "GET")),
            await call(client, params(server.url("/empty"), "HEAD")),
        ]
        response, deltas = await stream(client, params(server.url("/doc"), "HEAD"))
        out.append([response, stream_view(deltas)])
        return server.mask([out, received(server)])


@case
async def http_binary_request_and_response_bodies(ctx: CaseContext) -> Any:
    client = await ctx.client()
    every_byte = bytes(range(256))
    async with http_test_server({"/sink": respond(200, [], b"stored")}) as server:
        server.route(
            "/bin", respond(200, [("content-type", "application/octet-stream")], every_byte)
        )
        out = [
            await call(client, params(server.url("/sink"), "POST", bodyBase64=b64(every_byte))),
            await call(client, params(server.url("/sink"), "PUT", bodyBase64=b64(b"\x00\xff\n"))),
            await call(client, params(server.url("/bin"))),
        ]
        return server.mask([out, received(server)])


@case
async def http_request_bodies_and_content_length(ctx: CaseContext) -> Any:
    """Empty body vs none, bodies on GET/HEAD/DELETE: who gets a content-length."""
    client = await ctx.client()
    async with http_test_server({"/echo": echo()}) as server:
        url = server.url("/echo")
        out = [
            await call(client, params(url, "POST", bodyBase64="")),
            await call(client, params(url, "POST", bodyBase64=None)),
            await call(client, params(url, "POST")),
            await call(client, params(url, "GET", bodyBase64=b64("g"))),
            await call(client, params(url, "HEAD", bodyBase64=b64("hb"))),
            await call(client, params(url, "DELETE", bodyBase64=b64("d"))),
            await call(client, params(url, "PUT", bodyBase64=b64(""))),
        ]
        return server.mask([out, received(server)])


@case
async def http_request_header_order_repeats_and_case(ctx: CaseContext) -> Any:
    client = await ctx.client()
    async with http_test_server({"/echo": echo()}) as server:
        url = server.url("/echo")
        sent = [
            ("X-First", "1"),
            ("x-second", "2"),
            ("X-FIRST", "3"),
            ("Set-Cookie", "a"),
            ("x-second", "4"),
            ("x-first", "5"),
        ]
        out = [
            await call(client, params(url, headers=headers(*sent))),
            await call(client, params(url, "POST", bodyBase64=b64("b"), headers=headers(*sent))),
        ]
        return server.mask([out, received(server)])


@case
async def http_user_headers_replace_defaults(ctx: CaseContext) -> Any:
    client = await ctx.client()
    async with http_test_server({"/echo": echo()}) as server:
        url = server.url("/echo")
        out = [
            await call(
                client,
                params(
                    url,
                    headers=headers(
                        ("Host", "example.com"),
                        ("Accept", "text/html"),
                        ("User-Agent", "ua/1"),
                        ("Content-Length", "0"),
                        ("Connection", "close"),
                    ),
                ),
            ),
            await call(
                client,
                params(
                    url,
                    "POST",
                    bodyBase64=b64("xyz"),
                    headers=headers(("Content-Length", "3"), ("Content-Type", "a/b")),
                ),
            ),
            await call(
                client,
                params(
                    url,
                    "POST",
                    bodyBase64=b64("xyz"),
                    headers=headers(("Transfer-Encoding", "chunked")),
                ),
            ),
            await call(client, params(url, headers=headers(("Accept-Encoding", "gzip, br")))),
        ]
        return server.mask([out, received(server)])


@case
async def http_request_header_values_kept_verbatim(ctx: CaseContext) -> Any:
    """Tabs, empty values, surrounding whitespace and non-ASCII UTF-8 are sent as given."""
    client = await ctx.client()
    async with http_test_server({"/echo": echo()}) as server:
        url = server.url("/echo")
        values = ["a\tb", "", " padded ", "\tt\t", "caf\u00e9 \u00fc", "\u20ac", "a  b", '~!"#']
        out = [await call(client, params(url, headers=headers(("X-V", value)))) for value in values]
        return server.mask([out, received(server)])


@case
async def http_userinfo_becomes_basic_authorization(ctx: CaseContext) -> Any:
    client = await ctx.client()
    async with http_test_server({"/echo": echo()}) as server:
        authority = server.authority
        out = [
            await call(client, params(f"http://u:p@{authority}/echo")),
            await call(client, params(f"http://user:pa%20ss@{authority}/echo")),
            await call(client, params(f"http://u@{authority}/echo")),
            await call(client, params(f"http://:p@{authority}/echo")),
            await call(
                client,
                params(
                    f"http://u:p@{authority}/echo",
                    headers=headers(("X-A", "1"), ("Authorization", "mine")),
                ),
            ),
        ]
        return server.mask([out, received(server)])


@case
async def http_url_normalisation(ctx: CaseContext) -> Any:
    client = await ctx.client()
    async with http_test_server({"/echo": echo(), "/": echo()}) as server:
        port = server.port
        urls = [
            f"HTTP://127.0.0.1:{port}/echo",
            f"http://127.0.0.1:{port}",
            f"http://127.0.0.1:{port}/a/../echo?x=%zz&y=\u00e9 z#fragment",
            f"http://localhost:{port}/echo",
            f"http://127.0.0.1:{port}/./echo?",
            f"http:/127.0.0.1:{port}/echo",
            f"http:127.0.0.1:{port}/echo",
        ]
        out = [await call(client, params(url)) for url in urls]
        return server.mask([out, received(server)])


@case
async def http_value_env_var(ctx: CaseContext) -> Any:
    """`valueEnvVar` appends the executor's variable (both servers inherit the test's HOME)."""
    client = await ctx.client()
    async with http_test_server({"/echo": echo()}) as server:
        url = server.url("/echo")
        out = [
            await call(
                client,
                params(
                    url,
                    headers=[{"name": "Authorization", "value": "Bearer ", "valueEnvVar": "HOME"}],
                ),
            ),
            await call(
                client,
                params(url, headers=[{"name": "X-Home", "value": "", "valueEnvVar": "HOME"}]),
            ),
            await call(
                client, params(url, headers=[{"name": "X-Null", "value": "v", "valueEnvVar": None}])
            ),
            await call(
                client,
                params(url, headers=[["X-Seq", "seq:", "HOME"], ["X-Seq2", "plain"]]),
            ),
        ]
        return server.mask([out, received(server)])


@case
async def http_value_env_var_errors(ctx: CaseContext) -> Any:
    client = await ctx.client()
    async with http_test_server({"/echo": echo()}) as server:
        url = server.url("/echo")

        def env(name: str, value: str, var: str) -> Json:
            return params(url, headers=[{"name": name, "value": value, "valueEnvVar": var}])

        out = [
            await call(client, env("X-Env", "Bearer ", "EXECSERVER_TEST_NOPE_NOT_SET")),
            await call(client, env("X-Env", "v", "")),
            await call(client, env("X-Env", "v", "A=B")),
            await call(client, env("X-Env", "v", "home")),
            # order: the name is checked first, then the variable, then the value
            await call(client, env("X A", "v", "EXECSERVER_TEST_NOPE_NOT_SET")),
            await call(client, env("X-Env", "v\n", "EXECSERVER_TEST_NOPE_NOT_SET")),
            await call(client, env("X-Env", "v\n", "HOME")),
            await call(client, params(url, headers=[{"name": "X-Env", "valueEnvVar": "HOME"}])),
        ]
        return server.mask([out, len(server.requests)])


# -- responses ----------------------------------------------------------------------------------


@case
async def http_response_header_case_and_repeats(ctx: CaseContext) -> Any:
    client = await ctx.client()
    async with http_test_server() as server:
        server.route(
            "/multi",
            respond(
                200,
                [
                    ("X-Multi", "a"),
                    ("Content-Type", "text/plain"),
                    ("X-Multi", "b"),
                    ("X-Other", "c"),
                    ("x-multi", "c"),
                ],
                b"hello",
            ),
        )
        server.route(
            "/case",
            raw(
                b"HTTP/1.1 200 OK\r\nX-MiXeD-CaSe: v\r\nSET-COOKIE: a=1\r\nset-cookie: b=2\r\n"
                b"X-Empty:\r\nX-Spaces:   padded   \r\nX-Tab: a\tb\r\ncontent-length: 0\r\n\r\n"
            ),
        )
        out = [
            await call(client, params(server.url("/multi"))),
            await call(client, params(server.url("/case"))),
        ]
        return server.mask(out)


@case
async def http_response_non_ascii_header_values_dropped(ctx: CaseContext) -> Any:
    client = await ctx.client()
    async with http_test_server() as server:
        server.route(
            "/h",
            raw(
                b"HTTP/1.1 200 OK\r\nX-Good: ok\r\nX-Latin1: caf\xe9\r\n"
                b"X-Utf8: \xc3\xa9t\xc3\xa9\r\nX-Good: again\r\nX-High: \xff\r\n"
                b"content-length: 2\r\n\r\nhi"
            ),
        )
        # control bytes are not dropped: the response does not parse at all
        server.route("/del", raw(b"HTTP/1.1 200 OK\r\nX-Del: a\x7fb\r\ncontent-length: 0\r\n\r\n"))
        server.route("/ctl", raw(b"HTTP/1.1 200 OK\r\nX-Ctl: a\x01b\r\ncontent-length: 0\r\n\r\n"))
        server.route(
            "/loc", raw(b"HTTP/1.1 302 Found\r\nLocation: /\xff\xfe\r\ncontent-length: 0\r\n\r\n")
        )
        out = [
            await call(client, params(server.url("/h"))),
            await call(client, params(server.url("/loc"))),
            await call(client, params(server.url("/del"))),
            await call(client, params(server.url("/ctl"))),
        ]
        return server.mask([out, received(server)])


@case
async def http_status_passthrough(ctx: CaseContext) -> Any:
    client = await ctx.client()
    async with http_test_server() as server:
        server.route("/201", raw(b"HTTP/1.1 201\r\ncontent-length: 0\r\n\r\n"))
        server.route("/404", respond(404, [("content-type", "text/plain")], b"not here"))
        server.route("/418", respond(418, [], b"short and stout"))
        server.route("/500", respond(500, [], b"\x00\x01\xfe\xff"))
        server.route("/503", respond(503, [("retry-after", "1")], b""))
        server.route("/599", raw(b"HTTP/1.1 599 Whatever Reason\r\ncontent-length: 1\r\n\r\nx"))
        server.route("/100", raw(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\nok"))
        out = [
            await call(client, params(server.url(path)))
            for path in ("/201", "/404", "/418", "/500", "/503", "/599", "/100")
        ]
        return server.mask(out)


@case
async def http_gzip_is_not_decompressed(ctx: CaseContext) -> Any:
    client = await ctx.client()
    async with http_test_server() as server:
        server.route("/gz", gzipped(b"hello gzip " * 10, [("content-type", "text/plain")]))
        server.route("/br", respond(200, [("content-encoding", "br")], b"\x0b\x02\x80hello\x03"))
        out = [
            await call(client, params(server.url("/gz"))),
            await call(
                client, params(server.url("/gz"), headers=headers(("Accept-Encoding", "gzip")))
            ),
            await call(client, params(server.url("/br"))),
        ]
        response, deltas = await stream(client, params(server.url("/gz"), requestId="gz"))
        out.append([response, stream_view(deltas)])
        return server.mask([out, received(server)])


@case
async def http_chunked_and_close_delimited_responses(ctx: CaseContext) -> Any:
    client = await ctx.client()
    async with http_test_server() as server:
        server.route("/chunked", chunked([b"a" * 10, b"b" * 20, b"c"], [("X-C", "1")]))
        server.route("/http10", raw(b"HTTP/1.0 200 OK\r\nX-A: 1\r\n\r\nbody until close"))
        server.route("/noclen", respond(200, [("x-b", "2")], b"closed here", content_length=False))
        out = [
            await call(client, params(server.url("/chunked"))),
            await call(client, params(server.url("/http10"))),
            await call(client, params(server.url("/noclen"))),
        ]
        response, deltas = await stream(client, params(server.url("/chunked"), requestId="c"))
        out.append([response, stream_view(deltas)])
        return server.mask(out)


@case
async def http_large_buffered_body(ctx: CaseContext) -> Any:
    client = await ctx.client()
    data = deterministic_bytes(3 * MIB, seed=3)
    async with http_test_server({"/big": large(data)}) as server:
        return server.mask(await call(client, params(server.url("/big")), timeout=60))


# -- malformed responses and transport failures ---------------------------------------------------


@case
async def http_connection_refused(ctx: CaseContext) -> Any:
    client = await ctx.client()
    port = unused_port()
    async with http_test_server() as server:
        out = [
            await call(client, params(f"http://127.0.0.1:{port}/")),
            await call(client, params(f"http://127.0.0.1:{port}/a/b?c=d#e", "POST")),
            await call(client, params("http://127.0.0.1:0/")),
            await call(client, params(f"https://127.0.0.1:{port}/tls")),
            # surrounding spaces are trimmed, the path is percent-encoded, userinfo is shown
            await call(client, params(f"  http://u:p@127.0.0.1:{port}/x y?q=\u00e9#f  ")),
            await call(client, params(f"HTTP://LOCALHOST:{port}/a/./b/../c")),
        ]
        response, deltas = await stream(client, params(f"http://127.0.0.1:{port}/", requestId="s"))
        out.append([response, deltas])
        # the id of a failed stream is free again
        response, deltas = await stream(client, params(f"http://127.0.0.1:{port}/", requestId="s"))
        out.append([response, deltas])
        return server.mask(out, ports=[port])


@case
async def http_malformed_responses(ctx: CaseContext) -> Any:
    client = await ctx.client()
    async with http_test_server() as server:
        routes = {
            "/close": close_without_response(),
            "/garbage": raw(b"NOT HTTP AT ALL\r\n\r\n"),
            "/twolens": raw(
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nabc"
            ),
            "/obsfold": raw(b"HTTP/1.1 200 OK\r\nX-Fold: a\r\n  b\r\ncontent-length: 0\r\n\r\n"),
            "/badname": raw(b"HTTP/1.1 200 OK\r\nX Bad: a\r\ncontent-length: 0\r\n\r\n"),
            "/short": raw(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"),
            "/badchunk": raw(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
            ),
        }
        out = []
        for path, handler in routes.items():
            server.route(path, handler)
            out.append([path, await call(client, params(server.url(path)))])
        return server.mask(out)


@case
async def http_buffered_body_errors(ctx: CaseContext) -> Any:
    """The body stalls after 5 bytes, then the server closes, resets, or finishes."""
    client = await ctx.client()
    out = []
    async with http_test_server() as server:
        for then, is_chunked in (
            ("close", False),
            ("reset", False),
            ("close", True),
            ("finish", False),
        ):
            route = StalledBody(b"part1", b"rest", then=then, chunked=is_chunked)
            path = f"/{then}{'-chunked' if is_chunked else ''}"
            server.route(path, route)
            pending = asyncio.ensure_future(call(client, params(server.url(path))))
            await route.stalled.wait()
            route.release.set()
            out.append([path, await pending])
        return server.mask(out)


# -- parameters ---------------------------------------------------------------------------------


@case
async def http_bad_schemes(ctx: CaseContext) -> Any:
    client = await ctx.client()
    urls = [
        "ftp://example.com/x",
        "file:///etc/passwd",
        "mailto:x@y",
        "data:text/plain,hi",
        "ws://127.0.0.1:1/",
        "wss://127.0.0.1:1/",
        "javascript:alert(1)",
        "unix:/tmp/sock",
    ]
    return [await call(client, params(url)) for url in urls]


@case
async def http_unparsable_urls(ctx: CaseContext) -> Any:
    client = await ctx.client()
    urls = [
        "not a url",
        "",
        "/relative/path",
        "http://",
        "http://[::1",
        "http://127.0.0.1:99999/",
        "http://exa mple.com/",
        "http://127.0.0.1:80a/",
        "http://300.1.1.1/",
        "://x",
        "http://a b/",
    ]
    return [await call(client, params(url)) for url in urls]


@case
async def http_invalid_methods(ctx: CaseContext) -> Any:
    client = await ctx.client()
    async with http_test_server({"/echo": echo()}) as server:
        url = server.url("/echo")
        methods = ["", "GET X", "G\u00e9T", "G(ET", "GET\n", "GET:", "G/T", "\u0000"]
        out = [await call(client, params(url, m)) for m in methods]
        return server.mask([out, len(server.requests)])


@case
async def http_invalid_header_names_and_values(ctx: CaseContext) -> Any:
    client = await ctx.client()
    async with http_test_server({"/echo": echo()}) as server:
        url = server.url("/echo")
        names = ["X A", "", "x:y", "\u00e9", "X\tA", "(x)", "x\n"]
        values = ["a\nb", "a\rb", "a\u0000b", "a\u007fb", "a\u0001b"]
        out = [await call(client, params(url, headers=headers((n, "v")))) for n in names]
        out += [await call(client, params(url, headers=headers(("X-Ok", v)))) for v in values]
        # the first bad header wins, in list order
        out.append(
            await call(
                client, params(url, headers=headers(("X-Fine", "1"), ("X-Val", "\n"), ("X A", "1")))
            )
        )
        return server.mask([out, len(server.requests)])


@case
async def http_validation_order(ctx: CaseContext) -> Any:
    """Which error wins when several params are wrong (nothing reaches the server)."""
    client = await ctx.client()
    async with http_test_server({"/echo": echo()}) as server:
        url = server.url("/echo")
        bad_header = headers(("X A", "1"))
        combos: list[Json] = [
            {"method": "G T", "url": "ftp://x", "requestId": "r"},
            {"method": "G T", "url": "nope", "requestId": "r"},
            {"method": "GET", "url": "nope", "requestId": "r", "headers": bad_header},
            {"method": "GET", "url": "ftp://x", "requestId": "r", "headers": bad_header},
            {"method": "G T", "url": url, "requestId": "r", "headers": bad_header},
            {"method": "GET", "url": url, "requestId": "r", "headers": bad_header, "timeoutMs": 0},
            {"method": "GET", "url": "ftp://x", "requestId": "r", "timeoutMs": 0},
            {"method": "GET", "url": url, "requestId": "r", "timeoutMs": 0},
            {"method": 1, "url": "ftp://x"},
            {"url": "ftp://x", "requestId": "r"},
        ]
        out = [await call(client, combo) for combo in combos]
        return server.mask([out, len(server.requests)])


@case
async def http_request_id_required(ctx: CaseContext) -> Any:
    client = await ctx.client()
    async with http_test_server({"/echo": echo()}) as server:
        url = server.url("/echo")
        out = [
            await call(client, {"method": "GET", "url": url}),
            await call(client, {"method": "GET", "url": url, "streamResponse": True}),
            await call(client, {"method": "GET", "url": url, "requestId": None}),
            await call(client, {"method": "GET", "url": url, "requestId": ""}),
            await call(client, {"method": "GET", "url": "ftp://x"}),
        ]
        return server.mask([out, len(server.requests)])


@case
async def http_params_type_errors(ctx: CaseContext) -> Any:
    client = await ctx.client()
    async with http_test_server({"/echo": echo()}) as server:
        base = params(server.url("/echo"))
        variants: dict[str, list[Any]] = {
            "method": [1, None, [], {}, True],
            "url": [1, None, ["http://x"], {"a": 1}],
            "headers": [
                None,
                "x",
                {},
                [1],
                [{"name": 1, "value": "v"}],
                [{"value": "v"}],
                [{"name": "a"}],
                [{"name": "a", "value": None}],
                [{"name": "a", "value": 1}],
                [{"name": "a", "value": "v", "valueEnvVar": 1}],
                [{"name": "a", "value": "v", "extra": 1}],
                [["a", "b"]],
                [["a"]],
                [["a", "b", None, "d"]],
            ],
            "bodyBase64": [1, [], {}, True],
            "timeoutMs": [-1, 1.5, "1", True, [], 18446744073709551615, 18446744073709551616],
            "redirectPolicy": ["Follow", "none", None, 1, {"follow": None}, ["stop"], "manual"],
            "requestId": [1, True, [], {}],
            "streamResponse": [None, "true", 1, []],
        }
        out = []
        for member, values in variants.items():
            for value in values:
                response = await call(client, {**base, member: value})
                out.append([member, value, response])
        out.append(["unknown member", await call(client, {**base, "unknownMember": 1})])
        for request_id, raw_params in (("null", None), ("array", ["GET"]), ("string", "GET")):
            await client.send({"id": request_id, "method": "http/request", "params": raw_params})
            out.append([request_id, view(await client.response(request_id))])
        return server.mask([out, len(server.requests)])


@case
async def http_body_base64_errors(ctx: CaseContext) -> Any:
    client = await ctx.client()
    async with http_test_server({"/echo": echo()}) as server:
        url = server.url("/echo")
        bodies = [
            "!!!",
            "YQ",
            "YQ=",
            "YQ==",
            "Y Q==",
            "YQ==\n",
            "YR==",
            "YQ===",
            "-_8=",
            "_w",
            "YWJj\nZGVm",
            "====",
            "YWJjZA",
            "\u00e9",
        ]
        out = [[body, await call(client, params(url, "POST", bodyBase64=body))] for body in bodies]
        return server.mask([out, received(server)])


@case
async def http_gating_before_handshake(ctx: CaseContext) -> Any:
    client = await ctx.client(initialize=False)
    async with http_test_server({"/echo": echo()}) as server:
        url = server.url("/echo")
        out = [
            await call(client, {}),
            await call(client, {"method": "GET", "url": url}),
            await call(client, params(url)),
            await call(client, params("ftp://x")),
        ]
        out.append(await client.request("initialize", {"clientName": "c"}))
        out.append(await call(client, params("ftp://x")))
        out.append(await call(client, params(url)))
        await client.notify("initialized", {})
        out.append(await call(client, params("ftp://x")))
        return server.mask([out, len(server.requests)])


# -- redirects ----------------------------------------------------------------------------------

SENSITIVE = headers(
    ("Authorization", "secret"),
    ("Cookie", "c=1"),
    ("X-Custom", "x"),
    ("Content-Type", "text/plain"),
    ("Proxy-Authorization", "p"),
    ("WWW-Authenticate", "w"),
)


def redirect_routes(server: HttpTestServer) -> None:
    server.route("/echo", echo())
    for status in (301, 302, 303, 307, 308):
        server.route(f"/r{status}", redirect(status, "/echo"))


async def redirect_matrix(ctx: CaseContext, methods: list[str]) -> Any:
    client = await ctx.client()
    out = []
    async with http_test_server() as server:
        redirect_routes(server)
        for status in (301, 302, 303, 307, 308):
            for method in methods:
                start = len(server.requests)
                body = None if method == "GET" else b64("data")
                p = params(server.url(f"/r{status}"), method, bodyBase64=body, headers=SENSITIVE)
                out.append([status, method, await call(client, p), received(server, start)])
        return server.mask(out)


@case
async def http_redirect_follow_post(ctx: CaseContext) -> Any:
    return await redirect_matrix(ctx, ["POST"])


@case
async def http_redirect_follow_other_methods(ctx: CaseContext) -> Any:
    return await redirect_matrix(ctx, ["PUT", "GET", "HEAD"])


@case
async def http_redirect_payload_headers_dropped(ctx: CaseContext) -> Any:
    """303 drops content-type/-length/-encoding and transfer-encoding (order of the rest)."""
    client = await ctx.client()
    async with http_test_server() as server:
        redirect_routes(server)
        sent = headers(
            ("Content-Type", "x"),
            ("Content-Encoding", "gzip"),
            ("Content-Length", "1"),
            ("X-A", "1"),
            ("Content-Language", "en"),
            ("X-B", "2"),
        )
        out = [
            await call(
                client, params(server.url("/r303"), "DELETE", bodyBase64=b64("d"), headers=sent)
            ),
            await call(
                client, params(server.url("/r302"), "POST", bodyBase64=b64("d"), headers=sent)
            ),
        ]
        return server.mask([out, received(server)])


@case
async def http_redirect_stop(ctx: CaseContext) -> Any:
    client = await ctx.client()
    async with http_test_server() as server:
        redirect_routes(server)
        server.route("/body", redirect(302, "/echo", [("x-r", "1")], b"moved"))
        out = [
            await call(client, params(server.url(f"/r{status}"), redirectPolicy="stop"))
            for status in (301, 302, 303, 307, 308)
        ]
        out.append(await call(client, params(server.url("/body"), redirectPolicy="stop")))
        out.append(await call(client, params(server.url("/body"), redirectPolicy="follow")))
        out.append(await call(client, params(server.url("/body"), redirectPolicy={"stop": None})))
        response, deltas = await stream(
            client, params(server.url("/body"), requestId="s", redirectPolicy="stop")
        )
        out.append([response, stream_view(deltas)])
        response, deltas = await stream(client, params(server.url("/body"), requestId="s"))
        out.append([response, stream_view(deltas)])
        return server.mask([out, received(server)])


@case
async def http_redirect_cross_origin_strips_credentials(ctx: CaseContext) -> Any:
    client = await ctx.client()
    async with http_test_server() as first, http_test_server({"/echo": echo()}) as second:
        first.route("/r302", redirect(302, second.url("/echo")))
        first.route("/r307", redirect(307, second.url("/echo")))
        first.route("/host", redirect(307, second.url("/echo")))
        out = [
            await call(
                client, params(first.url("/r302"), "POST", bodyBase64=b64("d"), headers=SENSITIVE)
            ),
            await call(
                client, params(first.url("/r307"), "POST", bodyBase64=b64("d"), headers=SENSITIVE)
            ),
            await call(
                client,
                params(
                    first.url("/host"),
                    headers=headers(("Host", "example.com"), ("X-A", "1"), ("Cookie", "c")),
                ),
            ),
            await call(client, params(f"http://u:p@{first.authority}/r307")),
        ]
        observed = [out, received(first), received(second)]
        return first.mask(second.mask(observed), ports=[second.port])


@case
async def http_redirect_locations_and_referer(ctx: CaseContext) -> Any:
    client = await ctx.client()
    async with http_test_server() as server:
        server.route("/echo", echo())
        server.route("/sub/echo", echo())
        locations = [
            "echo",
            "./echo",
            "../echo",
            f"//127.0.0.1:{server.port}/echo",
            "/echo#f",
            f"HTTP://127.0.0.1:{server.port}/echo",
            "/ech%6F?x=%20",
            "/e cho",
            "http://[::1",
            "",
        ]
        out = []
        for index, location in enumerate(locations):
            path = f"/sub/r{index}"
            server.route(path, redirect(302, location))
            start = len(server.requests)
            response = await call(
                client, params(server.url(path + "?x=1#frag"), headers=headers(("Referer", "mine")))
            )
            out.append([location, response, received(server, start)[:3]])
        server.route("/nolocation", respond(302, [], b"x"))
        out.append(await call(client, params(server.url("/nolocation"))))
        return server.mask(out)


@case
async def http_redirect_limit(ctx: CaseContext) -> Any:
    client = await ctx.client()
    async with http_test_server({"/echo": echo()}) as server:
        for index in range(1, 13):
            target = f"/chain/{index - 1}" if index > 1 else "/echo"
            server.route(f"/chain/{index}", redirect(302, target))
        server.route("/loop", redirect(307, "/loop"))
        out = []
        for start_at in (10, 11, 12):
            before = len(server.requests)
            response = await call(client, params(server.url(f"/chain/{start_at}")))
            out.append([start_at, response, len(server.requests) - before])
        before = len(server.requests)
        response = await call(client, params(server.url("/loop"), "POST", bodyBase64=b64("l")))
        out.append(["loop", response, len(server.requests) - before])
        return server.mask(out)


@case
async def http_redirect_failures(ctx: CaseContext) -> Any:
    """Redirects to other schemes, to nowhere, to unparsable places (returned as they are)."""
    client = await ctx.client()
    port = unused_port()
    async with http_test_server({"/echo": echo()}) as server:
        locations = {
            "/ftp": "ftp://example.com/x",
            "/ftp-short": "ftp:x",
            "/mailto": "mailto:x@y",
            "/data": "data:,x",
            "/about": "about:blank",
            "/file": "file:///etc/passwd",
            "/refused": f"http://127.0.0.1:{port}/x",
            "/https-refused": f"https://127.0.0.1:{port}/x",
            "/toclose": "/close",
            "/empty-authority": "http://",
            "/no-host": "http:///x",
            "/slashes": "//",
        }
        for path, location in locations.items():
            server.route(path, redirect(302, location))
        server.route("/close", close_without_response())
        out = [[path, await call(client, params(server.url(path)))] for path in locations]
        return server.mask([out, received(server)], ports=[port])


# -- timeouts -----------------------------------------------------------------------------------


@case
async def http_timeout_zero(ctx: CaseContext) -> Any:
    client = await ctx.client()
    async with http_test_server({"/echo": echo()}) as server:
        out = [
            await call(client, params(server.url("/echo"), timeoutMs=0)),
            await call(client, params(server.url("/echo"), timeoutMs=None)),
            await call(client, params(server.url("/echo"), timeoutMs=60000)),
        ]
        response, deltas = await stream(
            client, params(server.url("/echo"), requestId="z", timeoutMs=0)
        )
        out.append([response, deltas])
        return server.mask([out, len(server.requests)])


@case
async def http_timeout_waiting_for_headers(ctx: CaseContext) -> Any:
    client = await ctx.client()
    async with http_test_server() as server:
        hold = HoldHeaders()
        server.route("/hold", hold)
        response = await call(client, params(server.url("/hold"), timeoutMs=300))
        async with asyncio.timeout(10):
            await hold.disconnected.wait()
        hold2 = HoldHeaders()
        server.route("/hold2", hold2)
        streamed, deltas = await stream(
            client, params(server.url("/hold2"), requestId="h", timeoutMs=300)
        )
        async with asyncio.timeout(10):
            await hold2.disconnected.wait()
        # The reference words an expiry either way, depending on where it catches it.
        observed = json.loads(
            json.dumps([response, streamed, deltas, len(server.requests)]).replace(
                "route-aware request timed out", "error sending request for url (<timeout>)"
            )
        )
        observed = json.loads(
            re.sub(
                r"error sending request for url \([^)]*\)",
                "error sending request for url (<timeout>)",
                json.dumps(observed),
            )
        )
        return server.mask(observed)


@case
async def http_timeout_covers_buffered_body(ctx: CaseContext) -> Any:
    client = await ctx.client()
    async with http_test_server() as server:
        stall = StalledBody(b"part1", b"rest", then="finish")
        server.route("/stall", stall)
        response = await call(client, params(server.url("/stall"), timeoutMs=300))
        async with asyncio.timeout(10):
            await stall.disconnected.wait()
        return server.mask(response)


@case
async def http_timeout_covers_streamed_body(ctx: CaseContext) -> Any:
    client = await ctx.client()
    async with http_test_server() as server:
        stall = StalledBody(b"part1", b"rest", then="finish")
        server.route("/stall", stall)
        response, deltas = await stream(
            client, params(server.url("/stall"), requestId="t", timeoutMs=500)
        )
        async with asyncio.timeout(10):
            await stall.disconnected.wait()
        return server.mask([response, stream_view(deltas)])


@case
async def http_requests_wait_in_line(ctx: CaseContext) -> Any:
    """A request waiting for response headers holds back the connection's later requests."""
    client = await ctx.client()
    other = await ctx.client()
    async with http_test_server() as server:
        hold = HoldHeaders(then=respond(200, [], b"late"))
        server.route("/hold", hold)
        await client.send(
            {"id": "http", "method": "http/request", "params": params(server.url("/hold"))}
        )
        await client.send({"id": "status", "method": "environment/status"})
        await hold.arrived.wait()
        # a full round trip through the server on another connection
        await other.request("environment/status")
        answered_while_held = any(m.get("id") == "status" for m in client.messages)
        hold.release.set()
        await client.response("status")
        await client.response("http")
        order = [m["id"] for m in client.messages if m.get("id") in ("http", "status")]
        return [answered_while_held, order]


# -- streaming ----------------------------------------------------------------------------------


@case
async def http_stream_large_body(ctx: CaseContext) -> Any:
    client = await ctx.client()
    data = deterministic_bytes(20 * MIB, seed=20)
    async with http_test_server({"/big": large(data, write_size=64 * 1024)}) as server:
        response, deltas = await stream(
            client, params(server.url("/big"), requestId="big"), timeout=120
        )
        return server.mask([response, stream_view(deltas), digest(data)])


@case
async def http_stream_small_and_empty_bodies(ctx: CaseContext) -> Any:
    client = await ctx.client()
    async with http_test_server() as server:
        server.route("/204", respond(204, [], b""))
        server.route("/empty", respond(200, [], b""))
        server.route("/small", respond(200, [("content-type", "text/plain")], b"hello"))
        server.route("/404", respond(404, [], b"missing"))
        out = []
        for path in ("/204", "/empty", "/small", "/404"):
            response, deltas = await stream(client, params(server.url(path), requestId=path))
            out.append([response, stream_view(deltas)])
        return server.mask(out)


@case
async def http_stream_stall_then_close(ctx: CaseContext) -> Any:
    client = await ctx.client()
    out = []
    async with http_test_server() as server:
        for then, is_chunked in (("close", False), ("reset", False), ("close", True)):
            stall = StalledBody(b"part1", b"rest", then=then, chunked=is_chunked)
            path = f"/{then}{'-chunked' if is_chunked else ''}"
            server.route(path, stall)
            before = {id(m) for m in client.messages}
            response = await call(
                client, {**params(server.url(path), requestId=path), "streamResponse": True}
            )
            await stall.stalled.wait()
            await client.wait_for(
                lambda m, before=before, path=path: id(m) not in before and is_delta(m, path)
            )
            stall.release.set()
            deltas = await deltas_after(client, path, before)
            out.append([path, response, stream_view(deltas)])
        return server.mask(out)


@case
async def http_stream_duplicate_active_request_id(ctx: CaseContext) -> Any:
    client = await ctx.client()
    async with http_test_server({"/echo": echo()}) as server:
        stall = StalledBody(b"part1", b"rest", then="finish")
        server.route("/stall", stall)
        url = server.url("/echo")
        before = {id(m) for m in client.messages}
        first = await call(
            client, {**params(server.url("/stall"), requestId="dup"), "streamResponse": True}
        )
        await stall.stalled.wait()
        attempts: list[Json] = [
            {**params(url, requestId="dup"), "streamResponse": True},
            {**params("ftp://x", requestId="dup"), "streamResponse": True},
            {**params(url, "G T", requestId="dup"), "streamResponse": True},
            {**params(url, requestId="dup", headers=headers(("X A", "1"))), "streamResponse": True},
            {**params(url, requestId="dup", timeoutMs=0), "streamResponse": True},
            {**params(url, requestId="dup")},
            {**params(url, requestId="dup"), "streamResponse": False},
            {**params(url, requestId="other"), "streamResponse": True},
        ]
        out = [await call(client, attempt) for attempt in attempts]
        stall.release.set()
        first_stream = stream_view(await deltas_after(client, "dup", before))
        # finished: the id can be used again
        again, deltas = await stream(client, params(url, requestId="dup"))
        await deltas_after(client, "other", before)
        return server.mask(
            [first, out, first_stream, again, stream_view(deltas), len(server.requests)]
        )


@case
async def http_stream_ids_are_per_connection(ctx: CaseContext) -> Any:
    first = await ctx.client()
    second = await ctx.client()
    async with http_test_server({"/echo": echo()}) as server:
        stall = StalledBody(b"part1", b"rest", then="finish")
        server.route("/stall", stall)
        before = {id(m) for m in first.messages}
        out = [
            await call(
                first, {**params(server.url("/stall"), requestId="same"), "streamResponse": True}
            )
        ]
        await stall.stalled.wait()
        response, deltas = await stream(second, params(server.url("/echo"), requestId="same"))
        out += [response, stream_view(deltas)]
        stall.release.set()
        out.append(stream_view(await deltas_after(first, "same", before)))
        return server.mask(out)


@case
async def http_stream_concurrent_on_one_connection(ctx: CaseContext) -> Any:
    client = await ctx.client()
    data = deterministic_bytes(256 * 1024, seed=50)
    async with http_test_server({"/mid": large(data, write_size=8192)}) as server:
        ids = [f"s{index}" for index in range(50)]
        before = {id(m) for m in client.messages}
        for request_id in ids:
            await client.send(
                {
                    "id": request_id,
                    "method": "http/request",
                    "params": {
                        **params(server.url("/mid"), requestId=request_id),
                        "streamResponse": True,
                    },
                }
            )
        responses = [view(await client.response(request_id, timeout=60)) for request_id in ids]
        views = [
            stream_view(await deltas_after(client, request_id, before, timeout=60))
            for request_id in ids
        ]
        unique_responses = {repr(r) for r in responses}
        unique_views = {repr(v) for v in views}
        return server.mask(
            [
                len(unique_responses),
                responses[0],
                len(unique_views),
                views[0],
                digest(data),
                len(server.requests),
            ]
        )


@case
async def http_stream_aborted_on_disconnect(ctx: CaseContext) -> Any:
    """Closing the websocket drops the connection's streams and in-flight requests upstream."""
    async with http_test_server() as server:
        stall = StalledBody(b"part1", b"rest", then="finish")
        hold = HoldHeaders()
        server.route("/stall", stall)
        server.route("/hold", hold)
        streaming = await ctx.client()
        response = await call(
            streaming, {**params(server.url("/stall"), requestId="x"), "streamResponse": True}
        )
        await stall.stalled.wait()
        await streaming.close()
        async with asyncio.timeout(10):
            await stall.disconnected.wait()
        buffered = await ctx.client()
        await buffered.send(
            {"id": 1, "method": "http/request", "params": params(server.url("/hold"))}
        )
        await hold.arrived.wait()
        await buffered.close()
        async with asyncio.timeout(10):
            await hold.disconnected.wait()
        return server.mask([response, stall.disconnected.is_set(), hold.disconnected.is_set()])
