"""AWS calls per notification (issue budget): new delayed push <= 2, coalesced <= 1,
cancel <= 2, unknown pushkey <= 1. Counted on the notify handler's own thread, through the
same route table and handler local mode serves."""

from __future__ import annotations

import json
from typing import Any

from mxpush_local.gateway import LocalGateway
from tests.conftest import Api, count_aws_calls, synapse_body, with_event_id
from tests.fakes.gotify import FakeGotify


def notify(gateway: LocalGateway, body: dict[str, Any]) -> tuple[int, Any, list[str]]:
    with count_aws_calls() as counter:
        status, _, payload = gateway.handle(
            "POST",
            "/_matrix/push/v1/notify",
            {"Content-Type": "application/json"},
            json.dumps(body).encode(),
        )
    return status, json.loads(payload), counter.calls


def test_new_delayed_push_costs_two_calls(
    api: Api, gateway: LocalGateway, gotify: FakeGotify
) -> None:
    pushkey = api.register(gotify, delay=60)
    status, answer, calls = notify(gateway, synapse_body("message_dm_2_members.1.full", pushkey))
    assert (status, answer) == (200, {"rejected": []})
    assert calls == ["UpdateItem", "StartExecution"]


def test_coalesced_push_costs_one_call(api: Api, gateway: LocalGateway, gotify: FakeGotify) -> None:
    pushkey = api.register(gotify, delay=60)
    notify(gateway, synapse_body("message_group_3_members.1.full", pushkey))
    second = with_event_id(synapse_body("message_group_3_members.1.full", pushkey), "$second")
    status, _, calls = notify(gateway, second)
    assert status == 200
    assert calls == ["UpdateItem"]


def test_cancel_costs_two_calls(api: Api, gateway: LocalGateway, gotify: FakeGotify) -> None:
    pushkey = api.register(gotify, delay=60)
    notify(gateway, synapse_body("message_dm_2_members.1.full", pushkey))
    status, _, calls = notify(gateway, synapse_body("read_receipts_all_badge.2.full", pushkey))
    assert status == 200
    assert calls == ["UpdateItem", "StopExecution"]


def test_badge_with_nothing_pending_costs_one_call(
    api: Api, gateway: LocalGateway, gotify: FakeGotify
) -> None:
    pushkey = api.register(gotify, delay=60)
    _, _, calls = notify(gateway, synapse_body("read_receipts_all_badge.2.full", pushkey))
    assert calls == ["UpdateItem"]


def test_unknown_pushkey_costs_one_call(gateway: LocalGateway) -> None:
    status, answer, calls = notify(gateway, synapse_body("message_dm_2_members.1.full", "nobody"))
    assert (status, answer) == (200, {"rejected": ["nobody"]})
    assert calls == ["UpdateItem"]


def test_call_costs_two_calls(api: Api, gateway: LocalGateway, gotify: FakeGotify) -> None:
    pushkey = api.register(gotify, delay=60)
    _, _, calls = notify(gateway, synapse_body("call_invite_dm.1.full", pushkey))
    assert calls == ["UpdateItem", "StartExecution"]


def test_duplicate_costs_at_most_two_calls(
    api: Api, gateway: LocalGateway, gotify: FakeGotify
) -> None:
    pushkey = api.register(gotify, delay=60)
    first = synapse_body("message_group_3_members.1.full", pushkey)
    notify(gateway, first)
    joined = with_event_id(first, "$joined")
    notify(gateway, joined)
    # A duplicate of the event that opened the batch re-issues the (idempotent) start, in case
    # the first attempt's StartExecution failed; any other duplicate costs one call.
    _, _, opener_calls = notify(gateway, first)
    _, _, joined_calls = notify(gateway, joined)
    assert opener_calls == ["UpdateItem", "StartExecution"]
    assert joined_calls == ["UpdateItem"]
