"""Delay, cancel, coalesce and deliver: the real state machine definition under moto's ASL
interpreter, the real handlers, and a fake Gotify checking each request."""

from __future__ import annotations

import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from mxpush import wiring
from mxpush.delivery import sweep
from mxpush.errors import StoreUnavailable
from mxpush.store import DynamoStore
from mxpush_local.gateway import LocalGateway
from tests.conftest import GOTIFY_TOKEN, Api, synapse_body, wait_until, with_event_id
from tests.fakes.gotify import FakeGotify
from tests.fakes.server import Reply

pytestmark = pytest.mark.slow

DM = "message_dm_2_members.1.full"
GROUP = "message_group_3_members.1.full"
DM_EVENT = "$9YKtqgWbvfhsr99S2R_6S66iVIWunPAkPKPnHo_e5tI"


def outcomes(api: Api, pushkey: str) -> list[str]:
    return [entry["outcome"] for entry in api.deliveries(pushkey)]


def wait_for_outcome(
    api: Api, pushkey: str, outcome: str, timeout: float = 15
) -> list[dict[str, Any]]:
    return list(
        wait_until(lambda: [e for e in api.deliveries(pushkey) if e["outcome"] == outcome], timeout)
    )


def test_message_is_delivered_after_the_delay(api: Api, gotify: FakeGotify) -> None:
    pushkey = api.register(gotify, delay=2)
    sent_at = time.monotonic()
    assert api.notify(synapse_body(DM, pushkey)).body == {"rejected": []}
    assert gotify.requests == []  # the notify path never calls a backend

    [request] = gotify.wait_for(1, timeout=10)
    assert time.monotonic() - sent_at >= 1.9  # it waited for the delay
    assert request.path == "/gotify/message"
    assert request.headers["x-gotify-key"] == GOTIFY_TOKEN
    assert request.json() == {
        "title": "alice",
        "message": "hi, this is a DM",
        "priority": 6,
        "extras": {
            "client::display": {"contentType": "text/plain"},
            "client::notification": {
                "click": {
                    "url": "https://matrix.to/#/!YIkXvNfjndhc9gq49pm2feQdKxlW4LZTdsnotiA5TMg/"
                    + DM_EVENT
                }
            },
        },
    }
    [entry] = wait_for_outcome(api, pushkey, "delivered")
    assert entry["event_id"] == DM_EVENT
    time.sleep(1)
    assert len(gotify.requests) == 1


def test_read_receipt_cancels_the_pending_push(api: Api, gotify: FakeGotify) -> None:
    pushkey = api.register(gotify, delay=2)
    api.notify(synapse_body(DM, pushkey))

    answer = api.notify(synapse_body("read_receipts_all_badge.2.full", pushkey))
    assert answer.body == {"rejected": []}
    # Logged at once: the cancel's one write is the batch's outcome.
    [entry] = api.deliveries(pushkey)
    assert entry["outcome"] == "cancelled"
    assert entry["event_id"] == DM_EVENT
    time.sleep(3.5)  # past the delay and its slot: nothing may arrive
    assert gotify.requests == []
    assert outcomes(api, pushkey) == ["cancelled"]


def test_badge_only_cancels_only_when_unread_drops(api: Api, gotify: FakeGotify) -> None:
    pushkey = api.register(gotify, delay=2)
    api.notify(synapse_body(DM, pushkey))  # queued with unread = 2
    same = synapse_body("read_receipt_dm_badge.0.full", pushkey)
    same["notification"]["counts"]["unread"] = 2
    api.notify(same)  # not lower: the user read nothing of ours
    assert api.deliveries(pushkey) == []  # still pending
    api.notify(synapse_body("read_receipt_dm_badge.0.full", pushkey))  # unread 1 < 2
    assert outcomes(api, pushkey) == ["cancelled"]
    time.sleep(3.5)
    assert gotify.requests == []


def test_burst_becomes_one_push_saying_how_many(api: Api, gotify: FakeGotify) -> None:
    pushkey = api.register(gotify, delay=2)
    events = ["$burst-1", "$burst-2", "$burst-3"]
    for event_id in events:
        assert api.notify(with_event_id(synapse_body(GROUP, pushkey), event_id)).status == 200
    mention = with_event_id(synapse_body("message_group_mention.1.full", pushkey), "$burst-4")
    api.notify(mention)

    [request] = gotify.wait_for(1, timeout=10)
    message = request.json()
    assert message["title"] == "E2E Group: 4 new messages"
    assert message["message"] == "alice: bob: are you there?"
    assert message["priority"] == 7  # the mention raised the batch's priority
    time.sleep(1.5)
    assert len(gotify.requests) == 1
    entries = wait_for_outcome(api, pushkey, "delivered")
    assert [e["event_id"] for e in entries] == ["$burst-4"]
    coalesced = [e for e in api.deliveries(pushkey) if e["outcome"] == "coalesced"]
    assert sorted(e["event_id"] for e in coalesced) == events
    assert {e["delivered_with"] for e in coalesced} == {"$burst-4"}


def test_duplicate_notifications_push_once(api: Api, gotify: FakeGotify) -> None:
    pushkey = api.register(gotify, delay=1)
    body = synapse_body(DM, pushkey)
    for _ in range(3):
        assert api.notify(body).body == {"rejected": []}
    [request] = gotify.wait_for(1, timeout=10)
    assert request.json()["title"] == "alice"  # one message, not "3 new messages"
    wait_for_outcome(api, pushkey, "delivered")
    # Synapse retries when an answer was lost, also after the push went out.
    assert api.notify(body).body == {"rejected": []}
    time.sleep(2)
    assert len(gotify.requests) == 1
    [entry] = api.deliveries(pushkey)
    assert (entry["outcome"], entry["count"]) == ("delivered", 1)


def test_revoked_gotify_token_rejects_the_pushkey_next_time(api: Api, gotify: FakeGotify) -> None:
    pushkey = api.register(gotify, delay=0)
    gotify.revoke(GOTIFY_TOKEN)
    assert api.notify(synapse_body(DM, pushkey)).body == {"rejected": []}

    gotify.wait_for(1, timeout=10)
    [entry] = wait_for_outcome(api, pushkey, "rejected")
    assert "401" in entry["reason"]
    registration = api.request("GET", f"/api/v1/pushkeys/{pushkey}").body
    assert registration["status"] == "rejected"
    # The next event notification reports it, so Synapse deletes the pusher.
    answer = api.notify(synapse_body("message_group_3_members.1.full", pushkey))
    assert answer.body == {"rejected": [pushkey]}
    time.sleep(1)
    assert len(gotify.requests) == 1  # nothing more was sent to the dead token


def test_transient_failure_is_retried_then_delivered(api: Api, gotify: FakeGotify) -> None:
    gotify.queue(Reply(503, {"error": "Service Unavailable"}))
    pushkey = api.register(gotify, delay=0)
    api.notify(synapse_body(DM, pushkey))
    first, second = gotify.wait_for(2, timeout=15)
    assert first.json() == second.json()
    assert len(gotify.messages) == 1
    wait_for_outcome(api, pushkey, "delivered")
    assert outcomes(api, pushkey) == ["delivered"]


def test_permanent_failure_is_recorded_without_retry(api: Api, gotify: FakeGotify) -> None:
    gotify.queue(Reply(400, {"error": "Bad Request", "errorCode": 400, "errorDescription": "nope"}))
    pushkey = api.register(gotify, delay=0)
    api.notify(synapse_body(DM, pushkey))
    [entry] = wait_for_outcome(api, pushkey, "failed")
    assert "400" in entry["reason"]
    time.sleep(2.5)
    assert len(gotify.requests) == 1
    assert api.request("GET", f"/api/v1/pushkeys/{pushkey}").body["status"] == "active"


def test_call_skips_the_delay(api: Api, gotify: FakeGotify) -> None:
    pushkey = api.register(gotify, delay=60)
    api.notify(synapse_body(DM, pushkey))  # waits 60 s
    sent_at = time.monotonic()
    api.notify(synapse_body("call_invite_dm.1.full", pushkey))
    [request] = gotify.wait_for(1, timeout=10)
    assert time.monotonic() - sent_at < 30
    message = request.json()
    assert message["title"] == "Incoming call from alice"
    assert message["message"] == "Voice call"
    assert message["priority"] == 8
    time.sleep(1)
    assert len(gotify.requests) == 1  # the DM still waits


def test_event_id_only_push_invents_nothing(api: Api, gotify: FakeGotify) -> None:
    pushkey = api.register(gotify, delay=0)
    api.notify(synapse_body("message_dm_2_members.0.eio", pushkey))
    [request] = gotify.wait_for(1, timeout=10)
    message = request.json()
    assert message["title"] == "New message"
    assert message["message"] == "You have a new message."
    assert "alice" not in request.body.decode()


def test_a_read_after_the_claim_finds_the_push_gone(api: Api, gotify: FakeGotify) -> None:
    """The slot's sender claims the batch with a conditional write: a read that lands after
    the claim finds nothing to cancel (the push is on its way), and the push is delivered."""
    pushkey = api.register(gotify, delay=1)
    # The push stays in flight for a while after the claim.
    gotify.queue(Reply(200, {"id": 99, "appid": 1, "message": "m", "title": "t"}, delay=1.5))
    api.notify(synapse_body(DM, pushkey))
    wait_until(lambda: gotify.requests, timeout=10, interval=0.01)
    assert api.notify(synapse_body("read_receipts_all_badge.2.full", pushkey)).status == 200
    wait_for_outcome(api, pushkey, "delivered")
    assert outcomes(api, pushkey) == ["delivered"]
    assert len(gotify.requests) == 1


def test_throttled_start_execution_answers_200_and_the_push_goes_out_once(
    api: Api, gotify: FakeGotify, monkeypatch: pytest.MonkeyPatch
) -> None:
    """StartExecution throttled after the batch was stored: the batch is accepted (200, no
    Synapse back-off), the slot is marked unstarted, and the sweep delivers it exactly once."""
    since = int(time.time()) - 1  # only this test's slots
    pushkey = api.register(gotify, delay=1)
    client = wiring.scheduler()._client

    def throttled(**kwargs: Any) -> Any:
        raise ClientError(
            {"Error": {"Code": "ThrottlingException", "Message": "injected"}}, "StartExecution"
        )

    monkeypatch.setattr(client, "start_execution", throttled)
    body = synapse_body(DM, pushkey)
    assert api.notify(body).body == {"rejected": []}
    monkeypatch.undo()
    time.sleep(2.5)
    assert gotify.requests == []  # its slot never ran
    result = sweep(
        store=wiring.store(), senders=wiring.senders(), now=time.time() + 15, since=since
    )
    assert result["redriven_slots"] >= 1
    gotify.wait_for(1, timeout=10)
    assert api.notify(body).body == {"rejected": []}  # Synapse's retry: a duplicate
    wait_for_outcome(api, pushkey, "delivered")
    time.sleep(1.5)
    assert len(gotify.requests) == 1
    assert outcomes(api, pushkey) == ["delivered"]


def test_store_failure_answers_503(
    api: Api, gotify: FakeGotify, monkeypatch: pytest.MonkeyPatch
) -> None:
    pushkey = api.register(gotify, delay=0)

    def failing_accept(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("injected")

    monkeypatch.setattr(DynamoStore, "accept_event", failing_accept)
    answer = api.notify(synapse_body(DM, pushkey))
    assert answer.status == 503
    assert answer.body["errcode"] == "M_UNKNOWN"
    monkeypatch.undo()
    assert api.notify(synapse_body(DM, pushkey)).body == {"rejected": []}
    gotify.wait_for(1, timeout=10)


def test_read_at_once_after_the_message_cancels_it(api: Api, gotify: FakeGotify) -> None:
    """A badge right after the event (the execution has only just started) still cancels.
    The delay leaves a busy machine (CI, xdist) seconds to answer both notifies in time."""
    pushkey = api.register(gotify, delay=3)
    for i in range(5):
        event = with_event_id(synapse_body(DM, pushkey), f"$instant-{i}")
        assert api.notify(event).status == 200
        assert api.notify(synapse_body("read_receipts_all_badge.2.full", pushkey)).status == 200
    time.sleep(4.5)
    assert gotify.requests == []
    assert outcomes(api, pushkey) == ["cancelled"] * 5


def test_receiver_answer_reaches_the_owner_but_not_the_logs(
    api: Api, gotify: FakeGotify, caplog: pytest.LogCaptureFixture
) -> None:
    """A receiver may echo what it was sent in its error answer: the owner sees the answer in
    the delivery log, the logs only say who answered what status."""
    echo = "echoed: hi, this is a DM"
    gotify.queue(Reply(400, {"error": "Bad Request", "errorCode": 400, "errorDescription": echo}))
    pushkey = api.register(gotify, delay=0)
    with caplog.at_level("INFO"):
        api.notify(synapse_body(DM, pushkey))
        [entry] = wait_for_outcome(api, pushkey, "failed")
    assert entry["reason"].startswith("Gotify answered 400: ")
    assert echo in entry["reason"]
    assert "delivery failed" in caplog.text
    assert "hi, this is a DM" not in caplog.text


def test_a_failed_batch_keeps_its_events_duplicates(
    api: Api, gotify: FakeGotify, gateway: LocalGateway
) -> None:
    """The exactly-once hole of v1: a batch ending `failed` must leave its events recognised,
    so Synapse's retry of the same body is not delivered again."""
    gotify.queue(Reply(400, {"error": "Bad Request", "errorCode": 400, "errorDescription": "no"}))
    pushkey = api.register(gotify, delay=1)
    body = synapse_body(DM, pushkey)
    assert api.notify(body).status == 200
    wait_for_outcome(api, pushkey, "failed")
    assert api.notify(body).body == {"rejected": []}
    time.sleep(2.5)
    assert len(gotify.requests) == 1
    assert outcomes(api, pushkey) == ["failed"]
