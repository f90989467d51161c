"""The HTTP capability (requests sent from the executor), on every environment."""

from __future__ import annotations

import pytest

from execserver.environment import Environment
from execserver.errors import InternalError, InvalidParams
from tests.harness.httpserver import chunked, echo, http_test_server, large, redirect, respond


async def test_http_request_returns_status_headers_and_body(environment: Environment) -> None:
    """request() returns the status, the headers in order (repeats kept) and the body."""
    async with http_test_server(
        {"/ok": respond(201, [("X-Multi", "a"), ("X-Multi", "b")], b"created")}
    ) as server:
        response = await environment.http.request("GET", server.url("/ok"))
    assert response.status == 201
    assert [v for k, v in response.headers if k == "x-multi"] == ["a", "b"]
    assert response.body == b"created"


async def test_http_request_sends_method_headers_and_body(environment: Environment) -> None:
    """The request goes out with the given method, headers and body."""
    async with http_test_server({"/echo": echo()}) as server:
        response = await environment.http.request(
            "PUT", server.url("/echo"), headers=[("X-Test", "yes")], body=b"payload"
        )
        sent = server.requests[0]
    assert (sent.method, sent.body) == ("PUT", b"payload")
    assert sent.header("x-test") == ["yes"]
    assert response.body.endswith(b"payload")


async def test_http_redirects_follow_or_stop(environment: Environment) -> None:
    """Redirects are followed by default and returned as-is with follow_redirects=False."""
    async with http_test_server(
        {"/from": redirect(302, "/to"), "/to": respond(200, body=b"landed")}
    ) as server:
        followed = await environment.http.request("GET", server.url("/from"))
        stopped = await environment.http.request("GET", server.url("/from"), follow_redirects=False)
    assert (followed.status, followed.body) == (200, b"landed")
    assert stopped.status == 302


async def test_http_stream_yields_the_body_in_order(environment: Environment) -> None:
    """stream() yields the status at once and the body in chunks, in order."""
    data = bytes(range(256)) * 8192  # 2 MiB
    async with http_test_server({"/big": large(data), "/chunks": chunked([b"a", b"b", b"c"])}) as (
        server
    ):
        async with environment.http.stream("GET", server.url("/big")) as response:
            assert response.status == 200
            body = b"".join([chunk async for chunk in response.aiter_bytes()])
        async with environment.http.stream("GET", server.url("/chunks")) as response:
            small = b"".join([chunk async for chunk in response.aiter_bytes()])
    assert body == data
    assert small == b"abc"


async def test_http_invalid_url_is_invalid_params(environment: Environment) -> None:
    """A URL the executor cannot use is refused with InvalidParams."""
    with pytest.raises(InvalidParams, match="only supports http and https"):
        await environment.http.request("GET", "ftp://example.com/")


async def test_http_connection_failure_is_internal_error(environment: Environment) -> None:
    """A request that cannot be sent fails with the executor's `http/request failed` error."""
    async with http_test_server() as server:
        url = server.url("/")
    with pytest.raises(InternalError, match="http/request failed"):
        await environment.http.request("GET", url)
