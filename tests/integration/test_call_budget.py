"""AWS calls per notification on the notify path (engine v2): reads are one Query, a message
one or two writes, a read one write, and Step Functions only once per one-second slot — never
StopExecution. Counted on the notify handler's own thread, through the same route table and
handler local mode serves."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import boto3

from mxpush.ids import registration_id
from mxpush_local.gateway import LocalGateway
from tests.conftest import Api, count_aws_calls, synapse_body, with_event_id
from tests.fakes.gotify import FakeGotify

DM = "message_dm_2_members.1.full"
GROUP = "message_group_3_members.1.full"
READ = "read_receipts_all_badge.2.full"


def notify(gateway: LocalGateway, body: dict[str, Any]) -> tuple[int, Any, list[str]]:
    with count_aws_calls() as counter:
        status, _, payload = gateway.handle(
            "POST",
            "/_matrix/push/v1/notify",
            {"Content-Type": "application/json"},
            json.dumps(body).encode(),
        )
    return status, json.loads(payload), counter.calls


def in_one_second() -> None:
    """Start at the beginning of a second, so two notifies fall into one slot."""
    time.sleep(math.ceil(time.time()) - time.time() + 0.01)


def test_first_batch_of_a_slot_starts_its_execution_the_next_does_not(
    api: Api, gateway: LocalGateway, gotify: FakeGotify
) -> None:
    first = api.register(gotify, delay=60)
    second = api.register(gotify, delay=60)
    in_one_second()
    status, answer, calls = notify(gateway, synapse_body(DM, first))
    assert (status, answer) == (200, {"rejected": []})
    # Read, batch, slot marker (read, conditional write: it carries this first batch),
    # StartExecution.
    assert calls == ["Query", "PutItem", "GetItem", "PutItem", "StartExecution"]
    _, _, calls = notify(gateway, synapse_body(DM, second))
    # Same slot, started already: read the marker, write a due-index entry.
    assert calls == ["Query", "PutItem", "GetItem", "PutItem"]


def test_coalesced_push_costs_one_write(
    api: Api, gateway: LocalGateway, gotify: FakeGotify
) -> None:
    pushkey = api.register(gotify, delay=60)
    notify(gateway, synapse_body(GROUP, pushkey))
    second = with_event_id(synapse_body(GROUP, pushkey), "$second")
    status, _, calls = notify(gateway, second)
    assert status == 200
    assert calls == ["Query", "PutItem"]


def test_cancel_is_one_write_and_no_step_functions_call(
    api: Api, gateway: LocalGateway, gotify: FakeGotify
) -> None:
    pushkey = api.register(gotify, delay=60)
    notify(gateway, synapse_body(DM, pushkey))
    status, _, calls = notify(gateway, synapse_body(READ, pushkey))
    assert status == 200
    assert calls == ["Query", "UpdateItem"]
    assert api.deliveries(pushkey)[0]["outcome"] == "cancelled"


def test_badge_with_nothing_pending_is_one_read(
    api: Api, gateway: LocalGateway, gotify: FakeGotify
) -> None:
    pushkey = api.register(gotify, delay=60)
    _, _, calls = notify(gateway, synapse_body(READ, pushkey))
    assert calls == ["Query"]


def test_unknown_pushkey_is_one_read(gateway: LocalGateway) -> None:
    status, answer, calls = notify(gateway, synapse_body(DM, "nobody"))
    assert (status, answer) == (200, {"rejected": ["nobody"]})
    assert calls == ["Query"]


def test_call_goes_to_its_sender_without_step_functions(
    api: Api, gateway: LocalGateway, gotify: FakeGotify
) -> None:
    pushkey = api.register(gotify, delay=60)
    _, _, calls = notify(gateway, synapse_body("call_invite_dm.1.full", pushkey))
    assert calls == ["Query", "PutItem", "Invoke"]
    gotify.wait_for(1, timeout=5)


def test_duplicates_cost_a_read_and_repair_what_a_failed_attempt_left(
    api: Api, gateway: LocalGateway, gotify: FakeGotify
) -> None:
    pushkey = api.register(gotify, delay=60)
    first = synapse_body(GROUP, pushkey)
    notify(gateway, first)
    joined = with_event_id(first, "$joined")
    notify(gateway, joined)
    # A duplicate of a pending event checks its slot marker and re-writes a due entry, in
    # case the first attempt failed half-way; no second StartExecution.
    _, _, opener_calls = notify(gateway, first)
    _, _, joined_calls = notify(gateway, joined)
    assert opener_calls == ["Query", "GetItem", "PutItem"]
    assert joined_calls == ["Query", "GetItem", "PutItem"]


def test_a_push_is_two_reads_and_two_writes_a_skip_one_read(
    api: Api, gateway: LocalGateway, gotify: FakeGotify
) -> None:
    """The sender: the batch (taken already or cancelled: stop there), the registration (its
    target), the claim (a conditional write that returns the batch it took), the outcome."""
    pushkey = api.register(gotify, delay=60)
    notify(gateway, synapse_body(DM, pushkey))
    rid = registration_id(pushkey)
    items = boto3.client("dynamodb", region_name="us-east-1").query(
        TableName=gateway.aws.table_name,
        KeyConditionExpression="rid = :rid AND begins_with(sk, :b)",
        ExpressionAttributeValues={":rid": {"S": rid}, ":b": {"S": "b#"}},
    )["Items"]
    (batch,) = items
    event = {"batches": [{"registration": rid, "batch": batch["sk"]["S"]}]}
    with count_aws_calls() as counter:
        summary = gateway.aws.functions.invoke("GotifySenderFunction", event)
    assert summary == {"delivered": 1}
    assert counter.calls == ["GetItem", "GetItem", "UpdateItem", "UpdateItem"]
    gotify.wait_for(1, timeout=5)
    # Taken: a second run of the same event pushes nothing, and writes nothing.
    with count_aws_calls() as counter:
        assert gateway.aws.functions.invoke("GotifySenderFunction", event) == {"skipped": 1}
    assert counter.calls == ["GetItem"]
