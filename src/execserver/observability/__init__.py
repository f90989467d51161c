"""Traces, metrics and logs (PROTOCOL.md §14).

`telemetry` holds the instruments and the per-request and per-process recording; `setup`
builds OpenTelemetry providers from the standard `OTEL_*` variables (nothing is exported unless
configured); `prometheus` renders collected metrics for `/metrics`; `logs` configures
structured lifecycle logging. Everything goes through the OpenTelemetry API, which is a no-op
until a provider is installed.
"""
