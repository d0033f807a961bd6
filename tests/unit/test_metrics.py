"""`mxpush.metrics`: samples aggregate per invocation and flush as CloudWatch EMF documents (one
per dimension set, at most 100 values of a metric each); handlers flush even when they raise;
the notify and record handlers' EMF on stdout names the agreed metrics and no identifier."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, cast

import pytest
from aws_lambda_powertools.utilities.typing import LambdaContext

import notify_handler
import record_outcome_handler
from mxpush import metrics, wiring
from mxpush.errors import StoreUnavailable
from mxpush.model import Outcome
from mxpush_local.aws import FakeLambdaContext
from mxpush_local.metrics import LocalMetrics

RID = "9f2c" * 16  # a registration id: the SHA-256 of a pushkey


@pytest.fixture
def emf_stdout() -> Iterator[None]:
    """EMF to stdout, as on AWS; whatever an earlier test left unflushed goes where it was
    going (in a worker that also runs local mode, that is local mode's sink)."""
    metrics.flush()
    previous = metrics.set_sink(metrics.EmfSink())
    yield
    metrics.set_sink(previous)


def emf(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]


def directive(document: dict[str, Any]) -> tuple[list[str], list[tuple[str, str]]]:
    [cloudwatch] = document["_aws"]["CloudWatchMetrics"]
    assert cloudwatch["Namespace"] == "mxpush"
    [dimensions] = cloudwatch["Dimensions"]
    return dimensions, [(m["Name"], m["Unit"]) for m in cloudwatch["Metrics"]]


def test_counts_add_up_and_each_dimension_set_is_one_document() -> None:
    lines: list[str] = []
    recorder = metrics.Recorder(metrics.EmfSink(lines.append))
    recorder.add(metrics.PUSHES, 1, Backend="gotify", Outcome="delivered")
    recorder.add(metrics.PUSHES, 2, Backend="gotify", Outcome="delivered")
    recorder.add(metrics.PUSHES, 1, Backend="ntfy", Outcome="failed")
    recorder.add(metrics.DELIVERY_LATENCY, 1500.0, Backend="gotify")
    recorder.add(metrics.DELIVERY_LATENCY, 2500.0, Backend="gotify")
    recorder.add(metrics.RETRIES, 1, Backend="gotify")
    recorder.flush(now=lambda: 1_700_000_000.5)

    documents = [json.loads(line) for line in lines]
    assert len(documents) == 3
    pushes = [d for d in documents if "Pushes" in d]
    assert sorted((d["Backend"], d["Outcome"], d["Pushes"]) for d in pushes) == [
        ("gotify", "delivered", 3),
        ("ntfy", "failed", 1),
    ]
    [by_backend] = [d for d in documents if "Retries" in d]
    dimensions, names = directive(by_backend)
    assert (dimensions, sorted(names)) == (
        ["Backend"],
        [("DeliveryLatency", "Milliseconds"), ("Retries", "Count")],
    )
    assert (by_backend["Backend"], by_backend["DeliveryLatency"], by_backend["Retries"]) == (
        "gotify",
        [1500.0, 2500.0],
        1,
    )
    assert by_backend["_aws"]["Timestamp"] == 1_700_000_000_500

    lines.clear()
    recorder.flush()
    assert lines == []  # flushed samples are gone


def test_more_than_100_values_are_split_across_documents() -> None:
    lines: list[str] = []
    recorder = metrics.Recorder(metrics.EmfSink(lines.append))
    for value in range(250):
        recorder.add(metrics.DELIVERY_LATENESS, float(value), Backend="bark")
    recorder.flush()
    values = [json.loads(line)["DeliveryLateness"] for line in lines]
    assert [len(v) for v in values] == [100, 100, 50]
    assert [v for chunk in values for v in chunk] == [float(v) for v in range(250)]


def test_only_the_declared_dimensions_are_accepted() -> None:
    recorder = metrics.Recorder(metrics.EmfSink(lambda line: None))
    with pytest.raises(ValueError, match="Pushes takes dimensions"):
        recorder.add(metrics.PUSHES, 1, Backend="gotify", Outcome="delivered", Pushkey="x")
    with pytest.raises(ValueError, match="Pushes takes dimensions"):
        recorder.add(metrics.PUSHES, 1, Backend="gotify")


def test_a_backend_label_never_opens_a_new_series_for_odd_input() -> None:
    assert metrics.backend_label("webpush") == "webpush"
    for odd in ("", "Gotify", "https://ntfy.example.org/up", "x" * 40, RID[:40] + "!"):
        assert metrics.backend_label(odd) == "other"


def test_flushed_handler_flushes_when_it_raises(emf_stdout: None, capsys: Any) -> None:
    @metrics.flushed
    def handler() -> None:
        metrics.retry("gotify")
        raise RuntimeError("transient")

    with pytest.raises(RuntimeError):
        handler()
    [document] = emf(capsys.readouterr().out)
    assert (document["Backend"], document["Retries"]) == ("gotify", 1)


def test_notify_handler_counts_5xx_and_4xx(
    emf_stdout: None, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable(raw: bytes) -> Any:
        raise StoreUnavailable("DynamoDB throttled")

    context = cast(LambdaContext, FakeLambdaContext("NotifyFunction"))
    event = {
        "version": "2.0",
        "rawPath": "/_matrix/push/v1/notify",
        "body": "{}",
        "requestContext": {"http": {"method": "POST"}, "requestId": "r1"},
    }
    assert notify_handler.lambda_handler(event, context)["statusCode"] == 400
    [document] = emf(capsys.readouterr().out)
    assert directive(document) == (["Status"], [("NotifyErrors", "Count")])
    assert (document["Status"], document["NotifyErrors"]) == ("4xx", 1)

    monkeypatch.setattr(notify_handler, "parse_notify_body", unavailable)
    assert notify_handler.lambda_handler(event, context)["statusCode"] == 503
    [document] = emf(capsys.readouterr().out)
    assert (document["Status"], document["NotifyErrors"]) == ("5xx", 1)


class RecordStore:
    def __init__(self, ended: set[str]) -> None:
        self.ended = ended

    def read_batch(self, rid: str, sk: str) -> tuple[None, None]:
        return None, None  # a registration of one channel is ended as it always was

    def finish_batch(
        self, rid: str, sk: str, *, token: Any, outcome: Outcome, reason: Any, now: float
    ) -> bool:
        return sk not in self.ended


def test_record_outcome_handler_counts_failed_pushes_it_logged(
    emf_stdout: None, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wiring, "store", lambda: RecordStore(ended={"b#3"}))
    monkeypatch.setattr(wiring, "clock", lambda: 1_700_000_000.0)
    destination = {
        "requestPayload": {
            "backend": "ntfy",
            "batches": [{"registration": RID, "batch": f"b#{n}"} for n in (1, 2, 3)],
        },
        "responsePayload": {"errorType": "Timeout", "errorMessage": "timed out"},
    }
    context = cast(LambdaContext, FakeLambdaContext("RecordOutcomeFunction"))
    assert record_outcome_handler.lambda_handler(destination, context)["logged"] == 2

    out = capsys.readouterr().out
    [document] = emf(out)
    assert directive(document) == (["Backend", "Outcome"], [("Pushes", "Count")])
    assert (document["Backend"], document["Outcome"], document["Pushes"]) == ("ntfy", "failed", 2)
    assert RID[:10] not in "\n".join(line for line in out.splitlines() if '"_aws"' in line)


def test_local_metrics_serve_prometheus_text_and_a_summary() -> None:
    local = LocalMetrics()
    recorder = metrics.Recorder(local)
    recorder.add(metrics.NOTIFICATIONS, 1, Disposition="scheduled")
    recorder.add(metrics.PUSHES, 1, Backend="gotify", Outcome="delivered")
    recorder.add(metrics.DELIVERY_LATENCY, 1200.0, Backend="gotify")
    recorder.add(metrics.DELIVERY_LATENCY, 30000.0, Backend="gotify")
    recorder.flush()
    recorder.add(metrics.NOTIFICATIONS, 2, Disposition="scheduled")
    recorder.flush()

    text = local.prometheus()
    assert 'mxpush_notifications_total{disposition="scheduled"} 3\n' in text
    assert 'mxpush_pushes_total{backend="gotify",outcome="delivered"} 1\n' in text
    assert 'mxpush_delivery_latency_seconds_bucket{backend="gotify",le="1"} 0\n' in text
    assert 'mxpush_delivery_latency_seconds_bucket{backend="gotify",le="2.5"} 1\n' in text
    assert 'mxpush_delivery_latency_seconds_bucket{backend="gotify",le="30"} 2\n' in text
    assert 'mxpush_delivery_latency_seconds_bucket{backend="gotify",le="+Inf"} 2\n' in text
    assert 'mxpush_delivery_latency_seconds_sum{backend="gotify"} 31.2\n' in text
    assert 'mxpush_delivery_latency_seconds_count{backend="gotify"} 2\n' in text
    assert "# TYPE mxpush_retries_total counter\n" in text
    assert local.summary() == [
        "  Notifications: scheduled 3",
        "  Pushes: gotify/delivered 1",
        "  DeliveryLatency: gotify n=2 mean 15.60s max 30.00s",
    ]
    assert LocalMetrics().summary() == ["  nothing recorded"]
