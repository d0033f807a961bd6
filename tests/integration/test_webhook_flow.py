"""The webhook through local mode: registration over the API, the real state machine (with the
webhook's own, longer retry), a receiver that checks the document and the signature."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mxpush.delivery import FIRST_RETRY_SECONDS
from tests.conftest import Api, synapse_body
from tests.fakes.server import Reply
from tests.fakes.webhook import FakeWebhook, verify
from tests.integration.flow_support import outcomes, register, wait_for_outcome

pytestmark = pytest.mark.slow

SECRET = "7d1c4b0e-receiver-secret"
HEADERS = {"Authorization": "Bearer receiver-token-123"}
DM = "message_dm_2_members.1.full"
DM_ROOM = "!YIkXvNfjndhc9gq49pm2feQdKxlW4LZTdsnotiA5TMg"
DM_EVENT = "$9YKtqgWbvfhsr99S2R_6S66iVIWunPAkPKPnHo_e5tI"
ASL = Path(__file__).resolve().parents[2] / "statemachine" / "retry.asl.json"


@pytest.fixture
def hook() -> Iterator[FakeWebhook]:
    server = FakeWebhook(
        secret=SECRET, required_headers={"authorization": "Bearer receiver-token-123"}
    ).start()
    yield server
    server.stop()


def register_hook(api: Api, hook: FakeWebhook, **options: Any) -> str:
    target = {"url": hook.hook_url, "secret": SECRET, "headers": HEADERS}
    return register(api, "webhook", target, options=options or None)


def test_dm_is_posted_signed_with_the_documented_fields(api: Api, hook: FakeWebhook) -> None:
    pushkey = register_hook(api, hook)
    assert api.notify(synapse_body(DM, pushkey)).body == {"rejected": []}

    [request] = hook.wait_for(1)
    assert verify(SECRET, request.body, request.headers["x-mxpush-signature"])
    assert request.headers["authorization"] == "Bearer receiver-token-123"
    document = request.json()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", document.pop("timestamp"))
    assert document == {
        "type": "mxpush.notification",
        "version": 1,
        "kind": "message",
        "event_id": DM_EVENT,
        "event_ids": [DM_EVENT],
        "count": 1,
        "room_id": DM_ROOM,
        "room_name": None,
        "sender": "@alice:localhost",
        "sender_display_name": "alice",
        "event_type": "m.room.message",
        "msgtype": "m.text",
        "title": "alice",
        "body": "hi, this is a DM",
        "text": "hi, this is a DM",
        "counts": {"unread": 2},
        "click_url": f"https://matrix.to/#/{DM_ROOM}/{DM_EVENT}",
        "priority": 3,
        "urgency": "high",
    }
    wait_for_outcome(api, pushkey, "delivered")
    assert len(hook.documents) == 1


def test_withheld_content_and_secrets_in_api_answers(api: Api, hook: FakeWebhook) -> None:
    pushkey = register_hook(api, hook, include_content=False)
    shown = api.request("GET", f"/api/v1/pushkeys/{pushkey}").body["target"]
    assert shown == {
        "url": hook.hook_url,
        "secret": "****ret",
        "headers": {"Authorization": "****123"},
    }
    api.notify(synapse_body(DM, pushkey))

    [request] = hook.wait_for(1)
    assert "hi, this is a DM" not in request.body.decode()
    assert request.json()["text"] is None


def test_gone_endpoint_rejects_the_pushkey_at_the_next_notification(
    api: Api, hook: FakeWebhook
) -> None:
    hook.queue(Reply(410, {"error": "this hook was deleted"}))
    pushkey = register_hook(api, hook)
    api.notify(synapse_body(DM, pushkey))

    [entry] = wait_for_outcome(api, pushkey, "rejected")
    assert "410" in entry["reason"]
    answer = api.notify(synapse_body("message_group_3_members.1.full", pushkey))
    assert answer.body == {"rejected": [pushkey]}
    time.sleep(1)
    assert len(hook.requests) == 1


def test_failing_receiver_is_retried_until_it_answers_2xx(api: Api, hook: FakeWebhook) -> None:
    hook.queue(Reply(503, {"error": "restarting"}))
    pushkey = register_hook(api, hook)
    api.notify(synapse_body(DM, pushkey))

    first, second = hook.wait_for(2, timeout=20)
    # The same document, re-signed (its timestamp is the time of sending).
    assert {**first.json(), "timestamp": ""} == {**second.json(), "timestamp": ""}
    assert verify(SECRET, second.body, second.headers["x-mxpush-signature"])
    wait_for_outcome(api, pushkey, "delivered")
    assert len(hook.documents) == 1
    assert outcomes(api, pushkey) == ["delivered"]


def test_webhook_retry_window_is_bounded_to_about_eleven_minutes() -> None:
    """The first attempt (in its slot), the retry execution's backoff, then its Retry."""
    state = json.loads(ASL.read_text())["States"]["SendWebhook"]
    [retry] = [r for r in state["Retry"] if "TransientDeliveryError" in r["ErrorEquals"]]
    waits = [FIRST_RETRY_SECONDS["webhook"]] + [
        min(retry["IntervalSeconds"] * retry["BackoffRate"] ** n, retry["MaxDelaySeconds"])
        for n in range(retry["MaxAttempts"])
    ]

    assert waits == [3, 6, 12, 24, 48, 96, 192, 300]
    assert 10 * 60 <= sum(waits) <= 15 * 60
