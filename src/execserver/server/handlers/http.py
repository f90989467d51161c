"""`http/request`: validate, send from this host, answer buffered or stream the body as
`http/request/bodyDelta` notifications. Streams belong to the connection and end with it."""

from __future__ import annotations

import asyncio
import contextlib

import httpx

from execserver.errors import InternalError, InvalidParams
from execserver.local.http_client import (
    BODY_ERROR,
    HttpResponse,
    LocalHttpClient,
    PreparedRequest,
    prepare,
    read_all,
)
from execserver.protocol import methods
from execserver.protocol.http import (
    HttpRequestBodyDeltaNotification,
    HttpRequestParams,
    HttpRequestResponse,
    HttpResponseHeader,
)
from execserver.server.connection import Connection

# Timeouts past this (about 31 years) are treated as no timeout.
MAX_TIMEOUT_MS = 10**12


class HttpHandler:
    def __init__(self, connection: Connection, client: LocalHttpClient) -> None:
        self._connection = connection
        self._client = client

    async def request(self, params: HttpRequestParams) -> HttpRequestResponse:
        streams = self._connection.http_streams
        if params.stream_response and params.request_id in streams:
            raise InvalidParams(
                f"http/request streamResponse requestId `{params.request_id}` is already active"
            )
        body = None if params.body_base64 is None else bytes(params.body_base64)
        prepared = prepare(params.method, params.url, params.headers, body, self._client.env)
        if params.timeout_ms == 0:
            raise InternalError("http/request failed: route-aware request timed out")
        loop = asyncio.get_running_loop()
        deadline = None
        if params.timeout_ms is not None and params.timeout_ms < MAX_TIMEOUT_MS:
            deadline = loop.time() + params.timeout_ms / 1000
        follow = params.redirect_policy == "follow"
        if params.stream_response:
            # Reserve the id before the first await, so a concurrent duplicate is refused.
            streams[params.request_id] = None
        try:
            response = await self._send(prepared, follow, deadline)
        except BaseException:
            if params.stream_response:
                streams.pop(params.request_id, None)
            raise
        headers = [HttpResponseHeader(name=n, value=v) for n, v in response.headers]
        if params.stream_response:
            streams[params.request_id] = asyncio.ensure_future(
                self._pump(params.request_id, response, deadline)
            )
            return HttpRequestResponse(status=response.status, headers=headers, body_base64=b"")
        try:
            async with asyncio.timeout_at(deadline):
                data = await read_all(response)
        except (httpx.HTTPError, TimeoutError):
            raise InternalError(
                f"failed to read http/request response body: {BODY_ERROR}"
            ) from None
        return HttpRequestResponse(status=response.status, headers=headers, body_base64=data)

    async def _send(
        self, prepared: PreparedRequest, follow: bool, deadline: float | None
    ) -> HttpResponse:
        try:
            async with asyncio.timeout_at(deadline):
                return await self._client.send(prepared, follow_redirects=follow)
        except TimeoutError:
            raise InternalError(
                "http/request failed: error sending request for url "
                f"({prepared.url.serialize(userinfo=False)})"
            ) from None

    async def _pump(self, request_id: str, response: HttpResponse, deadline: float | None) -> None:
        """Forward the body in order; always ends with a `done` delta unless the connection is
        gone. Waits while the connection is congested, so a slow reader bounds memory."""
        connection = self._connection
        seq = 0

        def send(data: bytes, done: bool, error: str | None) -> None:
            nonlocal seq
            seq += 1
            connection.notify(
                methods.HTTP_REQUEST_BODY_DELTA,
                HttpRequestBodyDeltaNotification(
                    request_id=request_id, seq=seq, delta_base64=data, done=done, error=error
                ),
            )

        try:
            try:
                async with asyncio.timeout_at(deadline):
                    async for chunk in response.chunks():
                        send(chunk, False, None)
                        await connection.writable()
            except (httpx.HTTPError, TimeoutError):
                send(b"", True, BODY_ERROR)
            else:
                send(b"", True, None)
        finally:
            with contextlib.suppress(Exception):
                await response.aclose()
            if connection.http_streams.get(request_id) is asyncio.current_task():
                del connection.http_streams[request_id]
