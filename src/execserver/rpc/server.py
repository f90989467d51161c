"""The server side of a JSON-RPC connection: `RpcPeer` driven from a channel, plus routing.

`ServerEndpoint` is the channel's receiver. Each event the core releases is handled here:
requests go through the router; a handler that answers at once is answered inline, an
awaitable result runs as a task owned by the endpoint (and, unless its route is `detached`,
holds later messages back: the reference's arrival-order semantics). Parse errors are
answered with id -1; violations drop the connection (PROTOCOL.md §2.4). Closing the connection
cancels the request tasks; `aclose()` waits for them.

Observation (spans and metrics) goes through a narrow `RequestObserver`; without one the
request path does not look at the clock.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

import msgspec

from execserver.errors import (
    Disconnected,
    MethodNotFound,
    RpcError,
    from_jsonrpc_error,
    to_jsonrpc_error,
)
from execserver.protocol.jsonrpc import Request, RequestId, TraceContext
from execserver.protocol.params import ParamsError
from execserver.rpc.peer import (
    AnswerReceived,
    Event,
    NotificationReceived,
    ParseFailed,
    RequestReceived,
    Role,
    RpcPeer,
    Violation,
)
from execserver.rpc.router import Router
from execserver.tasks import TaskOwner
from execserver.transport.base import MessageChannel

log = logging.getLogger(__name__)

_PLAIN_RESULTS = (msgspec.Struct, dict, list, type(None))
"""Results no handler returns to be awaited (`inspect.isawaitable` costs a failed attribute
lookup on their type, on every request)."""

Gate = Callable[[str], None]
"""Raises an `RpcError` if the connection may not use methods of this family yet."""

T = TypeVar("T")


class RequestObserver(Protocol[T]):
    """Watches requests (spans, metrics). `T` is its per-request record."""

    def request_started(self, method: str | None, trace: TraceContext | None, received: float) -> T:
        """A request arrived for `method` (None: a method the server does not have)."""
        ...

    def enter(self, record: T) -> object:
        """The handler starts: make the request current; returns what `leave` restores."""
        ...

    def leave(self, token: object) -> None: ...

    def request_cancelled(self, record: T) -> None: ...

    def request_finished(self, record: T, error_code: int | None) -> None: ...


class ServerEndpoint(Generic[T]):
    """Implements `MessageReceiver` for one server connection."""

    def __init__(
        self,
        channel: MessageChannel,
        router: Router,
        *,
        gate: Gate,
        on_notification: Callable[[str], bool],
        on_close: Callable[[], None],
        observer: RequestObserver[T] | None = None,
    ) -> None:
        self.channel = channel
        self._peer = RpcPeer(Role.SERVER, timing=observer is not None)
        self._router = router
        self._gate = gate
        self._on_notification = on_notification
        self._on_close = on_close
        self._observer = observer
        self._tasks = TaskOwner(f"requests of {channel.label}")
        self._reading_paused = False
        self._awaiting_drain = False
        self._closed = False
        self._calls: dict[int, asyncio.Future[Any]] = {}
        """Our requests to the client, by id, until answered."""

    @property
    def closed(self) -> bool:
        return self._closed

    # -- MessageReceiver -----------------------------------------------------------------------

    def message_received(self, data: bytes) -> None:
        if self._closed:
            return
        peer = self._peer
        peer.congested = self.channel.is_congested()
        event = peer.receive_message(data)
        if type(event) is RequestReceived:  # the common case, without a call
            self._dispatch(event.request, event.received)
        elif event is not None:
            self._handle(event)
        if peer.backlogged and not self._closed:
            self._pump()

    def connection_lost(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._peer.connection_lost()
        calls, self._calls = self._calls, {}
        for future in calls.values():
            if not future.done():
                future.set_exception(Disconnected("the client connection closed"))
        self._tasks.cancel_all()
        self._on_close()

    # -- the core's events ---------------------------------------------------------------------

    def _handle(self, event: Event) -> None:
        if type(event) is RequestReceived:
            self._dispatch(event.request, event.received)
        elif isinstance(event, AnswerReceived):
            future = self._calls.pop(event.request_id, None)
            if future is not None and not future.done():
                if event.error is not None:
                    error = event.error
                    future.set_exception(from_jsonrpc_error(error.code, error.message, error.data))
                else:
                    future.set_result(event.result)
        elif isinstance(event, NotificationReceived):
            if not self._on_notification(event.method):
                self.channel.abort()
        elif isinstance(event, ParseFailed):
            self._send_error(
                -1,
                RpcError(f"failed to parse {self.channel.label}: {event.detail}", code=-32600),
            )
        elif isinstance(event, Violation):
            self.channel.abort()

    def _pump(self) -> None:
        """Handle what the backlog may release now; arrange to continue when it can."""
        peer = self._peer
        peer.congested = self.channel.is_congested()
        while (event := peer.next_event()) is not None:
            self._handle(event)
            if self._closed:
                return
            peer.congested = self.channel.is_congested()
        if peer.waiting and peer.congested and not self._awaiting_drain:
            self._awaiting_drain = True
            self.channel.call_when_writable(self._drained)
        if peer.reading_paused != self._reading_paused:
            self._reading_paused = peer.reading_paused
            if self._reading_paused:
                self.channel.pause_reading()
            else:
                self.channel.resume_reading()

    def _drained(self) -> None:
        self._awaiting_drain = False
        if not self._closed:
            self._pump()

    # -- requests ------------------------------------------------------------------------------

    def _dispatch(self, request: Request, received: float) -> None:
        route = self._router.get(request.method)
        observer = self._observer
        record: T | None = None
        if observer is not None:
            method = request.method if route is not None else None
            record = observer.request_started(method, request.trace, received)
        if route is None:
            self._send_error(
                request.id,
                MethodNotFound(f"exec-server stub does not implement `{request.method}` yet"),
                record,
            )
            return
        # The request is current while its handler runs (and in the task it may start), so
        # spans and outbound trace headers the handler creates are its children.
        token = None if observer is None or record is None else observer.enter(record)
        try:
            try:
                params = route.decode(request.params)
                if route.gate is not None:
                    self._gate(route.gate)
                result = route.handler(params)
            except ParamsError as exc:
                self._send_error(request.id, RpcError(str(exc), code=-32602), record)
                return
            except Exception as exc:
                self._send_failure(request.id, exc, record)
                return
            # Most handlers answer at once with a struct (one C-level isinstance); anything
            # else is asked whether it is awaitable (a coroutine, a future).
            if not isinstance(result, _PLAIN_RESULTS) and inspect.isawaitable(result):
                task = self._tasks.spawn(self._finish(request.id, result, record))
                self._peer.request_started(request.id, ordered=not route.detached)
                request_id = request.id
                task.add_done_callback(lambda _: self._request_done(request_id))
                return
        finally:
            if token is not None:
                assert observer is not None
                observer.leave(token)
        self._send_result(request.id, result, record)

    async def _finish(self, request_id: RequestId, awaitable: Any, record: T | None) -> None:
        try:
            result = await awaitable
        except Exception as exc:
            self._send_failure(request_id, exc, record)
        except BaseException:
            if self._observer is not None and record is not None:
                self._observer.request_cancelled(record)
            raise
        else:
            self._send_result(request_id, result, record)

    def _request_done(self, request_id: RequestId) -> None:
        # A done callback (not the task's own tail), so the next messages are handled outside
        # the finished request's context, as they would be had they not waited.
        self._peer.request_finished(request_id)
        if not self._closed:
            self._pump()

    def _send_failure(self, request_id: RequestId, exc: BaseException, record: T | None) -> None:
        error = to_jsonrpc_error(exc)
        if not isinstance(exc, RpcError | OSError):
            log.exception("request %r failed", request_id, exc_info=exc)
        self._send_error(request_id, error, record)

    def _send_result(self, request_id: RequestId, result: Any, record: T | None = None) -> None:
        if not self._closed:
            self.channel.send(RpcPeer.encode_result(request_id, result))
        if record is not None and self._observer is not None:
            self._observer.request_finished(record, None)

    def _send_error(self, request_id: RequestId, error: RpcError, record: T | None = None) -> None:
        if not self._closed:
            self.channel.send(
                RpcPeer.encode_error(request_id, error.code, error.message, error.data)
            )
        if record is not None and self._observer is not None:
            self._observer.request_finished(record, error.code)

    # -- notifications -------------------------------------------------------------------------

    def notify(self, method: str, params: Any) -> None:
        """Send a server notification (dropped once the connection is closed)."""
        if not self._closed:
            self.channel.send(RpcPeer.encode_notification(method, params))

    async def call(self, method: str, params: Any) -> Any:
        """Send a request to the client and wait for its answer: the decoded `result`, or the
        client's error raised as an `RpcError`. Raises `Disconnected` when the connection
        is (or goes) away first.

        Cancellation: the request is given up on; a late answer is dropped quietly.
        """
        if self._closed:
            raise Disconnected("the client connection is closed")
        request_id, data = self._peer.start_call(method, params)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls[request_id] = future
        self.channel.send(data)
        try:
            return await future
        finally:
            if self._calls.pop(request_id, None) is not None:
                self._peer.abandon_call(request_id)

    async def aclose(self) -> None:
        """Cancel every in-flight request task and wait for them to finish.

        Cancellation: the tasks are cancelled before the first await.
        """
        await self._tasks.aclose()
