"""Observability: one trace across the RPC boundary, metrics over real OTLP/HTTP and /metrics,
and structured lifecycle logs (docs/observability.md)."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import sys
from pathlib import Path
from typing import Any

import msgspec
from opentelemetry import metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from execserver.client.client import ExecServerClient
from execserver.observability.telemetry import Telemetry
from tests.harness.httpserver import RecordedRequest, http_test_server, respond
from tests.harness.metrics import http_get, prometheus_values
from tests.harness.servers import ours_command, start_server
from tests.harness.wire import WireClient, process_params
from tests.server.conftest import StartServer

TOKEN = "observability-test-token"


async def test_observability_one_trace_from_client_to_outbound_http(
    start_server: StartServer,
) -> None:
    """Client span -> `trace` member -> server request span -> `traceparent` of the outbound
    HTTP request; and a process span under its `process/start` span."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry = Telemetry(provider, metrics.NoOpMeterProvider())
    _, url = await start_server(telemetry=telemetry)
    tracer = provider.get_tracer("test-client")
    async with http_test_server() as http, await ExecServerClient.connect(url) as client:
        http.route("/traced", respond(200, [], b"ok"))
        with tracer.start_as_current_span("tool-call") as root:
            response = await client.call(
                "http/request",
                {"method": "GET", "url": http.url("/traced"), "requestId": "t1"},
                dict,
            )
            assert response["status"] == 200
            await client.call("process/start", process_params("p1", ["true"]), dict)
        # a request outside any span has no parent
        await client.call("fs/getMetadata", {"path": "file:///tmp"}, dict)
        for _ in range(100):
            if any(s.name == "process" for s in exporter.get_finished_spans()):
                break
            await asyncio.sleep(0.05)
        outbound: RecordedRequest = http.requests[0]
    spans = {span.name: span for span in exporter.get_finished_spans()}
    trace_id = root.get_span_context().trace_id
    server_span = spans["http/request"]
    assert server_span.context.trace_id == trace_id
    assert server_span.parent is not None
    assert server_span.parent.span_id == root.get_span_context().span_id
    assert server_span.kind is SpanKind.SERVER
    (traceparent,) = outbound.header("traceparent")
    version, header_trace, header_parent, _flags = traceparent.split("-")
    assert (version, int(header_trace, 16)) == ("00", trace_id)
    assert int(header_parent, 16) == server_span.context.span_id
    start_span, process_span = spans["process/start"], spans["process"]
    assert start_span.parent is not None
    assert start_span.parent.span_id == root.get_span_context().span_id
    assert process_span.parent is not None
    assert process_span.parent.span_id == start_span.context.span_id
    assert process_span.attributes is not None
    assert process_span.attributes["exec_server.result"] == "success"
    assert spans["fs/getMetadata"].parent is None


def _otlp_values(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(metric name, sorted labels) -> value (sums and gauges; histograms give their count)."""
    request = ExportMetricsServiceRequest()
    request.ParseFromString(body)
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                points = getattr(metric, kind).data_points
                for point in points:
                    labels = tuple(sorted((a.key, a.value.string_value) for a in point.attributes))
                    if kind == "histogram":
                        value = float(point.count)
                    else:
                        value = point.as_int if point.HasField("as_int") else point.as_double
                    values[(metric.name, labels)] = value
    return values


FINISHED = "exec_server_processes_finished_total"


async def _workload(client: WireClient) -> int:
    """Processes that succeed, fail, are terminated, and race terminate against their exit;
    returns how many were started."""
    started = 0

    async def start(process_id: str, argv: list[str]) -> None:
        nonlocal started
        response = await client.request("process/start", process_params(process_id, argv))
        assert "result" in response, response
        started += 1

    for index in range(3):
        await start(f"ok{index}", ["true"])
    for index in range(2):
        await start(f"fail{index}", ["sh", "-c", "exit 3"])
    for index in range(2):
        await start(f"long{index}", ["sleep", "30"])
        await client.request("process/terminate", {"processId": f"long{index}"})
    for index in range(10):  # terminate racing the exit: each still counts exactly once
        start_race = process_params(f"race{index}", ["true"])
        await client.send({"id": f"s{index}", "method": "process/start", "params": start_race})
        terminate = {"processId": f"race{index}"}
        await client.send({"id": f"t{index}", "method": "process/terminate", "params": terminate})
        assert "result" in await client.response(f"s{index}")
        started += 1
    for process_id in [*(f"ok{i}" for i in range(3)), *(f"fail{i}" for i in range(2))]:
        await client.process_events(process_id)
    return started


async def test_observability_metrics_over_otlp_and_prometheus(tmp_path: Path) -> None:
    """A known workload; /metrics and an OTLP/HTTP receiver see the same counts, each process
    finished exactly once, also those still running at shutdown."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    async with http_test_server() as receiver:
        exports: list[bytes] = []

        async def collect(request: RecordedRequest, exchange: Any) -> None:
            body = request.body
            if "gzip" in request.header("content-encoding"):
                body = gzip.decompress(body)
            exports.append(body)
            await respond(200, [("content-type", "application/x-protobuf")])(request, exchange)

        receiver.route("/v1/metrics", collect)
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url("").rstrip("/"),
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRIC_EXPORT_INTERVAL": "200",
        }
        server = await start_server(
            "ours",
            tmp_path,
            extra=[
                "--metrics",
                "--ws-auth",
                "capability-token",
                "--ws-token-file",
                str(token_file),
            ],
            env={**os.environ, **env},
        )
        try:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with await WireClient.connect(server.url, additional_headers=headers) as client:
                await client.initialize()
                started = await _workload(client)
                await client.request("process/start", process_params("left1", ["sleep", "30"]))
                await client.request("process/start", process_params("left2", ["sleep", "30"]))
                for _ in range(100):
                    status, text = await asyncio.to_thread(
                        http_get, f"{server.http_base}/metrics", headers
                    )
                    scraped = prometheus_values(text)
                    finished = sum(v for (n, _), v in scraped.items() if n == FINISHED)
                    if finished == started:
                        break
                    await asyncio.sleep(0.05)
                assert status == 200
                assert finished == started, text
                assert scraped[(FINISHED, (("result", "error"),))] == 2
                assert scraped[(FINISHED, (("result", "success"),))] >= 3
                assert scraped[(FINISHED, (("result", "terminated"),))] >= 2
                assert scraped[("exec_server_processes_active", ())] == 2
                assert scraped[("exec_server_connections_active", ())] == 1
                assert scraped[("exec_server_connections_total", ())] == 1
                ok_starts = scraped[
                    ("exec_server_requests_total", (("method", "process/start"), ("outcome", "ok")))
                ]
                assert ok_starts == started + 2
                # the page is behind the same auth, and Origin is refused as for the WebSocket
                assert (await asyncio.to_thread(http_get, f"{server.http_base}/metrics"))[0] == 401
                origin = {**headers, "Origin": "http://evil.example"}
                assert (await asyncio.to_thread(http_get, f"{server.http_base}/metrics", origin))[
                    0
                ] == 403
                # the OTLP receiver gets the same counts
                for _ in range(100):
                    pushed = _otlp_values(exports[-1]) if exports else {}
                    if sum(v for (n, _), v in pushed.items() if n == FINISHED) == started:
                        break
                    await asyncio.sleep(0.05)
                for key, value in scraped.items():
                    if key[0] == FINISHED:
                        assert pushed[key] == value, key
        finally:
            assert await server.stop() == 0
        # shutdown kills the two left running; the final export counts them once, as terminated
        final = _otlp_values(exports[-1])
        print(
            f"\nfinal OTLP export: {sorted((k, v) for k, v in final.items() if k[0] == FINISHED)}"
        )
        assert sum(v for (n, _), v in final.items() if n == FINISHED) == started + 2
        assert final[(FINISHED, (("result", "terminated"),))] >= 4


async def test_observability_json_lifecycle_logs_without_secrets() -> None:
    """`--log-format json --log-level info`: one JSON object per lifecycle event, with ids and
    durations, and no environment values."""
    command_env = {"PATH": "/usr/bin:/bin", "SECRET_VALUE": "do-not-log-this-value"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "execserver",
        "--log-level",
        "info",
        "--log-format",
        "json",
        *ours_command()[3:],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    url = (await process.stdout.readline()).decode().strip()
    async with await WireClient.connect(url) as client:
        await client.initialize()
        await client.request(
            "process/start", process_params("p1", ["sh", "-c", "exit 5"], env=command_env)
        )
        await client.process_events("p1")
    process.terminate()
    _, stderr = await process.communicate()
    assert b"do-not-log-this-value" not in stderr
    records = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    by_message = {record["msg"]: record for record in records}
    for message in (
        "connection opened",
        "session created",
        "process started",
        "process finished",
        "connection closed",
        "session detached",
    ):
        assert message in by_message, (message, records)
    finished = by_message["process finished"]
    assert finished["process_id"] == "p1" and finished["exit_code"] == 5
    assert finished["result"] == "error" and finished["duration_ms"] > 0
    assert (
        by_message["process started"]["session_id"] == by_message["session created"]["session_id"]
    )
    assert all({"ts", "level", "logger", "msg"} <= record.keys() for record in records)
    msgspec.json.encode(records)  # plain JSON values only
