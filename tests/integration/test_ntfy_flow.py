"""ntfy through local mode: registration over the API, the real state machine, a fake ntfy."""

from __future__ import annotations

import time

import pytest

from mxpush.retraction import notification_tag
from tests.conftest import NTFY_TOKEN, NTFY_TOPIC, Api, synapse_body
from tests.fakes.ntfy import FakeNtfy, ntfy_error
from tests.integration.flow_support import outcomes, register, wait_for_outcome

pytestmark = pytest.mark.slow

TOKEN = NTFY_TOKEN  # the conftest `ntfy` server's
TOPIC = NTFY_TOPIC
DM = "message_dm_2_members.1.full"
DM_ROOM = "!YIkXvNfjndhc9gq49pm2feQdKxlW4LZTdsnotiA5TMg"
DM_EVENT = "$9YKtqgWbvfhsr99S2R_6S66iVIWunPAkPKPnHo_e5tI"
CALL_EVENT = "$bObJ4sJMXlYweZxqmA6OVwGsSZZlM0cpBmzPhmED5ac"


def register_ntfy(api: Api, ntfy: FakeNtfy, **options: object) -> str:
    return register(
        api, "ntfy", {"url": ntfy.topic_url(TOPIC), "token": TOKEN}, options=options or None
    )


def test_dm_is_published_as_ntfy_expects(api: Api, ntfy: FakeNtfy) -> None:
    pushkey = register_ntfy(api, ntfy)
    assert api.notify(synapse_body(DM, pushkey)).body == {"rejected": []}

    [request] = ntfy.wait_for(1)
    assert (request.method, request.path) == ("POST", "/ntfy/")
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.json() == {
        "topic": TOPIC,
        "title": "alice",
        "message": "hi, this is a DM",
        "priority": 3,
        "tags": ["speech_balloon"],
        "click": f"https://matrix.to/#/{DM_ROOM}/{DM_EVENT}",
        "sequence_id": notification_tag(DM_ROOM),
    }
    [entry] = wait_for_outcome(api, pushkey, "delivered")
    assert entry["event_id"] == DM_EVENT
    assert [m["title"] for m in ntfy.messages] == ["alice"]


def test_call_with_options_goes_out_urgent(api: Api, ntfy: FakeNtfy) -> None:
    pushkey = register_ntfy(
        api,
        ntfy,
        click_url="element://vector/webapp/#/room/{room_id}",
        markdown=True,
        include_content=False,
        priority={"call": 4},
    )
    api.notify(synapse_body("call_invite_dm.1.full", pushkey))

    [request] = ntfy.wait_for(1)
    assert request.json() == {
        "topic": TOPIC,
        "title": "Incoming call from alice",
        "message": "Voice call",
        "priority": 4,
        "tags": ["telephone_receiver"],
        "click": f"element://vector/webapp/#/room/{DM_ROOM}",
        "markdown": True,
        "sequence_id": notification_tag(CALL_EVENT),  # a call keeps its own notification
    }


def test_registration_masks_the_token_and_checks_the_topic(api: Api, ntfy: FakeNtfy) -> None:
    pushkey = register_ntfy(api, ntfy)
    shown = api.request("GET", f"/api/v1/pushkeys/{pushkey}").body
    assert shown["target"] == {"url": ntfy.topic_url(TOPIC), "token": "****Iz2"}

    bad = api.request(
        "POST",
        "/api/v1/pushkeys",
        {"backend": "ntfy", "target": {"url": ntfy.topic_url("no.dots"), "token": TOKEN}},
    )
    assert bad.status == 400
    assert bad.body["errcode"] == "M_INVALID_PARAM"
    assert bad.body["error"].startswith("target.url:")
    assert ntfy.requests == []


def test_test_push_arrives(api: Api, ntfy: FakeNtfy) -> None:
    pushkey = register_ntfy(api, ntfy)
    answer = api.request("POST", f"/api/v1/pushkeys/{pushkey}/test")
    assert answer.body == {"outcome": "delivered"}
    assert ntfy.messages[0]["title"] == "mxpush test"


def test_revoked_token_rejects_the_pushkey_at_the_next_notification(
    api: Api, ntfy: FakeNtfy
) -> None:
    pushkey = register_ntfy(api, ntfy)
    ntfy.revoke_token(TOKEN)
    assert api.notify(synapse_body(DM, pushkey)).body == {"rejected": []}

    [entry] = wait_for_outcome(api, pushkey, "rejected")
    assert "401" in entry["reason"]
    assert TOKEN not in entry["reason"]
    assert api.request("GET", f"/api/v1/pushkeys/{pushkey}").body["status"] == "rejected"
    answer = api.notify(synapse_body("message_group_3_members.1.full", pushkey))
    assert answer.body == {"rejected": [pushkey]}
    time.sleep(1)
    assert len(ntfy.requests) == 1  # nothing more was sent with the dead token


def test_overloaded_server_is_retried_and_delivers_once(api: Api, ntfy: FakeNtfy) -> None:
    ntfy.queue(ntfy_error(503, 50301, "service unavailable"))
    pushkey = register_ntfy(api, ntfy)
    api.notify(synapse_body(DM, pushkey))

    first, second = ntfy.wait_for(2, timeout=15)
    assert first.json() == second.json()
    wait_for_outcome(api, pushkey, "delivered")
    assert len(ntfy.messages) == 1
    assert outcomes(api, pushkey) == ["delivered"]
