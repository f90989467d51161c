"""`http/request`: params -> the `HttpClient` capability -> a buffered answer, or the body
streamed as `http/request/bodyDelta` notifications. Streams belong to the connection (its task
owner) and end with it; at most `max_streams` are open on one connection at a time."""

from __future__ import annotations

import contextlib

from execserver.environment.http_client import HttpClient, HttpStream
from execserver.errors import InternalError, InvalidParams, InvalidRequest
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


def _headers(stream: HttpStream | list[tuple[str, str]]) -> list[HttpResponseHeader]:
    pairs = stream if isinstance(stream, list) else stream.headers
    return [HttpResponseHeader(name=name, value=value) for name, value in pairs]


class HttpHandler:
    def __init__(
        self, connection: Connection, client: HttpClient, max_streams: int = MAX_HTTP_STREAMS
    ) -> None:
        self._connection = connection
        self._client = client
        self._max_streams = max_streams

    async def request(self, params: HttpRequestParams) -> HttpRequestResponse:
        headers = params.headers
        body = None if params.body_base64 is None else bytes(params.body_base64)
        timeout = None if params.timeout_ms is None else params.timeout_ms / 1000
        follow = params.redirect_policy == "follow"
        if not params.stream_response:
            response = await self._client.request(
                params.method,
                params.url,
                headers=headers,
                body=body,
                timeout=timeout,
                follow_redirects=follow,
            )
            return HttpRequestResponse(
                status=response.status,
                headers=_headers(response.headers),
                body_base64=response.body,
            )
        streams = self._connection.http_streams
        if params.request_id in streams:
            raise InvalidParams(
                f"http/request streamResponse requestId `{params.request_id}` is already active"
            )
        if len(streams) >= self._max_streams:
            raise InvalidRequest(
                f"too many streamed http/request bodies open on this connection (limit "
                f"{self._max_streams}); read one to its end or wait"
            )
        # Reserved before the first await, so a concurrent duplicate is refused.
        streams.add(params.request_id)
        exits = contextlib.AsyncExitStack()
        try:
            stream = await exits.enter_async_context(
                self._client.stream(
                    params.method,
                    params.url,
                    headers=headers,
                    body=body,
                    timeout=timeout,
                    follow_redirects=follow,
                )
            )
            self._connection.tasks.spawn(self._pump(params.request_id, stream, exits))
        except BaseException:
            streams.discard(params.request_id)
            await exits.aclose()
            raise
        return HttpRequestResponse(status=stream.status, headers=_headers(stream), body_base64=b"")

    async def _pump(
        self, request_id: str, stream: HttpStream, exits: contextlib.AsyncExitStack
    ) -> None:
        """Forward the body in order; always ends with a `done` delta unless the connection is
        gone. Waits while the connection is congested, so a slow reader bounds memory."""
        connection = self._connection
        seq = 0

        def send(data: bytes, done: bool, error: str | None) -> None:
            nonlocal seq
            seq += 1
            if done:  # the id is free once the client can see the end (it may reuse it at once)
                connection.http_streams.discard(request_id)
            connection.notify(
                methods.HTTP_REQUEST_BODY_DELTA,
                HttpRequestBodyDeltaNotification(
                    request_id=request_id, seq=seq, delta_base64=data, done=done, error=error
                ),
            )

        try:
            try:
                async for chunk in stream.aiter_bytes():
                    send(chunk, False, None)
                    await connection.writable()
            except InternalError as exc:
                send(b"", True, exc.message)
            else:
                send(b"", True, None)
        finally:
            connection.http_streams.discard(request_id)
            await exits.aclose()
