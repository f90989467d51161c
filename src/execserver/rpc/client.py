"""The client side of one JSON-RPC connection: `RpcPeer` driven from a channel, with futures.

`RpcClient` is the channel's receiver. `call()` registers the request with the core and waits
for its answer; notifications go to one handler; when the channel ends, every pending call fails
with `Disconnected` and `closed` resolves. Registering a call and checking for the end happen
with no await in between, so no call can be left waiting forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from execserver.errors import (
    Disconnected,
    MessageTooLarge,
    ProtocolViolation,
    from_jsonrpc_error,
)
from execserver.observability.telemetry import current_trace_headers
from execserver.protocol.base import dec_hook
from execserver.protocol.jsonrpc import Response
from execserver.rpc.peer import (
    NotificationReceived,
    ParseFailed,
    ResponseReceived,
    Role,
    RpcPeer,
    Violation,
)
from execserver.transport.base import MessageChannel, writable

log = logging.getLogger(__name__)

T = TypeVar("T")
# Called with the method and the raw params (`msgspec.Raw`, `null` when absent) of each
# notification, in arrival order, from the channel's callback: it must not block.
NotificationHandler = Callable[[str, msgspec.Raw], None]


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


class RpcClient:
    """Implements `MessageReceiver`; attach it to a channel with `bind()` before use."""

    def __init__(self, on_notification: NotificationHandler) -> None:
        self._on_notification = on_notification
        self._peer = RpcPeer(Role.CLIENT)
        self._pending: dict[int, asyncio.Future[Response]] = {}
        self._channel: MessageChannel | None = None
        self._disconnected: Disconnected | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def bind(self, channel: MessageChannel) -> None:
        self._channel = channel

    @property
    def is_connected(self) -> bool:
        return self._disconnected is None

    async def call(self, method: str, params: Any, result_type: type[T]) -> T:
        """Send a request and decode its result as `result_type`.

        Raises `RpcError` (the server's error), `Disconnected` (connection lost before the
        answer; the request may or may not have been applied), `ProtocolViolation` (a result
        of the wrong shape). Waits while the channel is congested before sending.
        Cancellation: the answer, if it comes, is dropped.
        """
        if self._disconnected is not None:
            raise self._disconnected
        channel = self._channel
        assert channel is not None, "bind() a channel first"
        if channel.is_congested():
            await writable(channel)
            if self._disconnected is not None:
                raise self._disconnected
        # The caller's span (if tracing is on) becomes the parent of the server's span.
        request_id, data = self._peer.start_call(method, params, current_trace_headers())
        # A channel that declares a size limit (a WebSocket's frame cap) would make the server
        # drop the whole connection for an oversized message: refuse it here instead.
        limit: int | None = getattr(channel, "max_send_bytes", None)
        if limit is not None and len(data) > limit:
            self._peer.abandon_call(request_id)
            raise MessageTooLarge(
                f"the {method} request is {_mib(len(data))}; this connection carries at most "
                f"{_mib(limit)} per message (a smaller argv, environment or write will fit)"
            )
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            channel.send(data)
            response = await future
        finally:
            if self._pending.pop(request_id, None) is not None:
                self._peer.abandon_call(request_id)
        if response.error is not None:
            error = response.error
            raise from_jsonrpc_error(error.code, error.message, error.data)
        assert response.result is not None
        try:
            return msgspec.json.decode(response.result, type=result_type, dec_hook=dec_hook)
        except msgspec.ValidationError as exc:
            raise ProtocolViolation(f"unexpected {method} result: {exc}") from None

    def notify(self, method: str, params: Any = None) -> None:
        """Send a notification (dropped once the connection is gone)."""
        if self._channel is not None and self._disconnected is None:
            self._channel.send(
                RpcPeer.encode_notification(method, {} if params is None else params)
            )

    # -- MessageReceiver -----------------------------------------------------------------------

    def message_received(self, data: bytes) -> None:
        peer = self._peer
        event = peer.receive_message(data)  # the client role never holds messages back
        while event is not None:
            if isinstance(event, ResponseReceived):
                request_id = event.response.id
                assert isinstance(request_id, int)
                future = self._pending.get(request_id)
                if future is not None and not future.done():
                    future.set_result(event.response)
            elif isinstance(event, NotificationReceived):
                try:
                    self._on_notification(event.method, event.params)
                except Exception:
                    log.exception("notification handler failed for %s", event.method)
            elif isinstance(event, ParseFailed | Violation):
                log.warning("ignoring a message from the server that is not JSON-RPC")
            event = peer.next_event()

    def connection_lost(self) -> None:
        self._fail_all(Disconnected("connection closed"))

    def _fail_all(self, reason: Disconnected) -> None:
        if self._disconnected is None:
            self._disconnected = reason
        self._peer.connection_lost()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(reason)
        self._pending.clear()
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        """Close the channel; pending calls fail with `Disconnected` at once."""
        self._fail_all(Disconnected("connection closed by the client"))
        if self._channel is not None:
            self._channel.close()
