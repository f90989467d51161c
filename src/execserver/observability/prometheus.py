"""Prometheus text exposition (format 0.0.4) of collected OpenTelemetry metrics.

Names are the §14 names as they are (counters already end in `_total`, durations in
`_seconds`); histograms become `_bucket` (cumulative, with `le`), `_sum` and `_count`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.sdk.metrics.export import (
    Gauge,
    Histogram,
    HistogramDataPoint,
    MetricsData,
    Sum,
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(attributes: Mapping[str, Any] | None, extra: Iterable[tuple[str, str]] = ()) -> str:
    pairs = [(k, str(v)) for k, v in (attributes or {}).items()] + list(extra)
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def render(data: MetricsData | None) -> bytes:
    lines: list[str] = []
    for resource_metrics in data.resource_metrics if data is not None else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                name, points = metric.name, metric.data
                if isinstance(points, Sum):
                    kind = "counter" if points.is_monotonic else "gauge"
                elif isinstance(points, Gauge):
                    kind = "gauge"
                elif isinstance(points, Histogram):
                    kind = "histogram"
                else:
                    continue
                lines.append(f"# HELP {name} {_escape(metric.description or name)}")
                lines.append(f"# TYPE {name} {kind}")
                for point in points.data_points:
                    labels = _labels(point.attributes)
                    if isinstance(point, HistogramDataPoint):
                        cumulative = 0
                        bounds = [*point.explicit_bounds, math.inf]
                        for bound, count in zip(bounds, point.bucket_counts, strict=True):
                            cumulative += count
                            le = _labels(point.attributes, (("le", _number(bound)),))
                            lines.append(f"{name}_bucket{le} {cumulative}")
                        lines.append(f"{name}_sum{labels} {_number(point.sum)}")
                        lines.append(f"{name}_count{labels} {point.count}")
                    else:
                        lines.append(f"{name}{labels} {_number(point.value)}")
    return ("\n".join(lines) + "\n").encode()
