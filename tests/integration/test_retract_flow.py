"""A read takes back what was delivered (issue 11), through local mode: the notify path opens a
retract item, the sender takes back what the delivery log says is shown, `/deliveries` logs
it `retracted`; the notify path's cost stays within two writes per read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from mxpush import wiring
from mxpush.ids import registration_id
from mxpush.retraction import notification_tag
from mxpush.store.models import item_size
from mxpush.store.notify_side import _batch_record
from mxpush_local.gateway import LocalGateway
from tests.conftest import Api, count_aws_calls, synapse_body, wait_until, with_event_id
from tests.fakes.gotify import FakeGotify
from tests.fakes.ntfy import FakeNtfy
from tests.fakes.server import Reply
from tests.fakes.webhook import FakeWebhook
from tests.integration.flow_support import register, wait_for_outcome

pytestmark = pytest.mark.slow

TOKEN = "tk_AgQdq7mVBoFD37zQVN29RhuMzNIz2"
TOPIC = "bob_retract"
DM = "message_dm_2_members.1.full"
GROUP = "message_group_3_members.1.full"
READ = "read_receipts_all_badge.2.full"
DM_ROOM = "!YIkXvNfjndhc9gq49pm2feQdKxlW4LZTdsnotiA5TMg"
GROUP_ROOM = "!bbQQMCPwmd9aM1RGdKYA_jwXJsIG1Mb_o6KwYXBITTU"
DM_EVENT = "$9YKtqgWbvfhsr99S2R_6S66iVIWunPAkPKPnHo_e5tI"


@pytest.fixture
def ntfy() -> Iterator[FakeNtfy]:
    server = FakeNtfy(prefix="/ntfy", tokens={TOKEN: "bob"}, grants={"bob": {TOPIC}}).start()
    yield server
    server.stop()


def register_ntfy(api: Api, ntfy: FakeNtfy, *, delay: int = 0, **options: object) -> str:
    return register(
        api,
        "ntfy",
        {"url": ntfy.topic_url(TOPIC), "token": TOKEN},
        delay=delay,
        options=options or None,
    )


def notify_counted(gateway: LocalGateway, body: dict[str, Any]) -> list[str]:
    with count_aws_calls() as counter:
        status, _, _ = gateway.handle(
            "POST",
            "/_matrix/push/v1/notify",
            {"Content-Type": "application/json"},
            json.dumps(body).encode(),
        )
    assert status == 200
    return counter.calls


def clears(ntfy: FakeNtfy) -> list[str]:
    return [r.path for r in ntfy.requests if r.method == "PUT"]


def test_read_clears_the_delivered_dm_and_logs_it(api: Api, ntfy: FakeNtfy) -> None:
    pushkey = register_ntfy(api, ntfy)
    api.notify(synapse_body(DM, pushkey))
    [published] = ntfy.wait_for(1)
    sid = published.json()["sequence_id"]
    assert sid == notification_tag(DM_ROOM)
    wait_for_outcome(api, pushkey, "delivered")

    api.notify(synapse_body(READ, pushkey))

    ntfy.wait_for(1, predicate=lambda r: r.method == "PUT")
    assert clears(ntfy) == [f"/ntfy/{TOPIC}/{sid}/clear"]
    [entry] = wait_for_outcome(api, pushkey, "retracted")
    assert entry["kind"] == "retract" and entry["room_ids"] == [DM_ROOM]
    assert entry["count"] == 0 and "event_id" not in entry
    assert ntfy.shown == {}


def test_a_second_dm_in_the_room_replaces_and_a_second_read_costs_nothing(
    api: Api, ntfy: FakeNtfy, gateway: LocalGateway
) -> None:
    pushkey = register_ntfy(api, ntfy)
    api.notify(synapse_body(DM, pushkey))
    api.notify(with_event_id(synapse_body(DM, pushkey), "$second-dm"))
    first, second = ntfy.wait_for(2)
    assert first.json()["sequence_id"] == second.json()["sequence_id"]
    assert len(ntfy.shown) == 1
    wait_until(lambda: len(wait_for_outcome(api, pushkey, "delivered")) == 2)

    assert notify_counted(gateway, synapse_body(READ, pushkey)) == ["Query", "PutItem", "Invoke"]
    wait_for_outcome(api, pushkey, "retracted")
    # The one notification is cleared once.
    assert len(clears(ntfy)) == 1
    # Nothing delivered since: the next read is the Query alone.
    assert notify_counted(gateway, synapse_body(READ, pushkey)) == ["Query"]


def test_read_that_cancels_and_retracts_does_both_within_two_write_units(
    api: Api, ntfy: FakeNtfy, gateway: LocalGateway
) -> None:
    pushkey = register_ntfy(api, ntfy, delay=60)
    api.notify(synapse_body("call_invite_dm.1.full", pushkey))  # goes out at once
    ntfy.wait_for(1)
    wait_for_outcome(api, pushkey, "delivered")
    api.notify(synapse_body(GROUP, pushkey))  # waits 60 s

    calls = notify_counted(gateway, synapse_body(READ, pushkey))

    assert calls == ["Query", "PutItem", "UpdateItem", "Invoke"]
    wait_for_outcome(api, pushkey, "cancelled")
    wait_for_outcome(api, pushkey, "retracted")
    ntfy.wait_for(1, predicate=lambda r: r.method == "PUT")
    # Write units: the retract item and the cancelled batch, each under 1 KB.
    store = wiring.store()
    view = store.read_pushkey(registration_id(pushkey))
    sizes = {
        b.kind or b.st: item_size(_batch_record(b, store.log_retention_seconds))
        for b in view.batches
    }
    assert sizes["retract"] < 1024 and sizes["cancelled"] < 1024


def test_nothing_delivered_means_no_write_beyond_the_cancel(
    api: Api, ntfy: FakeNtfy, gateway: LocalGateway
) -> None:
    pushkey = register_ntfy(api, ntfy, delay=60)
    api.notify(synapse_body(DM, pushkey))

    assert notify_counted(gateway, synapse_body(READ, pushkey)) == ["Query", "UpdateItem"]
    assert ntfy.requests == []


def test_options_retract_false_keeps_delivered_pushes(
    api: Api, ntfy: FakeNtfy, gateway: LocalGateway
) -> None:
    pushkey = register_ntfy(api, ntfy, retract=False, group_by_room=False)
    api.notify(synapse_body(DM, pushkey))
    [published] = ntfy.wait_for(1)
    assert published.json()["sequence_id"] == notification_tag(DM_EVENT)
    wait_for_outcome(api, pushkey, "delivered")
    shown = api.request("GET", f"/api/v1/pushkeys/{pushkey}").body["options"]
    assert (shown["retract"], shown["group_by_room"]) == (False, False)

    assert notify_counted(gateway, synapse_body(READ, pushkey)) == ["Query"]


def test_lower_but_nonzero_unread_takes_nothing_back(
    api: Api, ntfy: FakeNtfy, gateway: LocalGateway
) -> None:
    pushkey = register_ntfy(api, ntfy)
    api.notify(synapse_body(DM, pushkey))
    ntfy.wait_for(1)
    wait_for_outcome(api, pushkey, "delivered")
    read = synapse_body(READ, pushkey)
    read["notification"]["counts"] = {"unread": 1}

    assert notify_counted(gateway, read) == ["Query"]


def test_gotify_with_a_client_token_deletes_the_delivered_message(
    api: Api, gotify: FakeGotify
) -> None:
    pushkey = register(
        api,
        "gotify",
        {"url": gotify.base_url, "token": "AppToken.Valid1", "client_token": "ClientToken.Valid1"},
    )
    api.notify(synapse_body(DM, pushkey))
    gotify.wait_for(1)
    wait_for_outcome(api, pushkey, "delivered")
    message_id = gotify.messages[0]["id"]

    api.notify(synapse_body(READ, pushkey))

    [delete] = gotify.wait_for(1, predicate=lambda r: r.method == "DELETE")
    assert delete.path == f"/gotify/message/{message_id}"
    assert delete.headers["x-gotify-key"] == "ClientToken.Valid1"
    wait_for_outcome(api, pushkey, "retracted")
    assert gotify.messages == []


def test_gotify_without_a_client_token_takes_nothing_back(
    api: Api, gotify: FakeGotify, gateway: LocalGateway
) -> None:
    pushkey = register(api, "gotify", {"url": gotify.base_url, "token": "AppToken.Valid1"})
    api.notify(synapse_body(DM, pushkey))
    gotify.wait_for(1)
    wait_for_outcome(api, pushkey, "delivered")

    assert notify_counted(gateway, synapse_body(READ, pushkey)) == ["Query"]


def test_webhook_retraction_is_retried_like_a_push(api: Api) -> None:
    hook = FakeWebhook().start()
    try:
        pushkey = register(api, "webhook", {"url": hook.hook_url})
        api.notify(synapse_body(DM, pushkey))
        hook.wait_for(1)
        wait_for_outcome(api, pushkey, "delivered")
        hook.queue(Reply(503, {"error": "busy"}))

        api.notify(synapse_body(READ, pushkey))

        wait_for_outcome(api, pushkey, "retracted", timeout=30)
        retracts = [d for d in hook.documents if d["kind"] == "retract"]
        assert retracts == [
            {
                "type": "mxpush.notification",
                "version": 1,
                "kind": "retract",
                "room_ids": [DM_ROOM],
                "event_ids": [DM_EVENT],
                "counts": {"unread": 0},
                "timestamp": retracts[0]["timestamp"],
            }
        ]
        assert len([r for r in hook.requests if b'"retract"' in r.body]) == 2
    finally:
        hook.stop()
