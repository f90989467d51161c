"""Server side of a JSON-RPC connection: decode, route, answer, and own the request tasks.

Each inbound message is decoded and classified; requests go through the router. Synchronous
handlers answer inline. An awaitable result runs as a task owned by this endpoint; while it is
pending, later messages wait in a bounded backlog, so requests take effect in arrival order as
with the reference, except results of `detached` routes (long polls), which never hold anything
back. Tasks are cancelled when the connection goes away. Parse errors are answered with id -1
and keep the connection; protocol violations drop it (PROTOCOL.md §2.4).

A client that stops reading cannot grow server memory: while the outbound buffer is congested,
or `MAX_IN_FLIGHT` requests are still running, later messages wait in the backlog too, and once
the backlog is full the transport stops reading (TCP back-pressure reaches the client).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context

from execserver.errors import MethodNotFound, RpcError, to_jsonrpc_error
from execserver.observability.telemetry import (
    CURRENT_REQUEST,
    UNKNOWN_METHOD,
    PendingRequest,
    Telemetry,
    parent_context,
)
from execserver.protocol import jsonrpc
from execserver.protocol.jsonrpc import (
    ClientResponse,
    EnvelopeError,
    Notification,
    Request,
    RequestId,
)
from execserver.protocol.serde import ParamsError
from execserver.rpc.router import Router
from execserver.transport.base import MessageChannel

log = logging.getLogger(__name__)

# Past these, stop reading from the transport until the backlog drains (back-pressure).
MAX_BACKLOG_MESSAGES = 1024
MAX_BACKLOG_BYTES = 64 * 1024 * 1024
MAX_IN_FLIGHT = 256
"""Running request tasks per connection (mostly long polls); more wait in the backlog."""

Gate = Callable[[str], None]
"""Raises an `RpcError` if the connection may not use methods of this family yet."""


class ServerEndpoint:
    """Implements `MessageReceiver` for one connection."""

    def __init__(
        self,
        channel: MessageChannel,
        router: Router,
        *,
        gate: Gate,
        on_notification: Callable[[Notification], bool],
        on_close: Callable[[], None],
        telemetry: Telemetry | None = None,
    ) -> None:
        self.channel = channel
        self._telemetry = telemetry
        self._router = router
        self._gate = gate
        self._on_notification = on_notification
        self._on_close = on_close
        self._tasks: set[asyncio.Task[None]] = set()
        self._lane: asyncio.Task[None] | None = None
        self._backlog: deque[tuple[bytes, float]] = deque()
        self._backlog_bytes = 0
        self._reading_paused = False
        self._awaiting_drain = False
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    # -- MessageReceiver -----------------------------------------------------------------------

    def message_received(self, data: bytes) -> None:
        if self._closed:
            return
        received = time.perf_counter() if self._telemetry is not None else 0.0
        if self._backlog or self._must_wait():
            self._backlog.append((data, received))
            self._backlog_bytes += len(data)
            if not self._reading_paused and (
                len(self._backlog) > MAX_BACKLOG_MESSAGES or self._backlog_bytes > MAX_BACKLOG_BYTES
            ):
                self._reading_paused = True
                self.channel.pause_reading()
            return
        self._handle(data, received)

    def _must_wait(self) -> bool:
        """Whether the next message has to wait: an ordered request is running, too many are,
        or the client is not reading what we already sent (then retry once it drains)."""
        if self._lane is not None or len(self._tasks) >= MAX_IN_FLIGHT:
            return True
        if self.channel.is_congested():
            if not self._awaiting_drain:
                self._awaiting_drain = True
                self.channel.call_when_writable(self._drained)
            return True
        return False

    def _drained(self) -> None:
        self._awaiting_drain = False
        self._run_backlog()

    def _handle(self, data: bytes, received: float) -> None:
        try:
            message = jsonrpc.decode_message(data)
        except EnvelopeError as exc:
            self._send_error(
                -1, RpcError(f"failed to parse {self.channel.label}: {exc}", code=-32600)
            )
            return
        if isinstance(message, Request):
            self._dispatch(message, received)
        elif isinstance(message, Notification):
            if not self._on_notification(message):
                self.channel.abort()
        elif isinstance(message, ClientResponse):
            # The server never sends requests, so any response from the client is a violation.
            self.channel.abort()

    def connection_lost(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._backlog.clear()
        for task in list(self._tasks):
            task.cancel()
        self._on_close()

    # -- requests ------------------------------------------------------------------------------

    def _dispatch(self, request: Request, received: float) -> None:
        route = self._router.get(request.method)
        pending: PendingRequest | None = None
        if self._telemetry is not None:
            trace_context = request.trace
            parent = (
                None
                if trace_context is None
                else parent_context(trace_context.traceparent, trace_context.tracestate)
            )
            method = request.method if route is not None else UNKNOWN_METHOD
            pending = self._telemetry.request_started(method, parent, received)
        if route is None:
            self._send_error(
                request.id,
                MethodNotFound(f"exec-server stub does not implement `{request.method}` yet"),
                pending,
            )
            return
        # The request's span is current while its handler runs (and in the task it may start),
        # so spans and outbound trace headers the handler creates are its children.
        token = (
            None
            if pending is None or pending.context is None
            else otel_context.attach(pending.context)
        )
        request_token = None if pending is None else CURRENT_REQUEST.set(pending)
        try:
            try:
                params = route.decode(request.params)
                if route.gate is not None:
                    self._gate(route.gate)
                result = route.handler(params)
            except ParamsError as exc:
                self._send_error(request.id, RpcError(str(exc), code=-32602), pending)
                return
            except Exception as exc:
                self._send_failure(request.id, exc, pending)
                return
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(self._finish(request.id, result, pending))
                self._tasks.add(task)
                if not route.detached:
                    self._lane = task
                task.add_done_callback(self._task_done)
                return
        finally:
            if request_token is not None:
                CURRENT_REQUEST.reset(request_token)
            if token is not None:
                otel_context.detach(token)
        self._send_result(request.id, result, pending)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._lane is task:
            self._lane = None
        self._run_backlog()

    def _run_backlog(self) -> None:
        while self._backlog and not self._closed and not self._must_wait():
            data, received = self._backlog.popleft()
            self._backlog_bytes -= len(data)
            self._handle(data, received)
        if self._reading_paused and len(self._backlog) <= MAX_BACKLOG_MESSAGES // 2:
            self._reading_paused = False
            self.channel.resume_reading()

    async def _finish(
        self, request_id: RequestId, awaitable: Any, pending: PendingRequest | None
    ) -> None:
        try:
            result = await awaitable
        except asyncio.CancelledError:
            if pending is not None and pending.span is not None:
                pending.span.end()
            raise
        except Exception as exc:
            self._send_failure(request_id, exc, pending)
        else:
            self._send_result(request_id, result, pending)

    def _send_failure(
        self, request_id: RequestId, exc: BaseException, pending: PendingRequest | None = None
    ) -> None:
        error = to_jsonrpc_error(exc)
        if not isinstance(exc, RpcError | OSError):
            log.exception("request %r failed", request_id, exc_info=exc)
        self._send_error(request_id, error, pending)

    def _send_result(
        self, request_id: RequestId, result: Any, pending: PendingRequest | None = None
    ) -> None:
        if not self._closed:
            self.channel.send(jsonrpc.encode_result(request_id, result))
        if pending is not None and self._telemetry is not None:
            self._telemetry.request_finished(pending, None)

    def _send_error(
        self, request_id: RequestId, error: RpcError, pending: PendingRequest | None = None
    ) -> None:
        if not self._closed:
            self.channel.send(
                jsonrpc.encode_error(request_id, error.code, error.message, error.data)
            )
        if pending is not None and self._telemetry is not None:
            self._telemetry.request_finished(pending, error.code)

    # -- notifications -------------------------------------------------------------------------

    def notify(self, method: str, params: Any) -> None:
        """Send a server notification (dropped once the connection is closed)."""
        if not self._closed:
            self.channel.send(jsonrpc.encode_notification(method, params))

    async def aclose(self) -> None:
        """Cancel every in-flight request task and wait for them to finish.

        Cancellation: the tasks are cancelled before the first await.
        """
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
