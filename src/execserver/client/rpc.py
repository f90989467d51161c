"""One JSON-RPC client connection: ids, pending calls, notifications, fail-all on disconnect.

A reader task (owned by the connection) receives messages; responses resolve pending futures,
notifications go to one handler. When the transport ends, every pending call fails with
`Disconnected` and `closed` resolves. Registering a call and checking for disconnection happen
with no await in between, so no call can be left waiting forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from execserver.client.transport import ClientTransport
from execserver.errors import Disconnected, ProtocolViolation, from_jsonrpc_error
from execserver.observability.telemetry import current_trace_headers
from execserver.protocol import jsonrpc
from execserver.protocol.base import dec_hook

log = logging.getLogger(__name__)

T = TypeVar("T")
# Called with the method and the raw params (`msgspec.Raw`, `null` when absent) of each
# notification, on the reader task: it must not block.
NotificationHandler = Callable[[str, msgspec.Raw], None]


_ABSENT = msgspec.Raw(b"")
_NULL = msgspec.Raw(b"null")


class _Incoming(msgspec.Struct):
    id: int | str | None = None
    method: str | None = None
    params: msgspec.Raw = _ABSENT  # (msgspec.Raw cannot be part of a union)
    result: msgspec.Raw = _ABSENT
    error: dict[str, Any] | None = None


_decoder = msgspec.json.Decoder(_Incoming)


class RpcConnection:
    def __init__(self, transport: ClientTransport, on_notification: NotificationHandler) -> None:
        self._transport = transport
        self._on_notification = on_notification
        self._pending: dict[int, asyncio.Future[msgspec.Raw]] = {}
        self._ids = itertools.count(1)
        self._disconnected: Disconnected | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.ensure_future(self._read())

    @property
    def is_connected(self) -> bool:
        return self._disconnected is None

    async def call(self, method: str, params: Any, result_type: type[T]) -> T:
        """Send a request and decode its result as `result_type`.

        Raises `RpcError` (the server's error), `Disconnected` (connection lost before the
        answer; the request may or may not have been applied).
        Cancellation: the answer, if it comes, is dropped.
        """
        if self._disconnected is not None:
            raise self._disconnected
        request_id = next(self._ids)
        future: asyncio.Future[msgspec.Raw] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            try:
                # The caller's span (if tracing is on) becomes the parent of the server's span.
                trace = current_trace_headers()
                await self._transport.send(
                    jsonrpc.encode_request(request_id, method, params, trace)
                )
            except Disconnected as exc:
                # The reader may not have noticed yet; a caller retrying on Disconnected must
                # see a broken connection from now on.
                del self._pending[request_id]
                self._fail_all(exc)
                raise
            raw = await future
        finally:
            self._pending.pop(request_id, None)
        try:
            return msgspec.json.decode(raw, type=result_type, dec_hook=dec_hook)
        except msgspec.ValidationError as exc:
            raise ProtocolViolation(f"unexpected {method} result: {exc}") from None

    async def notify(self, method: str, params: Any = None) -> None:
        await self._transport.send(
            jsonrpc.encode_notification(method, {} if params is None else params)
        )

    async def _read(self) -> None:
        reason = Disconnected("connection closed")
        try:
            while True:
                data = await self._transport.receive()
                self._dispatch(data)
        except Disconnected as exc:
            reason = exc
        except asyncio.CancelledError:
            reason = Disconnected("connection closed by the client")
            raise
        except Exception as exc:  # a reader bug must not leave callers hanging
            log.exception("exec-server client reader failed")
            reason = Disconnected(f"reader failed: {exc}")
        finally:
            self._fail_all(reason)

    def _dispatch(self, data: bytes) -> None:
        try:
            message = _decoder.decode(data)
        except msgspec.DecodeError:
            log.warning("ignoring an undecodable message from the server")
            return
        if message.method is not None and message.id is None:
            params = message.params if len(message.params) else _NULL
            try:
                self._on_notification(message.method, params)
            except Exception:
                log.exception("notification handler failed for %s", message.method)
            return
        if not isinstance(message.id, int):
            return
        future = self._pending.get(message.id)
        if future is None or future.done():
            return
        if message.error is not None:
            error = message.error
            future.set_exception(
                from_jsonrpc_error(
                    int(error.get("code", -32603)), str(error.get("message", "")), error.get("data")
                )
            )
        else:
            future.set_result(
                message.result if message.result is not None else msgspec.Raw(b"null")
            )

    def _fail_all(self, reason: Disconnected) -> None:
        self._disconnected = reason
        for future in self._pending.values():
            if not future.done():
                future.set_exception(reason)
        self._pending.clear()
        if not self.closed.done():
            self.closed.set_result(None)

    async def aclose(self) -> None:
        """Close the transport and stop the reader. Cancellation: cleanup completes first."""
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        await asyncio.shield(self._transport.aclose())
