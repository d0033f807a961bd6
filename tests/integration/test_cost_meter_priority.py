"""The bench's cost meter beside local mode's requests-first gate: a background DynamoDB call
takes its pause before the meter's lock, so a request in flight is not held behind it (the
meter once held that lock through the pause, and `make bench`'s trace A fell to ~7/s)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import boto3
import pytest
from bench.cost_meter import Meter

from mxpush_local.gateway import LocalGateway
from mxpush_local.priority import requests_first

pytestmark = pytest.mark.slow


@pytest.fixture
def meter(gateway: LocalGateway) -> Iterator[Meter]:
    installed = Meter(gateway.aws.functions, gateway.aws.table_name)
    installed.install()
    installed.start()
    yield installed
    installed.stop()
    installed.uninstall()


def test_a_paused_background_call_does_not_hold_the_meters_lock(
    gateway: LocalGateway, meter: Meter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(requests_first, "max_pause", 10.0)
    client = boto3.client("dynamodb", region_name="us-east-1")
    in_flight, answered, called = threading.Event(), threading.Event(), threading.Event()

    def request() -> None:
        with requests_first.request():
            in_flight.set()
            answered.wait(20)

    def background_read() -> None:
        key = {"rid": {"S": "nobody"}, "sk": {"S": "nothing"}}
        client.get_item(TableName=gateway.aws.table_name, Key=key)
        called.set()

    threading.Thread(target=request, daemon=True).start()
    assert in_flight.wait(5)
    pauses = requests_first.pauses
    reader = threading.Thread(target=background_read, daemon=True)
    reader.start()
    try:
        for _ in range(100):  # until the read is pausing
            if requests_first.pauses > pauses:
                break
            called.wait(0.05)
        assert requests_first.pauses > pauses
        assert not called.is_set()
        # What a request's own DynamoDB call through the meter would need: free, not held
        # for the 10 s pause.
        assert meter._dynamodb_lock.acquire(timeout=2)
        meter._dynamodb_lock.release()
    finally:
        answered.set()
    assert called.wait(10)  # and the read goes on once the request is answered
    reader.join(5)
    assert meter.tally.calls[("(state machine)", "dynamodb", "GetItem")] == 1
