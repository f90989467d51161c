"""`http/request`: validate, send from this host, answer buffered or stream the body as
`http/request/bodyDelta` notifications. Streams belong to the connection and end with it; at
most `max_streams` are open on one connection at a time."""

from __future__ import annotations

import asyncio

from execserver.errors import InternalError, InvalidParams, InvalidRequest
from execserver.local.http_client import HttpResponse, LocalHttpClient
from execserver.protocol import methods
from execserver.protocol.http import (
    HttpRequestBodyDeltaNotification,
    HttpRequestParams,
    HttpRequestResponse,
    HttpResponseHeader,
)
from execserver.server.connection import Connection

MAX_HTTP_STREAMS = 64
"""Streamed `http/request` bodies open at once on one connection."""


class HttpHandler:
    def __init__(
        self, connection: Connection, client: LocalHttpClient, max_streams: int = MAX_HTTP_STREAMS
    ) -> None:
        self._connection = connection
        self._client = client
        self._max_streams = max_streams

    async def request(self, params: HttpRequestParams) -> HttpRequestResponse:
        streams = self._connection.http_streams
        if params.stream_response and params.request_id in streams:
            raise InvalidParams(
                f"http/request streamResponse requestId `{params.request_id}` is already active"
            )
        if params.stream_response and len(streams) >= self._max_streams:
            raise InvalidRequest(
                f"too many streamed http/request bodies open on this connection (limit "
                f"{self._max_streams}); read one to its end or wait"
            )
        if params.stream_response:
            # Reserve the id before the first await, so a concurrent duplicate is refused.
            streams[params.request_id] = None
        try:
            response = await self._client.fetch(
                params.method,
                params.url,
                params.headers,
                None if params.body_base64 is None else bytes(params.body_base64),
                timeout_ms=params.timeout_ms,
                follow_redirects=params.redirect_policy == "follow",
            )
        except BaseException:
            if params.stream_response:
                streams.pop(params.request_id, None)
            raise
        headers = [HttpResponseHeader(name=n, value=v) for n, v in response.headers]
        if params.stream_response:
            streams[params.request_id] = asyncio.ensure_future(
                self._pump(params.request_id, response)
            )
            return HttpRequestResponse(status=response.status, headers=headers, body_base64=b"")
        data = await response.read_all()
        return HttpRequestResponse(status=response.status, headers=headers, body_base64=data)

    async def _pump(self, request_id: str, response: HttpResponse) -> None:
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
                async for chunk in response.chunks():
                    send(chunk, False, None)
                    await connection.writable()
            except InternalError as exc:
                send(b"", True, exc.message)
            else:
                send(b"", True, None)
        finally:
            await response.aclose()
            if connection.http_streams.get(request_id) is asyncio.current_task():
                del connection.http_streams[request_id]
