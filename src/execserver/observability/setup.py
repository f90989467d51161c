"""OpenTelemetry providers for `execserver serve`, from the standard `OTEL_*` variables.

Nothing is exported unless configured: traces when `OTEL_TRACES_EXPORTER` or an OTLP endpoint
(`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, metrics likewise
(`OTEL_METRICS_EXPORTER`, `..._METRICS_ENDPOINT`). Exporters: `otlp` (OTLP/HTTP, the default
once configured), `console`, `none` (spans are made but not exported). `OTEL_SDK_DISABLED=true`
turns everything off. `--metrics` adds an in-process reader for the `/metrics` page. The SDK
and exporter are the optional `execserver[otel]` extra.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from execserver.observability.telemetry import Telemetry
from execserver.version import __version__

DURATION_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
)  # fmt: skip


class ObservabilityError(Exception):
    """The configuration asks for something this installation cannot do."""


@dataclass
class Observability:
    telemetry: Telemetry | None
    metrics_page: Callable[[], bytes] | None
    shutdown: Callable[[], None]


def _configured(signal: str, environ: Mapping[str, str]) -> str | None:
    """The exporter name for `signal` (TRACES or METRICS), or None if it is not configured."""
    exporter = environ.get(f"OTEL_{signal}_EXPORTER", "").strip().lower()
    if exporter:
        return exporter
    if environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get(
        f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"
    ):
        return "otlp"
    return None


def configure(
    *, metrics_page: bool = False, environ: Mapping[str, str] | None = None
) -> Observability:
    environ = os.environ if environ is None else environ
    disabled = environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    traces = None if disabled else _configured("TRACES", environ)
    metrics = None if disabled else _configured("METRICS", environ)
    if traces is None and metrics is None and not metrics_page:
        return Observability(None, None, lambda: None)
    try:
        from opentelemetry.sdk.metrics import Histogram, MeterProvider
        from opentelemetry.sdk.metrics.export import (
            ConsoleMetricExporter,
            InMemoryMetricReader,
            MetricReader,
            PeriodicExportingMetricReader,
        )
        from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        raise ObservabilityError(
            "traces, metrics and --metrics need the OpenTelemetry SDK: "
            "pip install 'execserver[otel]'"
        ) from None
    from execserver.observability.prometheus import render

    attributes = {"service.version": __version__}
    if "OTEL_SERVICE_NAME" not in environ:
        attributes["service.name"] = "execserver"
    resource = Resource.create(attributes)
    tracer_provider = None
    if traces is not None:
        tracer_provider = TracerProvider(resource=resource)
        if traces == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        elif traces == "console":
            tracer_provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        elif traces != "none":
            raise ObservabilityError(f"unsupported OTEL_TRACES_EXPORTER {traces!r}")
    readers: list[MetricReader] = []
    if metrics == "otlp":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    elif metrics == "console":
        readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
    elif metrics not in (None, "none"):
        raise ObservabilityError(f"unsupported OTEL_METRICS_EXPORTER {metrics!r}")
    page_reader = InMemoryMetricReader() if metrics_page else None
    if page_reader is not None:
        readers.append(page_reader)
    meter_provider = None
    if readers:
        buckets = View(
            instrument_type=Histogram,
            aggregation=ExplicitBucketHistogramAggregation(DURATION_BUCKETS_S),
        )
        meter_provider = MeterProvider(readers, resource=resource, views=[buckets])
    from opentelemetry import metrics as metrics_api
    from opentelemetry import trace as trace_api

    telemetry = Telemetry(
        tracer_provider or trace_api.NoOpTracerProvider(),
        meter_provider or metrics_api.NoOpMeterProvider(),
    )

    def page() -> bytes:
        assert page_reader is not None
        return render(page_reader.get_metrics_data())

    def shutdown() -> None:
        if tracer_provider is not None:
            tracer_provider.shutdown()
        if meter_provider is not None:
            meter_provider.shutdown()

    return Observability(telemetry, page if page_reader is not None else None, shutdown)
