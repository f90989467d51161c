"""Reading a server's Prometheus page (`serve --metrics`) in tests."""

from __future__ import annotations

import urllib.error
import urllib.request

Series = tuple[str, tuple[tuple[str, str], ...]]
"""A metric name and its sorted labels."""


def prometheus_values(text: str) -> dict[Series, float]:
    """Every sample of a Prometheus text page, by series."""
    values: dict[Series, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        name, _, rest = series.partition("{")
        labels: list[tuple[str, str]] = []
        for pair in rest.rstrip("}").split(",") if rest else []:
            key, _, quoted = pair.partition("=")
            labels.append((key, quoted.strip('"')))
        values[(name, tuple(sorted(labels)))] = float(value)
    return values


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """Status and body of a GET (blocking: call it in a thread)."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def session_counts(text: str) -> dict[str, float]:
    """`exec_server_sessions` by `state` (attached, detached, empty)."""
    return {
        dict(labels)["state"]: value
        for (name, labels), value in prometheus_values(text).items()
        if name == "exec_server_sessions"
    }
