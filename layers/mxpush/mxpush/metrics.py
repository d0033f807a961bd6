"""Operational metrics: what happened to notifications and pushes, by low-cardinality labels.

Domain code records through the helpers below (`notification`, `push`, `latency`, ...); each
handler flushes at the end of its invocation (`@flushed`). On AWS the flush writes CloudWatch
Embedded Metric Format (EMF) documents to stdout, namespace `mxpush`, one document per set of
dimension values; CloudWatch turns them into metrics without an API call. Local mode swaps the
sink for an in-process aggregate served as Prometheus text (`mxpush_local.metrics`).

Dimensions are only enum values and backend names (never a pushkey, registration id, user or
token), so a metric's series stay few, and a log line holding them leaks nothing.

EMF is written here rather than through Powertools `Metrics`: an invocation records several
dimension sets (a sender: Pushes by backend and outcome, latency by backend), which Powertools
holds one of per flush (or flushes per metric with `single_metric`), and Powertools adds a
`service` dimension the template's alarms and dashboard do not name. The import costs nothing
either way (json, threading and time are loaded already).
"""

from __future__ import annotations

import functools
import json
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

NAMESPACE = "mxpush"
# EMF takes at most 100 values of one metric in a document.
_EMF_MAX_VALUES = 100
_BACKEND_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


@dataclass(frozen=True)
class MetricSpec:
    name: str
    unit: str  # EMF unit: "Count" or "Milliseconds"
    dimensions: tuple[str, ...]
    description: str


NOTIFICATIONS = MetricSpec(
    "Notifications", "Count", ("Disposition",), "Device notifications accepted, by disposition"
)
PUSHES = MetricSpec("Pushes", "Count", ("Backend", "Outcome"), "Pushes by backend and outcome")
DELIVERY_LATENCY = MetricSpec(
    "DeliveryLatency",
    "Milliseconds",
    ("Backend",),
    "First event accepted to the backend's 2xx",
)
DELIVERY_LATENESS = MetricSpec(
    "DeliveryLateness", "Milliseconds", ("Backend",), "Sender start minus the push's due time"
)
RETRIES = MetricSpec("Retries", "Count", ("Backend",), "Attempts that failed transiently")
NOTIFY_ERRORS = MetricSpec("NotifyErrors", "Count", ("Status",), "Notify answers 4xx and 5xx")
SPECS = (NOTIFICATIONS, PUSHES, DELIVERY_LATENCY, DELIVERY_LATENESS, RETRIES, NOTIFY_ERRORS)


@dataclass(frozen=True)
class Sample:
    """Recorded values of one metric with one set of dimension values (counts are summed)."""

    spec: MetricSpec
    dimensions: tuple[tuple[str, str], ...]
    values: tuple[float, ...]


class Sink(Protocol):
    def emit(self, samples: list[Sample], timestamp: float) -> None: ...


class EmfSink:
    """CloudWatch Embedded Metric Format, one JSON line per dimension set, to stdout."""

    def __init__(self, write: Callable[[str], Any] | None = None) -> None:
        self._write = write

    def emit(self, samples: list[Sample], timestamp: float) -> None:
        write = self._write or _stdout_line
        for document in emf_documents(samples, timestamp):
            write(json.dumps(document, separators=(",", ":")))


def emf_documents(samples: Iterable[Sample], timestamp: float) -> list[dict[str, Any]]:
    by_dimensions: dict[tuple[tuple[str, str], ...], list[Sample]] = {}
    for sample in samples:
        by_dimensions.setdefault(sample.dimensions, []).append(sample)
    documents = []
    for dimensions, group in by_dimensions.items():
        longest = max(len(s.values) for s in group)
        for start in range(0, longest, _EMF_MAX_VALUES):
            part = [s for s in group if len(s.values) > start]
            document: dict[str, Any] = {
                "_aws": {
                    "Timestamp": int(timestamp * 1000),
                    "CloudWatchMetrics": [
                        {
                            "Namespace": NAMESPACE,
                            "Dimensions": [[key for key, _ in dimensions]],
                            "Metrics": [{"Name": s.spec.name, "Unit": s.spec.unit} for s in part],
                        }
                    ],
                },
                **dict(dimensions),
            }
            for sample in part:
                chunk = sample.values[start : start + _EMF_MAX_VALUES]
                document[sample.spec.name] = chunk[0] if len(chunk) == 1 else list(chunk)
            documents.append(document)
    return documents


def _stdout_line(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Recorder:
    """Collects one invocation's samples; thread-safe (a sender pushes batches in parallel,
    and local mode runs invocations side by side: each sample is handed on exactly once)."""

    def __init__(self, sink: Sink | None = None) -> None:
        self.sink: Sink = sink or EmfSink()
        self._lock = threading.Lock()
        self._counts: dict[tuple[MetricSpec, tuple[tuple[str, str], ...]], float] = {}
        self._timings: dict[tuple[MetricSpec, tuple[tuple[str, str], ...]], list[float]] = {}

    def add(self, spec: MetricSpec, value: float, **dimensions: str) -> None:
        if tuple(dimensions) != spec.dimensions:
            raise ValueError(f"{spec.name} takes dimensions {spec.dimensions}")
        key = (spec, tuple(dimensions.items()))
        with self._lock:
            if spec.unit == "Count":
                self._counts[key] = self._counts.get(key, 0) + value
            else:
                self._timings.setdefault(key, []).append(value)

    def flush(self, now: Callable[[], float] = time.time) -> None:
        with self._lock:
            counts, self._counts = self._counts, {}
            timings, self._timings = self._timings, {}
        samples = [Sample(spec, dims, (value,)) for (spec, dims), value in counts.items()]
        samples += [Sample(spec, dims, tuple(values)) for (spec, dims), values in timings.items()]
        if samples:
            self.sink.emit(samples, now())


recorder = Recorder()


def set_sink(sink: Sink) -> Sink:
    """Send what is flushed from now on to `sink`; returns the previous one (local mode)."""
    previous, recorder.sink = recorder.sink, sink
    return previous


def flush() -> None:
    recorder.flush()


_Handler = TypeVar("_Handler", bound=Callable[..., Any])


def flushed(handler: _Handler) -> _Handler:
    """Flush the invocation's metrics when the handler returns or raises."""

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        finally:
            recorder.flush()

    return wrapper  # type: ignore[return-value]


# --- what the domain code records ---------------------------------------------------------------


def backend_label(name: str) -> str:
    """A backend's name as a dimension value; anything unexpected is `other` (an event's
    `backend` field is not allowed to open new series)."""
    return name if _BACKEND_NAME.match(name) else "other"


def notification(disposition: str) -> None:
    recorder.add(NOTIFICATIONS, 1, Disposition=disposition)


def push(backend: str, outcome: str, count: int = 1) -> None:
    if count > 0:
        recorder.add(PUSHES, count, Backend=backend_label(backend), Outcome=outcome)


def latency(backend: str, seconds: float) -> None:
    recorder.add(DELIVERY_LATENCY, max(seconds, 0.0) * 1000, Backend=backend_label(backend))


def lateness(backend: str, seconds: float) -> None:
    recorder.add(DELIVERY_LATENESS, max(seconds, 0.0) * 1000, Backend=backend_label(backend))


def retry(backend: str) -> None:
    recorder.add(RETRIES, 1, Backend=backend_label(backend))


def notify_error(status: int) -> None:
    if status >= 400:
        recorder.add(NOTIFY_ERRORS, 1, Status=f"{status // 100}xx")
