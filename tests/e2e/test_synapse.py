"""A real Synapse 1.163.2 drives mxpush's local mode end to end.

Every scenario has fresh users (alice writes to bob in a DM) and a fresh fake Gotify, so no
earlier scenario's pusher, room or pending push can interfere. Pushes are awaited by polling with
timeouts; the only sleeps are bounded waits after a push (or a cancel) to check that nothing more
arrives.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from mxpush import wiring
from mxpush.errors import StoreUnavailable
from mxpush.ids import registration_id
from mxpush.retraction import notification_tag
from mxpush.store import DynamoStore
from mxpush_local.gateway import LocalGateway
from tests.conftest import GOTIFY_TOKEN, wait_until
from tests.e2e.conftest import NOTIFY_PATH, Exchange, Scene
from tests.fakes.ntfy import FakeNtfy
from tests.fakes.smtp import FakeSmtp

DELAY = 3
# After a push (or a cancel): how long nothing more may arrive.
QUIET = 2.0
# Seconds after the Gotify push before the email channel escalates.
ESCALATION = 3
# What Element sends for a voice call.
CALL_CONTENT: dict[str, Any] = {
    "call_id": "e2e-call-1",
    "lifetime": 60000,
    "offer": {
        "type": "offer",
        "sdp": "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\n",
    },
    "version": "1",
    "party_id": "ALICEDEVICE",
}
LATENCY_SAMPLES = 10
NTFY_TOKEN = "tk_E2eBobRetract0000000000000000"


def for_event(event_id: str) -> Callable[[Exchange], bool]:
    return lambda exchange: exchange.event_id == event_id


def badge_for(pushkey: str) -> Callable[[Exchange], bool]:
    def matches(exchange: Exchange) -> bool:
        devices = exchange.notification.get("devices") or []
        return exchange.badge_only and any(d.get("pushkey") == pushkey for d in devices)

    return matches


def click_url(room_id: str, event_id: str) -> str:
    return f"https://matrix.to/#/{room_id}/{event_id}"


def quiet_until(deadline: float) -> None:
    """Let time pass up to `deadline` (monotonic), so that a push that should not come would
    have arrived by then."""
    remaining = deadline - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)


# --- Scenarios ----------------------------------------------------------------------------------


def test_registration_with_matrix_token_sets_the_pusher(
    scene: Scene, gateway: LocalGateway
) -> None:
    """bob registers a Gotify target with his Matrix token: Synapse's pusher points at mxpush"""
    assert scene.matrix.pushers(scene.bob) == []
    answer = scene.register(delay=DELAY)

    [pusher] = scene.matrix.pushers(scene.bob)
    assert pusher["kind"] == "http"
    assert pusher["pushkey"] == answer["pushkey"]
    assert pusher["app_id"] == answer["app_id"] == "org.mxpush.gotify"
    assert pusher["data"] == {"url": gateway.url + NOTIFY_PATH}
    assert pusher["device_display_name"] == "Bob's phone"
    # mxpush knows whose it is: bob sees it with his own token.
    listed = scene.api.request("GET", "/api/v1/pushkeys", token=scene.bob.access_token)
    assert listed.status == 200, listed.body
    [mine] = listed.body["pushkeys"]
    assert (mine["pushkey"], mine["owner"]) == (answer["pushkey"], scene.bob.user_id)
    assert mine["pusher_registered"] is True
    assert scene.gotify.requests == []


def test_dm_message_is_pushed_once_after_the_delay(scene: Scene) -> None:
    """alice's DM reaches Gotify once, after the delay, with the right title and text"""
    pushkey = scene.register(delay=DELAY)["pushkey"]
    # No "bob" in the text: Synapse would flag it as a mention of his display name.
    event_id = scene.matrix.send_text(scene.alice, scene.room, "lunch at noon?")
    sent = time.monotonic()

    [request] = scene.gotify.wait_for(1, timeout=DELAY + 15)
    assert scene.gotify.arrivals[0] - sent >= DELAY - 0.05, "pushed before the delay"
    assert request.path == "/gotify/message"
    assert request.headers["x-gotify-key"] == GOTIFY_TOKEN
    message = request.json()
    assert message["title"] == "Alice"
    assert message["message"] == "lunch at noon?"
    assert message["priority"] == 6  # Synapse sends DMs with prio high
    click = message["extras"]["client::notification"]["click"]["url"]
    assert click == click_url(scene.room, event_id)

    [entry] = scene.wait_for_outcome(pushkey, "delivered")
    assert entry["event_id"] == event_id
    [exchange] = scene.notify_log.matching(for_event(event_id))
    assert (exchange.status, exchange.answer) == (200, {"rejected": []})
    quiet_until(time.monotonic() + QUIET)
    assert len(scene.gotify.requests) == 1


def test_read_within_the_delay_sends_nothing(scene: Scene) -> None:
    """bob reads within the delay (a real read receipt): no push"""
    pushkey = scene.register(delay=DELAY)["pushkey"]
    event_id = scene.matrix.send_text(scene.alice, scene.room, "did you see this?")
    sent = time.monotonic()
    scene.notify_log.wait_for(for_event(event_id), timeout=10)

    scene.matrix.read_receipt(scene.bob, scene.room, event_id)
    [badge] = scene.notify_log.wait_for(badge_for(pushkey), timeout=10)
    assert badge.at - sent < DELAY, "the read receipt reached mxpush only after the delay"
    assert badge.notification["type"] is None
    assert badge.notification["counts"] == {"unread": 0}
    assert badge.status == 200

    [entry] = scene.wait_for_outcome(pushkey, "cancelled")
    assert entry["event_id"] == event_id
    quiet_until(sent + DELAY + QUIET)
    assert scene.gotify.requests == []
    assert [e["outcome"] for e in scene.deliveries(pushkey)] == ["cancelled"]


def test_read_after_the_push_clears_it_on_ntfy_and_a_second_dm_replaces(scene: Scene) -> None:
    """a DM goes out to ntfy; bob reads it (a real read receipt): ntfy gets the clear for that
    room's sequence id; the next DM in the room carries the same sequence id"""
    ntfy = FakeNtfy(prefix="/ntfy", tokens={NTFY_TOKEN: "bob"}, grants={"bob": {"bob_e2e"}})
    ntfy.start()
    try:
        body = {
            "backend": "ntfy",
            "target": {"url": ntfy.topic_url("bob_e2e"), "token": NTFY_TOKEN},
            "delay_seconds": 0,
            "pusher": {"device_display_name": "Bob's phone", "lang": "en"},
        }
        answer = scene.api.request("POST", "/api/v1/pushkeys", body, token=scene.bob.access_token)
        assert answer.status == 201, answer.body
        pushkey = answer.body["pushkey"]
        sid = notification_tag(scene.room)

        first = scene.matrix.send_text(scene.alice, scene.room, "are you around?")
        [published] = ntfy.wait_for(1, timeout=15)
        assert published.json()["sequence_id"] == sid
        assert published.json()["message"] == "are you around?"
        scene.wait_for_outcome(pushkey, "delivered")

        scene.matrix.read_receipt(scene.bob, scene.room, first)
        [badge] = scene.notify_log.wait_for(badge_for(pushkey), timeout=10)
        assert badge.notification["counts"] == {"unread": 0}
        [clear] = ntfy.wait_for(1, timeout=15, predicate=lambda r: r.method == "PUT")
        assert clear.path == f"/ntfy/bob_e2e/{sid}/clear"
        assert clear.headers["authorization"] == f"Bearer {NTFY_TOKEN}"
        [entry] = scene.wait_for_outcome(pushkey, "retracted")
        assert entry["room_ids"] == [scene.room]
        assert ntfy.shown == {}

        scene.matrix.send_text(scene.alice, scene.room, "one more thing")
        ntfy.wait_for(2, timeout=15, predicate=lambda r: r.method == "POST")
        second = [r for r in ntfy.requests if r.method == "POST"][1]
        assert second.json()["sequence_id"] == sid
        assert list(ntfy.shown) == [("bob_e2e", sid)]
    finally:
        ntfy.stop()


def test_burst_is_one_push_saying_how_many(scene: Scene) -> None:
    """a burst of messages: one push that says how many"""
    pushkey = scene.register(delay=DELAY)["pushkey"]
    texts = ["one", "two", "three", "four"]
    event_ids = [scene.matrix.send_text(scene.alice, scene.room, text) for text in texts]

    [request] = scene.gotify.wait_for(1, timeout=DELAY + 15)
    message = request.json()
    assert message["title"] == "Alice: 4 new messages"
    assert message["message"] == "four"  # the latest
    click = message["extras"]["client::notification"]["click"]["url"]
    assert click == click_url(scene.room, event_ids[-1])

    [delivered] = scene.wait_for_outcome(pushkey, "delivered")
    assert delivered["event_id"] == event_ids[-1]
    coalesced = scene.wait_for_outcome(pushkey, "coalesced", count=3)
    assert sorted(e["event_id"] for e in coalesced) == sorted(event_ids[:-1])
    quiet_until(time.monotonic() + QUIET)
    assert len(scene.gotify.requests) == 1


def test_call_invite_is_pushed_at_once_with_high_priority(scene: Scene) -> None:
    """m.call.invite: a push at once, high priority"""
    scene.register(delay=60)  # a message would wait a minute; the call must not
    event_id = scene.matrix.send(scene.alice, scene.room, "m.call.invite", CALL_CONTENT)
    sent = time.monotonic()

    [request] = scene.gotify.wait_for(1, timeout=10)
    assert scene.gotify.arrivals[0] - sent < 5, "the call waited"
    message = request.json()
    assert message["title"] == "Incoming call from Alice"
    assert message["message"] == "Voice call"
    assert message["priority"] == 8  # mxpush's call priority, above mentions (7) and DMs (6)
    # What Synapse's default push rules made of it (the push can beat the notify answer).
    [exchange] = scene.notify_log.wait_for(for_event(event_id), timeout=5)
    notification = exchange.notification
    assert notification["type"] == "m.call.invite"
    assert notification["prio"] == "high"
    assert notification["devices"][0]["tweaks"]["sound"] == "ring"


def test_revoked_gotify_token_makes_synapse_remove_the_pusher(scene: Scene) -> None:
    """the Gotify token is revoked (Gotify answers 401): Synapse removes the pusher by itself"""
    pushkey = scene.register(delay=0)["pushkey"]
    scene.gotify.revoke(GOTIFY_TOKEN)

    scene.matrix.send_text(scene.alice, scene.room, "are you there?")
    [refused] = scene.gotify.wait_for(1, timeout=15)
    assert refused.headers["x-gotify-key"] == GOTIFY_TOKEN
    [entry] = scene.wait_for_outcome(pushkey, "rejected")
    assert "401" in entry["reason"]
    # Synapse learns it from mxpush's answer to the next event notification.
    assert [p["pushkey"] for p in scene.matrix.pushers(scene.bob)] == [pushkey]

    second = scene.matrix.send_text(scene.alice, scene.room, "hello?")
    [exchange] = scene.notify_log.wait_for(for_event(second), timeout=15)
    assert (exchange.status, exchange.answer) == (200, {"rejected": [pushkey]})
    wait_until(lambda: scene.matrix.pushers(scene.bob) == [], timeout=15, interval=0.2)
    assert len(scene.gotify.requests) == 1  # nothing more went to the dead token


def test_one_5xx_is_retried_by_synapse_and_pushed_once(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mxpush answers 5xx once (a store fault): Synapse retries, one push arrives"""
    pushkey = scene.register(delay=0)["pushkey"]
    failures = ["store fault injected by the e2e test"]
    accept_event = DynamoStore.accept_event

    def failing_accept(store: DynamoStore, rid: str, *args: Any, **kwargs: Any) -> Any:
        if rid == registration_id(pushkey) and failures:
            raise StoreUnavailable(failures.pop())
        return accept_event(store, rid, *args, **kwargs)

    monkeypatch.setattr(DynamoStore, "accept_event", failing_accept)

    event_id = scene.matrix.send_text(scene.alice, scene.room, "this one needs a retry")
    scene.notify_log.wait_for(lambda e: e.event_id == event_id and e.status == 200, timeout=20)
    attempts = scene.notify_log.matching(for_event(event_id))
    assert [e.status for e in attempts] == [503, 200], [e.line() for e in attempts]
    assert attempts[0].answer["errcode"] == "M_UNKNOWN"
    assert attempts[1].at - attempts[0].at >= 0.5  # Synapse's backoff (1 s)
    assert attempts[1].body == attempts[0].body  # the same notification, again

    [request] = scene.gotify.wait_for(1, timeout=15)
    assert request.json()["message"] == "this one needs a retry"
    [entry] = scene.wait_for_outcome(pushkey, "delivered")
    assert entry["event_id"] == event_id
    quiet_until(time.monotonic() + QUIET)
    assert len(scene.gotify.requests) == 1


def test_a_scheduling_fault_is_no_5xx_and_the_push_goes_out_once(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    """the sender cannot be invoked at once: no 5xx (Synapse is not held up), the next slot
    delivers it, once"""
    pushkey = scene.register(delay=0)["pushkey"]
    client = wiring.senders()._client
    invoke = client.invoke
    failures = ["invoke fault injected by the e2e test"]

    def failing_invoke(**kwargs: Any) -> Any:
        if failures:
            raise ClientError(
                {"Error": {"Code": "ServiceException", "Message": failures.pop()}}, "Invoke"
            )
        return invoke(**kwargs)

    monkeypatch.setattr(client, "invoke", failing_invoke)
    event_id = scene.matrix.send_text(scene.alice, scene.room, "this one takes the slot")
    scene.notify_log.wait_for(lambda e: e.event_id == event_id and e.status == 200, timeout=20)
    assert [e.status for e in scene.notify_log.matching(for_event(event_id))] == [200]
    [request] = scene.gotify.wait_for(1, timeout=15)
    assert request.json()["message"] == "this one takes the slot"
    scene.wait_for_outcome(pushkey, "delivered")
    quiet_until(time.monotonic() + QUIET)
    assert len(scene.gotify.requests) == 1


def test_event_id_only_pusher_push_invents_nothing(scene: Scene) -> None:
    """an event_id_only pusher: a push with no invented content"""
    pushkey = scene.register(delay=0, pusher={"format": "event_id_only"})["pushkey"]
    [pusher] = scene.matrix.pushers(scene.bob)
    assert pusher["data"]["format"] == "event_id_only"

    event_id = scene.matrix.send_text(scene.alice, scene.room, "the secret plan")
    [exchange] = scene.notify_log.wait_for(for_event(event_id), timeout=10)
    sent_fields = set(exchange.notification)
    assert not sent_fields & {"content", "sender", "sender_display_name", "type", "room_name"}

    [request] = scene.gotify.wait_for(1, timeout=15)
    message = request.json()
    assert message["title"] == "New message"
    assert message["message"] == "You have a new message."
    raw = request.body.decode()
    for invented in ("secret", "Alice", scene.alice.user_id, "m.room.message"):
        assert invented not in raw
    [entry] = scene.wait_for_outcome(pushkey, "delivered")
    assert entry["event_id"] == event_id


def test_latency_from_send_to_gotify_with_delay_0(scene: Scene, figures: list[str]) -> None:
    """median time from alice's send returning to Gotify receiving the push (delay 0)"""
    pushkey = scene.register(delay=0)["pushkey"]
    to_gotify: list[float] = []
    to_accepted: list[float] = []  # the part until mxpush has answered Synapse's notify
    for n in range(1, LATENCY_SAMPLES + 1):
        event_id = scene.matrix.send_text(scene.alice, scene.room, f"ping {n}")
        returned = time.monotonic()
        request = scene.gotify.wait_for(n, timeout=15)[-1]
        to_gotify.append(scene.gotify.arrivals[n - 1] - returned)
        assert request.json()["message"] == f"ping {n}"
        # With delay 0 the sender can reach Gotify before the notify handler has returned.
        [exchange] = scene.notify_log.wait_for(for_event(event_id), timeout=5)
        to_accepted.append(exchange.at - returned)
        # The batch is closed before the next message, so each message is its own push.
        scene.wait_for_outcome(pushkey, "delivered", count=n)

    median = statistics.median(to_gotify)
    line = (
        f"latency, alice's PUT /send returned -> fake Gotify received the push (delay 0, "
        f"{LATENCY_SAMPLES} DMs one at a time): median {median * 1000:.0f} ms, "
        f"min {min(to_gotify) * 1000:.0f} ms, max {max(to_gotify) * 1000:.0f} ms; "
        f"of which until mxpush answered Synapse's notify: median "
        f"{statistics.median(to_accepted) * 1000:.0f} ms"
    )
    samples = ", ".join(f"{t * 1000:.0f}" for t in to_gotify)
    print(f"{line}\nsamples (ms): {samples}")
    figures.append(line)
    assert median < 2.0, line


def test_an_unread_dm_escalates_from_gotify_to_an_email(scene: Scene, smtp: FakeSmtp) -> None:
    """bob's registration: Gotify first, email 3 s later if still unread. alice's DM, left
    unread: Gotify gets the push, then the local SMTP server gets one digest mail"""
    address = f"bob.{int(time.time())}@example.org"
    body = {
        "channels": [
            {"backend": "gotify", "target": {"url": scene.gotify.base_url, "token": GOTIFY_TOKEN}},
            {"backend": "email", "target": {"to": address}, "after_seconds": ESCALATION},
        ],
        "mode": "fallback",
        "delay_seconds": 1,
        "pusher": {"device_display_name": "Bob's phone", "lang": "en"},
    }
    answer = scene.api.request("POST", "/api/v1/pushkeys", body, token=scene.bob.access_token)
    assert answer.status == 201, answer.body
    assert answer.body["pusher_registered"] is True, answer.body
    pushkey = answer.body["pushkey"]

    event_id = scene.matrix.send_text(scene.alice, scene.room, "call me when you can")
    [pushed] = scene.gotify.wait_for(1, timeout=15)
    pushed_at = time.monotonic()
    assert pushed.json()["message"] == "call me when you can"

    [mail] = smtp.wait_for_recipient(address, timeout=ESCALATION + 15)
    assert time.monotonic() - pushed_at >= ESCALATION - 1.0, "mailed before the escalation"
    message = mail.message
    assert message["To"] == address
    assert message["List-Unsubscribe"].startswith("<http")
    text = mail.part("text/plain")
    assert "call me when you can" in text
    assert click_url(scene.room, event_id) in text

    def both_delivered() -> list[dict[str, Any]]:
        # The mail may arrive before its sender has written the outcome.
        return [
            e
            for e in scene.deliveries(pushkey)
            if e["event_id"] == event_id
            and [(c["backend"], c["outcome"]) for c in e.get("channels", ())]
            == [("gotify", "delivered"), ("email", "delivered")]
        ]

    wait_until(both_delivered, timeout=10, interval=0.1)
    quiet_until(time.monotonic() + QUIET)
    assert len(smtp.to(address)) == 1
    assert len(scene.gotify.requests) == 1
