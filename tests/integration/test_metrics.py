"""Metrics over real HTTP: local mode's `GET /metrics` counters move as notifications are
accepted and pushed, and the handlers' CloudWatch EMF output (the same samples, written to
stdout as on AWS) names the agreed metrics and dimensions and never a pushkey or a secret."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from mxpush import metrics
from mxpush.ids import registration_id
from mxpush_local.gateway import LocalGateway
from tests.conftest import GOTIFY_TOKEN, Api, synapse_body, wait_until, with_event_id
from tests.fakes.gotify import FakeGotify
from tests.fakes.server import Reply

pytestmark = pytest.mark.slow

DM = "message_dm_2_members.1.full"
READ = "read_receipts_all_badge.2.full"
SAMPLE_LINE = re.compile(r"^([a-z_]+)(\{[^}]*\})? (\S+)$")


def scrape(gateway: LocalGateway) -> tuple[str, dict[str, float]]:
    with urllib.request.urlopen(gateway.url + "/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = SAMPLE_LINE.match(line)
        assert match, f"not Prometheus text: {line!r}"
        samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return text, samples


def delivered(api: Api, pushkey: str) -> bool:
    return "delivered" in [entry["outcome"] for entry in api.deliveries(pushkey)]


def moved(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def test_metrics_counters_move_with_a_notify_and_its_delivery(
    gateway: LocalGateway, api: Api, gotify: FakeGotify
) -> None:
    pushkey = api.register(gotify, delay=1)
    _, before = scrape(gateway)
    assert api.notify(synapse_body(DM, pushkey)).status == 200
    gotify.wait_for(1, timeout=10)
    wait_until(lambda: delivered(api, pushkey))

    text, after = wait_until(
        lambda: (
            got
            if (got := scrape(gateway))[1].get(
                'mxpush_delivery_latency_seconds_count{backend="gotify"}', 0
            )
            > before.get('mxpush_delivery_latency_seconds_count{backend="gotify"}', 0)
            else None
        )
    )
    delta = moved(before, after)
    assert delta['mxpush_notifications_total{disposition="scheduled"}'] == 1
    assert delta['mxpush_pushes_total{backend="gotify",outcome="delivered"}'] == 1
    assert delta['mxpush_delivery_latency_seconds_count{backend="gotify"}'] == 1
    # Accepted, held for the 1 s delay, then pushed: the latency includes the delay.
    assert 0.9 <= delta['mxpush_delivery_latency_seconds_sum{backend="gotify"}'] < 10
    assert delta['mxpush_delivery_latency_seconds_bucket{backend="gotify",le="+Inf"}'] == 1
    assert delta['mxpush_delivery_lateness_seconds_count{backend="gotify"}'] == 1
    assert "# TYPE mxpush_pushes_total counter" in text
    assert "# TYPE mxpush_delivery_latency_seconds histogram" in text
    assert pushkey not in text
    assert registration_id(pushkey) not in text


def test_metrics_count_cancels_coalesces_retries_and_notify_errors(
    gateway: LocalGateway, api: Api, gotify: FakeGotify
) -> None:
    cancelled = api.register(gotify, delay=2)
    burst = api.register(gotify, delay=2)
    _, before = scrape(gateway)

    api.notify(synapse_body(DM, cancelled))
    assert api.notify(synapse_body(READ, cancelled)).status == 200
    gotify.queue(Reply(503, {"error": "busy"}))  # the burst's first attempt: retried
    api.notify(with_event_id(synapse_body(DM, burst), "$one"))
    api.notify(with_event_id(synapse_body(DM, burst), "$two"))
    assert api.request("POST", "/_matrix/push/v1/notify", raw=b"{", token=None).status == 400

    wait_until(lambda: delivered(api, burst), timeout=20)
    _, after = wait_until(
        lambda: (
            got
            if moved(before, (got := scrape(gateway))[1]).get(
                'mxpush_pushes_total{backend="gotify",outcome="delivered"}'
            )
            else None
        )
    )
    delta = moved(before, after)
    assert delta['mxpush_notifications_total{disposition="scheduled"}'] == 2
    assert delta['mxpush_notifications_total{disposition="cancelled"}'] == 1
    assert delta['mxpush_notifications_total{disposition="coalesced"}'] == 1
    assert delta['mxpush_pushes_total{backend="gotify",outcome="cancelled"}'] == 1
    assert delta['mxpush_pushes_total{backend="gotify",outcome="delivered"}'] == 1
    assert delta['mxpush_pushes_total{backend="gotify",outcome="coalesced"}'] == 1
    assert delta['mxpush_retries_total{backend="gotify"}'] == 1
    assert delta['mxpush_notify_errors_total{status="4xx"}'] == 1


@pytest.fixture
def emf_on_stdout(gateway: LocalGateway) -> Iterator[None]:
    """The handlers write EMF to stdout, as on AWS, for the length of a test."""
    previous = metrics.set_sink(metrics.EmfSink())
    yield
    metrics.set_sink(previous)


def emf_documents(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]


def test_handlers_write_emf_with_the_agreed_names_and_no_identifiers(
    gateway: LocalGateway,
    api: Api,
    gotify: FakeGotify,
    emf_on_stdout: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pushkey = api.register(gotify, delay=1)
    body = synapse_body(DM, pushkey)
    gotify.queue(Reply(429, {"error": "slow down"}))  # the first attempt: retried
    assert api.notify(body).status == 200
    assert api.request("POST", "/_matrix/push/v1/notify", raw=b"[]", token=None).status == 400
    wait_until(lambda: delivered(api, pushkey), timeout=20)
    time.sleep(0.3)  # the sender flushes when its handler returns, after the log write

    out = capsys.readouterr().out
    documents = emf_documents(out)
    by_metric = {}
    for document in documents:
        [directive] = document["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "mxpush"
        assert isinstance(document["_aws"]["Timestamp"], int)
        [dimensions] = directive["Dimensions"]
        for metric in directive["Metrics"]:
            by_metric[metric["Name"]] = (dimensions, metric["Unit"], document)
    assert set(by_metric) >= {
        "Notifications",
        "NotifyErrors",
        "Pushes",
        "DeliveryLatency",
        "DeliveryLateness",
        "Retries",
    }

    dims, unit, doc = by_metric["Notifications"]
    assert (dims, unit, doc["Disposition"], doc["Notifications"]) == (
        ["Disposition"],
        "Count",
        "scheduled",
        1,
    )
    dims, unit, doc = by_metric["NotifyErrors"]
    assert (dims, doc["Status"], doc["NotifyErrors"]) == (["Status"], "4xx", 1)
    dims, unit, doc = by_metric["Pushes"]
    assert (dims, doc["Backend"], doc["Outcome"], doc["Pushes"]) == (
        ["Backend", "Outcome"],
        "gotify",
        "delivered",
        1,
    )
    dims, unit, doc = by_metric["DeliveryLatency"]
    assert (dims, unit, doc["Backend"]) == (["Backend"], "Milliseconds", "gotify")
    assert 2_900 <= doc["DeliveryLatency"] < 20_000  # 1 s delay + 2 s backoff
    dims, unit, doc = by_metric["Retries"]
    assert (dims, unit, doc["Backend"], doc["Retries"]) == (["Backend"], "Count", "gotify", 1)
    dims, unit, doc = by_metric["DeliveryLateness"]
    assert (dims, unit) == (["Backend"], "Milliseconds")
    assert 0 <= doc["DeliveryLateness"] < 5_000
    # Only the agreed dimensions: no document carries anything else.
    allowed = {"_aws", "Disposition", "Backend", "Outcome", "Status"} | set(by_metric)
    assert all(set(document) <= allowed for document in documents)

    emf_text = "\n".join(line for line in out.splitlines() if line.startswith('{"_aws"'))
    notification = body["notification"]
    for secret in (
        pushkey,
        registration_id(pushkey),
        registration_id(pushkey)[:10],
        GOTIFY_TOKEN,
        notification["event_id"],
        notification["room_id"],
        notification["sender"],
    ):
        assert secret not in emf_text
