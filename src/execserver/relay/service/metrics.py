"""The relay's counters and their Prometheus text exposition (format 0.0.4).

Counters are plain integers bumped on the event loop (no locks, no OpenTelemetry SDK needed);
gauges are computed by the caller when the page is rendered. Labels carry only fixed
vocabularies (directions, reasons, outcomes): never an id, a token or a key.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Final

TO_EXECUTOR: Final = "to_executor"
TO_HARNESS: Final = "to_harness"
_PREFIX: Final = "exec_server_relay_"

_HELP: Final = {
    "executors_registered": "environments with a registration",
    "executors_connected": "executor sockets attached to this node",
    "harness_sockets": "harness sockets open on this node",
    "streams_active": "streams routed through this node",
    "frames_forwarded_total": "frames forwarded, by direction",
    "bytes_forwarded_total": "frame bytes forwarded, by direction",
    "handshake_frames_total": "Noise handshake frames forwarded, by direction",
    "frames_dropped_total": "frames not forwarded, by reason",
    "stream_resets_total": "resets the relay sent, by receiving side and reason",
    "sockets_closed_total": "sockets the relay closed, by role and reason",
    "registry_requests_total": "registry requests, by operation and HTTP status",
    "validations_total": "authorization validations, by outcome",
    "rejections_total": "refused rendezvous upgrades, by role and reason",
    "fleet_nodes_alive": "relay nodes this node knows alive (itself included)",
    "fleet_remote_executors": "harness sockets here bound to an executor on another node",
    "fleet_remote_harnesses": "harness sockets on other nodes bound to an executor here",
    "fleet_messages_sent_total": "data-plane messages sent to other nodes over NATS, by kind",
    "fleet_messages_received_total": "data-plane messages received over NATS, by kind",
    "fleet_messages_dropped_total": "data-plane messages lost or refused, by reason",
    "nats_disconnects_total": "times this node lost a NATS connection (control or data)",
    "nats_reconnects_total": "times this node got a NATS connection back",
    "kv_operation_seconds": "time of shared-state (NATS KV) operations, by operation",
    "kv_operations_in_flight": "shared-state operations this node has outstanding",
    "kv_operations_waiting": "shared-state operations queued for a slot on this node",
    "kv_operations_refused_total": "shared-state operations refused after queueing too long",
    "kv_operations_waiting_priority": "shared-state operations of harnesses queued in the "
    "priority lane",
    "kv_operations_prioritized_total": "shared-state operations that took the priority lane "
    "(/connect, /validate, harness stream opens)",
    "kv_replica_reads_total": "registration reads answered by a replica because the stream's "
    "leader did not answer",
    "gc_pause_seconds": "garbage-collection pauses, by generation",
    "gc_longest_pause_ms": "the longest garbage-collection pause since start, milliseconds",
    "gc_objects_frozen": "objects kept out of garbage collections (gc.freeze)",
    "node_probes_total": "direct probes of nodes whose heartbeats stopped, by outcome "
    "(answered: alive after all; failed: declared dead)",
}


class RelayMetrics:
    """Counters of one relay node."""

    def __init__(self) -> None:
        # The hot path bumps these four directly.
        self.frames: dict[str, int] = {TO_EXECUTOR: 0, TO_HARNESS: 0}
        self.bytes: dict[str, int] = {TO_EXECUTOR: 0, TO_HARNESS: 0}
        self.handshakes: dict[str, int] = {TO_EXECUTOR: 0, TO_HARNESS: 0}
        self._counters: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
        self._summaries: dict[tuple[str, tuple[tuple[str, str], ...]], list[float]] = {}

    def count(self, name: str, amount: int = 1, **labels: str) -> None:
        """Add `amount` to the counter `name` (without prefix, ending in `_total`)."""
        self._counters[name, tuple(sorted(labels.items()))] += amount

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        """Record one duration of `name` (rendered as a summary: `_sum` and `_count`)."""
        totals = self._summaries.setdefault((name, tuple(sorted(labels.items()))), [0.0, 0.0])
        totals[0] += seconds
        totals[1] += 1

    def value(self, name: str, **labels: str) -> int:
        """The current value of a counter (for tests and logs)."""
        return self._counters[name, tuple(sorted(labels.items()))]

    def render(self, gauges: Mapping[str, int]) -> bytes:
        """The Prometheus text page: `gauges` (name → value) and every counter."""
        series: dict[str, list[tuple[tuple[tuple[str, str], ...], int]]] = {}
        for name, value in gauges.items():
            series.setdefault(name, []).append(((), value))
        for label, per_direction in (
            ("frames_forwarded_total", self.frames),
            ("bytes_forwarded_total", self.bytes),
            ("handshake_frames_total", self.handshakes),
        ):
            for direction, value in per_direction.items():
                series.setdefault(label, []).append(((("direction", direction),), value))
        for (name, labels), value in sorted(self._counters.items()):
            series.setdefault(name, []).append((labels, value))
        lines: list[str] = []
        for name, points in series.items():
            full = _PREFIX + name
            kind = "counter" if name.endswith("_total") else "gauge"
            lines.append(f"# HELP {full} {_HELP.get(name, name)}")
            lines.append(f"# TYPE {full} {kind}")
            for labels, value in points:
                rendered = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                lines.append(f"{full}{{{rendered}}} {value}" if rendered else f"{full} {value}")
        summaries: dict[str, list[tuple[tuple[tuple[str, str], ...], list[float]]]] = {}
        for (name, labels), totals in sorted(self._summaries.items()):
            summaries.setdefault(name, []).append((labels, totals))
        for name, summary_points in summaries.items():
            full = _PREFIX + name
            lines.append(f"# HELP {full} {_HELP.get(name, name)}")
            lines.append(f"# TYPE {full} summary")
            for labels, (total, count) in summary_points:
                rendered = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                suffix = f"{{{rendered}}}" if rendered else ""
                lines.append(f"{full}_sum{suffix} {total:.6f}")
                lines.append(f"{full}_count{suffix} {int(count)}")
        return ("\n".join(lines) + "\n").encode()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


__all__ = ["TO_EXECUTOR", "TO_HARNESS", "RelayMetrics"]
