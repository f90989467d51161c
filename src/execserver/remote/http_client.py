"""The HTTP capability of a remote executor: `http/request`, buffered or with the body streamed
back as `http/request/bodyDelta` notifications (ordered by seq; they end with the connection)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator

import msgspec

from execserver.client.client import ExecServerClient
from execserver.environment.http_client import Headers, HttpResponse, wire_headers
from execserver.errors import Disconnected, ExecServerError, InternalError
from execserver.protocol import methods
from execserver.protocol.base import Base64Bytes, WideU64, dec_hook
from execserver.protocol.http import (
    HttpRequestBodyDeltaNotification,
    HttpRequestParams,
    HttpRequestResponse,
    RedirectPolicy,
)


def _params(
    method: str,
    url: str,
    *,
    headers: Headers,
    body: bytes | None,
    timeout: float | None,
    follow_redirects: bool,
    stream: bool,
) -> HttpRequestParams:
    return HttpRequestParams(
        method=method,
        url=url,
        headers=wire_headers(headers),
        body_base64=None if body is None else Base64Bytes(body),
        timeout_ms=None if timeout is None else WideU64(max(1, round(timeout * 1000))),
        redirect_policy=RedirectPolicy("follow" if follow_redirects else "stop"),
        request_id=f"py-{secrets.token_hex(8)}",
        stream_response=stream,
    )


class RemoteHttpStream:
    """A streamed response: deltas are reordered by seq and end with the `done` delta."""

    def __init__(self, status: int, headers: list[tuple[str, str]]) -> None:
        self._status = status
        self._headers = headers
        self._next_seq = 1
        self._early: dict[int, HttpRequestBodyDeltaNotification] = {}
        self._queue: asyncio.Queue[HttpRequestBodyDeltaNotification | ExecServerError] = (
            asyncio.Queue()
        )

    @property
    def status(self) -> int:
        return self._status

    @property
    def headers(self) -> list[tuple[str, str]]:
        return self._headers

    def push(self, delta: HttpRequestBodyDeltaNotification) -> None:
        self._early[delta.seq] = delta
        while self._next_seq in self._early:
            self._queue.put_nowait(self._early.pop(self._next_seq))
            self._next_seq += 1

    def fail(self, error: ExecServerError) -> None:
        self._queue.put_nowait(error)

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._queue.get()
            if isinstance(item, ExecServerError):
                raise item
            if item.delta_base64:
                yield item.delta_base64
            if item.done:
                if item.error is not None:
                    raise InternalError(item.error)
                return


class RemoteHttpClient:
    def __init__(self, client: ExecServerClient) -> None:
        self._client = client
        self._streams: dict[str, RemoteHttpStream] = {}
        self._pending: dict[str, list[HttpRequestBodyDeltaNotification]] = {}
        client.add_listener(self)

    # -- ClientListener ------------------------------------------------------------------------

    def on_notification(self, method: str, params: msgspec.Raw) -> None:
        if method != methods.HTTP_REQUEST_BODY_DELTA:
            return
        try:
            delta = msgspec.json.decode(
                params, type=HttpRequestBodyDeltaNotification, dec_hook=dec_hook
            )
        except msgspec.ValidationError:
            return
        stream = self._streams.get(delta.request_id)
        if stream is not None:
            stream.push(delta)
        elif delta.request_id in self._pending:  # body before the answer's headers
            self._pending[delta.request_id].append(delta)

    def on_disconnected(self) -> None:
        # Body streams belong to the connection: what was not delivered is gone.
        for stream in self._streams.values():
            stream.fail(Disconnected("the connection broke while the response body streamed"))

    def on_resumed(self) -> None:
        pass

    def on_failed(self, error: ExecServerError) -> None:
        for stream in self._streams.values():
            stream.fail(error)

    # -- requests ------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Headers = (),
        body: bytes | None = None,
        timeout: float | None = None,
        follow_redirects: bool = True,
    ) -> HttpResponse:
        params = _params(
            method,
            url,
            headers=headers,
            body=body,
            timeout=timeout,
            follow_redirects=follow_redirects,
            stream=False,
        )
        response = await self._client.call(methods.HTTP_REQUEST, params, HttpRequestResponse)
        return HttpResponse(
            response.status, [(h.name, h.value) for h in response.headers], response.body_base64
        )

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        headers: Headers = (),
        body: bytes | None = None,
        timeout: float | None = None,
        follow_redirects: bool = True,
    ) -> AsyncIterator[RemoteHttpStream]:
        params = _params(
            method,
            url,
            headers=headers,
            body=body,
            timeout=timeout,
            follow_redirects=follow_redirects,
            stream=True,
        )
        request_id = params.request_id
        self._pending[request_id] = []
        try:
            response = await self._client.call(methods.HTTP_REQUEST, params, HttpRequestResponse)
        except BaseException:
            self._pending.pop(request_id, None)
            raise
        stream = RemoteHttpStream(response.status, [(h.name, h.value) for h in response.headers])
        for delta in self._pending.pop(request_id, []):
            stream.push(delta)
        self._streams[request_id] = stream
        try:
            yield stream
        finally:
            del self._streams[request_id]

    async def aclose(self) -> None:
        self._client.remove_listener(self)
