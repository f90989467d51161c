"""The server's instruments (§14 names) and how requests and processes are recorded.

One span per request, named for the method and parented on the request's `trace` member, kept
open until the response is queued; one span per process from start to closed. Requests are
counted by method and outcome with three durations: queue (received → handler starts), handler
(start → response queued) and total. Processes are counted once, when they close (or when the
server gives up on them at shutdown), by result: `success`, `error` or `terminated`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from execserver.version import __version__

SCOPE = "execserver"
W3C = TraceContextTextMapPropagator()

CONNECTIONS_TOTAL = "exec_server_connections_total"
CONNECTIONS_ACTIVE = "exec_server_connections_active"
REQUESTS_TOTAL = "exec_server_requests_total"
REQUEST_DURATION = "exec_server_request_duration_seconds"
REQUEST_QUEUE_DURATION = "exec_server_request_queue_duration_seconds"
REQUEST_TOTAL_DURATION = "exec_server_request_total_duration_seconds"
PROCESSES_ACTIVE = "exec_server_processes_active"
PROCESSES_FINISHED_TOTAL = "exec_server_processes_finished_total"
PROCESS_DURATION = "exec_server_process_duration_seconds"
SESSIONS = "exec_server_sessions"
"""Extension (not in PROTOCOL.md §14): sessions by `state`."""

UNKNOWN_METHOD = "unknown"
"""Method label of requests for methods the server does not have (bounded cardinality)."""


class TraceFields(Protocol):
    """A request's W3C `trace` member (protocol.jsonrpc.TraceContext)."""

    traceparent: str | None
    tracestate: str | None


def parent_context(traceparent: str | None, tracestate: str | None) -> Context | None:
    """The remote parent a W3C `trace` member names, or None."""
    if traceparent is None:
        return None
    carrier = {"traceparent": traceparent}
    if tracestate is not None:
        carrier["tracestate"] = tracestate
    return W3C.extract(carrier)


def current_trace_headers() -> dict[str, str]:
    """`traceparent`/`tracestate` of the current span, or {} when there is none."""
    carrier: dict[str, str] = {}
    if trace.get_current_span().get_span_context().is_valid:
        W3C.inject(carrier)
    return carrier


EAGER_SPAN_METHODS = frozenset({"http/request"})
"""Methods whose span must exist while the handler runs (it goes into outbound headers). Other
requests get their span when they finish, made with the recorded start time: the same span,
but its cost falls after the response is written (for `process/start`, while the child runs)."""

CURRENT_REQUEST: ContextVar[PendingRequest | None] = ContextVar("execserver_request", default=None)
"""The request whose handler is running (set by the RPC engine while telemetry is on)."""


@dataclass(slots=True)
class PendingRequest:
    method: str
    parent: Context | None
    start_ns: int
    received: float
    started: float
    span: Span | None = None
    context: Context | None = None
    """With an eager span: a context with it current, for the handler."""

    def span_context(self) -> Context | None:
        """A context whose current span is this request's (None before it exists)."""
        if self.span is None:
            return None
        return self.context or trace.set_span_in_context(self.span, self.parent)


class Telemetry:
    """Tracer and instruments; no-op unless the given (or global) providers record."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.tracer = trace.get_tracer(SCOPE, __version__, tracer_provider=tracer_provider)
        meter = metrics.get_meter(SCOPE, __version__, meter_provider=meter_provider)
        self._meter = meter
        self._connections = meter.create_counter(
            CONNECTIONS_TOTAL, unit="{connection}", description="Connections accepted"
        )
        self._requests = meter.create_counter(
            REQUESTS_TOTAL, unit="{request}", description="Requests answered, by method, outcome"
        )
        self._request_duration = meter.create_histogram(
            REQUEST_DURATION, unit="s", description="Handler start to response queued"
        )
        self._queue_duration = meter.create_histogram(
            REQUEST_QUEUE_DURATION, unit="s", description="Request received to handler start"
        )
        self._total_duration = meter.create_histogram(
            REQUEST_TOTAL_DURATION, unit="s", description="Request received to response queued"
        )
        self._finished = meter.create_counter(
            PROCESSES_FINISHED_TOTAL, unit="{process}", description="Processes finished, by result"
        )
        self._process_duration = meter.create_histogram(
            PROCESS_DURATION, unit="s", description="Process start to closed, by result"
        )

    def observe(
        self,
        connections_active: Callable[[], int],
        processes_active: Callable[[], int],
        sessions: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        """Gauges that report the current state on every collection (`sessions`: a count by
        state, reported with a `state` label)."""

        def gauge(read: Callable[[], int]) -> Callable[[CallbackOptions], Iterable[Observation]]:
            def callback(_: CallbackOptions) -> Iterable[Observation]:
                return [Observation(read())]

            return callback

        self._meter.create_observable_gauge(
            CONNECTIONS_ACTIVE,
            [gauge(connections_active)],
            unit="{connection}",
            description="Connections open now",
        )
        self._meter.create_observable_gauge(
            PROCESSES_ACTIVE,
            [gauge(processes_active)],
            unit="{process}",
            description="Processes not yet closed",
        )
        if sessions is not None:
            by_state = sessions

            def session_states(_: CallbackOptions) -> Iterable[Observation]:
                return [Observation(n, {"state": state}) for state, n in by_state().items()]

            self._meter.create_observable_gauge(
                SESSIONS,
                [session_states],
                unit="{session}",
                description="Sessions on the server by state",
            )

    # -- connections and requests -------------------------------------------------------------

    def connection_opened(self) -> None:
        self._connections.add(1)

    def request_started(
        self, method: str | None, trace_fields: TraceFields | None, received: float
    ) -> PendingRequest:
        """A request arrived (`method` None: one the server does not have). Implements the
        RPC engine's `RequestObserver`, like `enter`/`leave`/`request_cancelled`/..."""
        parent = (
            None
            if trace_fields is None
            else parent_context(trace_fields.traceparent, trace_fields.tracestate)
        )
        method = UNKNOWN_METHOD if method is None else method
        pending = PendingRequest(method, parent, time.time_ns(), received, time.perf_counter())
        if method in EAGER_SPAN_METHODS:
            pending.span = self.tracer.start_span(method, context=parent, kind=SpanKind.SERVER)
            pending.context = trace.set_span_in_context(pending.span, parent)
        return pending

    def enter(self, pending: PendingRequest) -> object:
        """Make `pending` the current request (and its eager span the current span)."""
        context_token = None if pending.context is None else otel_context.attach(pending.context)
        return context_token, CURRENT_REQUEST.set(pending)

    def leave(self, token: object) -> None:
        assert isinstance(token, tuple)
        context_token, request_token = token
        CURRENT_REQUEST.reset(request_token)
        if context_token is not None:
            otel_context.detach(context_token)

    def request_cancelled(self, pending: PendingRequest) -> None:
        if pending.span is not None:
            pending.span.end()

    def request_finished(self, pending: PendingRequest, error_code: int | None) -> None:
        """The response is queued: note the time now, record it after this loop turn (once the
        response has been written), so the recording is not on the request's latency path."""
        end, end_ns = time.perf_counter(), time.time_ns()
        asyncio.get_running_loop().call_soon(self._record_request, pending, error_code, end, end_ns)

    def _record_request(
        self, pending: PendingRequest, error_code: int | None, end: float, end_ns: int
    ) -> None:
        labels = {"method": pending.method, "outcome": "ok" if error_code is None else "error"}
        self._requests.add(1, labels)
        self._queue_duration.record(pending.started - pending.received, {"method": pending.method})
        self._request_duration.record(end - pending.started, labels)
        self._total_duration.record(end - pending.received, labels)
        span = pending.span
        if span is None:
            span = pending.span = self.tracer.start_span(
                pending.method,
                context=pending.parent,
                kind=SpanKind.SERVER,
                start_time=pending.start_ns,
            )
        if error_code is not None and span.is_recording():
            span.set_attribute("rpc.jsonrpc.error_code", error_code)
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=end_ns)

    # -- processes -----------------------------------------------------------------------------

    def process_started(self) -> ProcessTrace:
        """Where a process's span will hang (the current request's span) and when it started;
        the span itself is made when the process finishes, off the start's latency path."""
        return ProcessTrace(CURRENT_REQUEST.get(), otel_context.get_current(), time.time_ns())

    def process_finished(
        self,
        started: ProcessTrace,
        *,
        process_id: str,
        program: str,
        pid: int,
        result: str,
        exit_code: int | None,
        seconds: float,
    ) -> None:
        labels = {"result": result}
        self._finished.add(1, labels)
        self._process_duration.record(seconds, labels)
        attributes: dict[str, str | int] = {
            "exec_server.process_id": process_id,
            "process.executable.name": program,
            "process.pid": pid,
            "exec_server.result": result,
        }
        if exit_code is not None:
            attributes["process.exit.code"] = exit_code
        request = started.request
        parent = (request.span_context() if request is not None else None) or started.context
        span = self.tracer.start_span(
            "process", context=parent, start_time=started.start_ns, attributes=attributes
        )
        if result == "error" and span.is_recording():
            span.set_status(Status(StatusCode.ERROR))
        span.end()


@dataclass(slots=True, frozen=True)
class ProcessTrace:
    request: PendingRequest | None
    """The `process/start` request (its span is the parent, made by the time this ends)."""
    context: Context
    start_ns: int
