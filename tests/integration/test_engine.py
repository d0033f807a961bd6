"""The delivery engine v2 under stress and faults: bounded items whatever the traffic, a lost
slot execution, every AWS call failing in turn, and no StopExecution anywhere — each ending with
every accepted notification delivered exactly once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from mxpush import wiring
from mxpush.delivery import sweep
from mxpush.ids import registration_id
from mxpush.store.models import BATCH_PREFIX, MAX_REFS, item_size
from mxpush.store.raw import deserialize_item
from mxpush_local.gateway import LocalGateway
from tests.conftest import Api, synapse_body, wait_until, with_event_id
from tests.fakes.gotify import FakeGotify

pytestmark = pytest.mark.slow

DM = "message_dm_2_members.1.full"
GROUP = "message_group_3_members.1.full"


def outcomes(api: Api, pushkey: str) -> list[str]:
    return [entry["outcome"] for entry in api.deliveries(pushkey)]


def batch_items(pushkey: str) -> list[dict[str, Any]]:
    client = wiring.store()._client()
    response = client.query(
        TableName=wiring.settings().table_name,
        KeyConditionExpression="rid = :rid AND begins_with(sk, :b)",
        ExpressionAttributeValues={
            ":rid": {"S": registration_id(pushkey)},
            ":b": {"S": BATCH_PREFIX},
        },
        ConsistentRead=True,
    )
    return [deserialize_item(i) for i in response["Items"]]


def notify_like_synapse(api: Api, body: dict[str, Any], attempts: int = 6) -> int:
    """Synapse retries a 5xx with backoff; return how many answers were 5xx."""
    for failures, pause in enumerate((0.2, 0.4, 0.8, 1.6, 3.2)[: attempts - 1]):
        answer = api.notify(body)
        if answer.status == 200:
            return failures
        assert answer.status >= 500, answer.body
        time.sleep(pause)
    raise AssertionError("the notification was never accepted")


def test_a_flood_keeps_every_batch_small_and_counts_right(api: Api, gotify: FakeGotify) -> None:
    """Hundreds of events per delay: each batch item stays within two write units (a v1 batch
    grew ~132 bytes per event toward DynamoDB's 400 KB limit, then every notify answered 503),
    lists its latest events and counts them all, and each batch is one push saying how many."""
    pushkey = api.register(gotify, delay=3)
    base = synapse_body(GROUP, pushkey)
    total = 400
    largest = 0
    for n in range(total):
        # Long event ids: the budget must hold for the largest ids Synapse sends too.
        assert api.notify(with_event_id(base, f"$flood-{n:04d}-" + "x" * 200)).status == 200
        if n % 50 == 49:
            largest = max([largest, *(item_size(i) for i in batch_items(pushkey))])
    assert largest <= 2000  # two write units, however many events
    batches = wait_until(
        lambda: (
            (items := batch_items(pushkey)) and all(i["st"] == "delivered" for i in items) and items
        ),
        timeout=20,
    )
    assert sum(b["n"] for b in batches) == total
    assert max(b["n"] for b in batches) > MAX_REFS  # the bound was exercised
    pushes = gotify.wait_for(len(batches), timeout=5)
    titles = sorted(p.json()["title"] for p in pushes)
    assert titles == sorted(f"E2E Group: {b['n']} new messages" for b in batches if b["n"] > 1)
    entries = api.deliveries(pushkey)
    for batch in batches:
        listed = [e for e in entries if e["batch"] == batch["bid"][:16]]
        assert {e["count"] for e in listed} == {batch["n"]}
        assert len(listed) == min(batch["n"], len(batch["refs"]))
        assert len(listed) <= MAX_REFS


@contextmanager
def no_stop_execution() -> Iterator[list[str]]:
    """Record every Start/StopExecution call, from every thread."""
    seen: list[str] = []
    original = BaseClient._make_api_call  # type: ignore[attr-defined]

    def recording(self: BaseClient, operation: str, params: Any) -> Any:
        if operation.endswith("Execution"):
            seen.append(operation)
        return original(self, operation, params)

    BaseClient._make_api_call = recording  # type: ignore[attr-defined]
    try:
        yield seen
    finally:
        BaseClient._make_api_call = original  # type: ignore[attr-defined]


def test_reads_never_call_step_functions(api: Api, gotify: FakeGotify) -> None:
    pushkeys = [api.register(gotify, delay=2) for _ in range(5)]
    with no_stop_execution() as seen:
        for pushkey in pushkeys:
            api.notify(synapse_body(DM, pushkey))
            api.notify(synapse_body("read_receipts_all_badge.2.full", pushkey))
        time.sleep(3.5)
    assert "StopExecution" not in seen
    # Five batches opened within a second or two: a slot execution each second at most.
    assert 1 <= seen.count("StartExecution") <= 3
    assert gotify.requests == []
    assert all(outcomes(api, p) == ["cancelled"] for p in pushkeys)


def test_a_lost_slot_execution_is_redriven_by_the_sweep(
    api: Api, gotify: FakeGotify, gateway: LocalGateway
) -> None:
    since = int(time.time()) - 1  # only this test's slots
    first, second = api.register(gotify, delay=2), api.register(gotify, delay=2)
    api.notify(synapse_body(DM, first))
    api.notify(with_event_id(synapse_body(GROUP, second), "$lost-2"))
    gateway.aws.stop_running_executions()  # the slot's execution is lost
    time.sleep(3.5)
    assert gotify.requests == []
    result = sweep(
        store=wiring.store(), senders=wiring.senders(), now=time.time() + 15, since=since
    )
    assert result["redriven_slots"] >= 1
    gotify.wait_for(2, timeout=10)
    wait_until(
        lambda: outcomes(api, first) == ["delivered"] and outcomes(api, second) == ["delivered"]
    )
    # A second sweep finds nothing left to do, and nothing is pushed twice.
    sweep(store=wiring.store(), senders=wiring.senders(), now=time.time() + 15, since=since)
    time.sleep(1)
    assert len(gotify.requests) == 2


class FailOnce:
    """Make the `nth` call of one AWS operation (from any thread) fail as AWS does when it
    is unavailable."""

    def __init__(self, operation: str, nth: int) -> None:
        self.operation = operation
        self.nth = nth
        self.count = 0
        self.failed = threading.Event()
        self._lock = threading.Lock()

    @contextmanager
    def armed(self) -> Iterator[FailOnce]:
        original = BaseClient._make_api_call  # type: ignore[attr-defined]
        fault = self

        def failing(client: BaseClient, operation: str, params: Any) -> Any:
            if operation == fault.operation and not fault.failed.is_set():
                with fault._lock:
                    fault.count += 1
                    fire = fault.count == fault.nth
                if fire:
                    fault.failed.set()
                    raise ClientError(
                        {"Error": {"Code": "ServiceUnavailable", "Message": "injected"}},
                        operation,
                    )
            return original(client, operation, params)

        BaseClient._make_api_call = failing  # type: ignore[attr-defined]
        try:
            yield self
        finally:
            BaseClient._make_api_call = original  # type: ignore[attr-defined]


# Every AWS operation of a delayed push, from the notify to the outcome, and which of its
# calls to fail: the notify's read, batch, slot marker (read and write: the marker carries the
# slot's first batch) and StartExecution; the slot step's marker read, due-index Query, Invoke
# and its "dispatched" mark; the sender's reads, claim and outcome.
FAULTS = [
    ("Query", 1),
    ("PutItem", 1),
    ("GetItem", 1),
    ("PutItem", 2),
    ("StartExecution", 1),
    ("GetItem", 2),
    ("Query", 2),
    ("Invoke", 1),
    ("UpdateItem", 1),
    ("GetItem", 3),
    ("GetItem", 4),
    ("UpdateItem", 2),
    ("UpdateItem", 3),
]


@pytest.mark.parametrize(("operation", "nth"), FAULTS, ids=[f"{o}-{n}" for o, n in FAULTS])
def test_each_aws_call_failing_still_ends_in_exactly_one_delivery(
    api: Api, gotify: FakeGotify, operation: str, nth: int
) -> None:
    since = int(time.time()) - 1  # only this test's slots
    # A delay longer than the earlier tests' (1 s): this push's slot is its own, so it is the
    # one that writes the slot marker and starts the execution.
    pushkey = api.register(gotify, delay=3)
    body = synapse_body(DM, pushkey)
    fault = FailOnce(operation, nth)
    with fault.armed():
        notify_like_synapse(api, body)

        def delivered() -> bool:
            return outcomes(api, pushkey) == ["delivered"]

        try:
            wait_until(delivered, timeout=10, interval=0.2)
        except AssertionError:
            # What a lost execution leaves, the sweep (every minute on AWS) re-drives.
            sweep(store=wiring.store(), senders=wiring.senders(), now=time.time() + 15, since=since)
            wait_until(delivered, timeout=8, interval=0.2)
    assert fault.failed.is_set(), f"{operation} #{nth} was never called"
    notify_like_synapse(api, body)  # a late Synapse retry changes nothing
    time.sleep(1.5)
    assert len(gotify.requests) == 1
    assert outcomes(api, pushkey) == ["delivered"]


def test_sender_lambda_that_keeps_failing_ends_failed_through_its_destination(
    api: Api, gotify: FakeGotify, gateway: LocalGateway
) -> None:
    """Lambda retries an asynchronous invocation twice, then its on-failure destination logs
    the batches `failed`: an accepted notification never stays without an outcome."""

    def crash(event: dict[str, Any]) -> None:
        raise RuntimeError("sender crashed")

    gateway.aws.functions.before_invoke["GotifySenderFunction"] = crash
    try:
        pushkey = api.register(gotify, delay=1)
        api.notify(synapse_body(DM, pushkey))
        [entry] = wait_until(lambda: api.deliveries(pushkey), timeout=15)
    finally:
        gateway.aws.functions.before_invoke.pop("GotifySenderFunction")
    assert entry["outcome"] == "failed"
    assert "RuntimeError" in entry["reason"]
    assert gotify.requests == []


def test_the_registration_item_stays_small_whatever_happens(api: Api, gotify: FakeGotify) -> None:
    """Delivery never writes the registration (a rejection aside): it stays well under 1 KB,
    so reading it costs little and it never grows with traffic."""
    pushkey = api.register(
        gotify,
        delay=1,
        options={"click_url": "element://vector/webapp/#/room/{room_id}/{event_id}"},
        pusher={"app_id": "org.mxpush.gotify", "device_display_name": "My phone", "lang": "en"},
    )
    for n in range(5):
        api.notify(with_event_id(synapse_body(DM, pushkey), f"$small-{n}"))
        if n % 2:
            api.notify(synapse_body("read_receipts_all_badge.2.full", pushkey))
    wait_until(lambda: len(api.deliveries(pushkey)) >= 3, timeout=10)
    client = wiring.store()._client()
    item = client.get_item(
        TableName=wiring.settings().table_name,
        Key={"rid": {"S": registration_id(pushkey)}, "sk": {"S": "registration"}},
    )["Item"]
    assert item_size(deserialize_item(item)) <= 1024
