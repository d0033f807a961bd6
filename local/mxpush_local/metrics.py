"""Local mode's metrics: the handlers' flushed samples, aggregated in process, served at
`GET /metrics` in Prometheus text format and summarised when local mode stops.

Counts become counters (`mxpush_pushes_total`), timings histograms in seconds
(`mxpush_delivery_latency_seconds`); labels are the CloudWatch dimensions, in snake case.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

from mxpush.metrics import SPECS, MetricSpec, Sample

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds: a push is due after its delay (25 s by default), retries run for minutes.
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 30.0, 60.0, 120.0, 300.0, 900.0)

Labels = tuple[tuple[str, str], ...]


@dataclass
class _Histogram:
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    count: int = 0
    total: float = 0.0
    largest: float = 0.0

    def observe(self, seconds: float) -> None:
        for index, bound in enumerate(BUCKETS):
            if seconds <= bound:
                self.buckets[index] += 1
        self.count += 1
        self.total += seconds
        self.largest = max(self.largest, seconds)


def prometheus_name(spec: MetricSpec) -> str:
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", spec.name).lower()
    return f"mxpush_{snake}_total" if spec.unit == "Count" else f"mxpush_{snake}_seconds"


def _label_name(dimension: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", dimension).lower()


class LocalMetrics:
    """A `mxpush.metrics.Sink` that keeps totals since local mode started."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[MetricSpec, dict[Labels, float]] = {}
        self._histograms: dict[MetricSpec, dict[Labels, _Histogram]] = {}

    def emit(self, samples: list[Sample], timestamp: float) -> None:
        with self._lock:
            for sample in samples:
                labels = tuple((_label_name(k), v) for k, v in sample.dimensions)
                if sample.spec.unit == "Count":
                    series = self._counters.setdefault(sample.spec, {})
                    series[labels] = series.get(labels, 0) + sum(sample.values)
                else:
                    histograms = self._histograms.setdefault(sample.spec, {})
                    histogram = histograms.setdefault(labels, _Histogram())
                    for milliseconds in sample.values:
                        histogram.observe(milliseconds / 1000)

    def prometheus(self) -> str:
        lines: list[str] = []
        with self._lock:
            for spec in SPECS:
                name = prometheus_name(spec)
                if spec.unit == "Count":
                    lines += [f"# HELP {name} {spec.description}.", f"# TYPE {name} counter"]
                    for labels, value in sorted(self._counters.get(spec, {}).items()):
                        lines.append(f"{name}{_labels(labels)} {_number(value)}")
                    continue
                lines += [f"# HELP {name} {spec.description}.", f"# TYPE {name} histogram"]
                for labels, histogram in sorted(self._histograms.get(spec, {}).items()):
                    for bound, count in zip(BUCKETS, histogram.buckets, strict=True):
                        bucket = (*labels, ("le", _number(bound)))
                        lines.append(f"{name}_bucket{_labels(bucket)} {count}")
                    every = (*labels, ("le", "+Inf"))
                    lines.append(f"{name}_bucket{_labels(every)} {histogram.count}")
                    lines.append(f"{name}_sum{_labels(labels)} {_number(histogram.total)}")
                    lines.append(f"{name}_count{_labels(labels)} {histogram.count}")
        return "\n".join(lines) + "\n"

    def summary(self) -> list[str]:
        """A few lines for the terminal: each metric's series on one line."""
        lines = []
        with self._lock:
            for spec in SPECS:
                if spec.unit == "Count":
                    counters = sorted(self._counters.get(spec, {}).items())
                    parts = [f"{_short(labels)} {_number(value)}" for labels, value in counters]
                else:
                    histograms = sorted(self._histograms.get(spec, {}).items())
                    parts = [
                        f"{_short(labels)} n={h.count} mean {h.total / h.count:.2f}s "
                        f"max {h.largest:.2f}s"
                        for labels, h in histograms
                        if h.count
                    ]
                if parts:
                    lines.append(f"  {spec.name}: " + ", ".join(parts))
        return lines or ["  nothing recorded"]


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{key}="{_escape(value)}"' for key, value in labels)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _short(labels: Labels) -> str:
    return "/".join(value for _, value in labels)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
