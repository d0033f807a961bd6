"""Replacing and taking back, backend by backend, against the fakes (which check the exact
requests the real servers take: tests/fakes/*). Bark's are in test_bark_contract.py."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mxpush.backends.acrobits import AcrobitsBackend
from mxpush.backends.base import Delivered, Rejected
from mxpush.backends.gotify import GotifyBackend
from mxpush.backends.ntfy import NtfyBackend
from mxpush.backends.unifiedpush import UnifiedPushBackend
from mxpush.backends.webhook import WebhookBackend
from mxpush.backends.webpush import MAX_PLAINTEXT_BYTES, WebPushBackend, encode_retraction
from mxpush.errors import PermanentDeliveryError, TransientDeliveryError
from mxpush.model import RegistrationOptions
from mxpush.outbound import OutboundHttp
from mxpush.retraction import (
    Retraction,
    ShownPush,
    can_retract,
    notification_key,
    notification_tag,
)
from mxpush.urlsafety import TargetPolicy
from mxpush.vapid import generate_private_key, load_vapid_key
from tests.fakes.gotify import FakeGotify
from tests.fakes.ntfy import FakeNtfy
from tests.fakes.server import Reply
from tests.fakes.unifiedpush import FakeDistributor
from tests.fakes.webhook import FakeWebhook, check_document
from tests.fakes.webpush import FakePushService
from tests.unit.backend_support import DEFAULT, rendered

HTTP = OutboundHttp(TargetPolicy(allow_private=True))
GROUP_ROOM = "!bbQQMCPwmd9aM1RGdKYA_jwXJsIG1Mb_o6KwYXBITTU"
DM_ROOM = "!YIkXvNfjndhc9gq49pm2feQdKxlW4LZTdsnotiA5TMg"
MENTION_EVENT = "$-ua_nw959CRpUT5XabGaIbDJyRyBzHQDZQieXOt1nHY"
GROUP_EVENT = "$CXrnB2nF4gsxDRb5uM7Fo3Vz9eQgV9Kc7xXcJp4yTmE"
DM_EVENT = "$9YKtqgWbvfhsr99S2R_6S66iVIWunPAkPKPnHo_e5tI"
TOPIC = "bob_phone"
TOKEN = "tk_AgQdq7mVBoFD37zQVN29RhuMzNIz2"
BOTH = Retraction(
    (
        ShownPush(key=DM_ROOM, room_id=DM_ROOM, event_id=DM_EVENT, event_ids=(DM_EVENT,)),
        ShownPush(
            key=GROUP_ROOM,
            room_id=GROUP_ROOM,
            event_id=MENTION_EVENT,
            rooms=(GROUP_ROOM,),
            event_ids=(GROUP_EVENT, MENTION_EVENT),
        ),
    )
)


# --- naming ---------------------------------------------------------------------------------


def test_a_push_is_named_after_its_room_unless_a_call_or_ungrouped() -> None:
    assert notification_key(DM_ROOM, DM_EVENT, is_call=False, group_by_room=True) == DM_ROOM
    assert notification_key(DM_ROOM, DM_EVENT, is_call=True, group_by_room=True) == DM_EVENT
    assert notification_key(DM_ROOM, DM_EVENT, is_call=False, group_by_room=False) == DM_EVENT
    assert notification_key(None, DM_EVENT, is_call=False, group_by_room=True) == DM_EVENT


def test_tags_fit_ntfy_sequence_ids_and_apns_collapse_ids() -> None:
    tag = notification_tag("!" + "x" * 254)
    assert tag == notification_tag("!" + "x" * 254)
    assert tag != notification_tag(DM_ROOM)
    assert len(tag) == 32 and tag.isalnum() and tag.isascii()


def test_which_backends_can_take_back() -> None:
    assert all(can_retract(b, {}) for b in ("ntfy", "bark", "webhook", "webpush", "unifiedpush"))
    assert not can_retract("acrobits", {"device_token": "x"})
    assert not can_retract("gotify", {"token": "a"})
    assert can_retract("gotify", {"token": "a", "client_token": "c"})


def test_acrobits_cannot_take_back() -> None:
    with pytest.raises(PermanentDeliveryError):
        AcrobitsBackend().retract(BOTH, {"device_token": "t", "app_id": "a"}, DEFAULT, HTTP)


# --- ntfy -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def running_ntfy() -> Iterator[FakeNtfy]:
    server = FakeNtfy(prefix="/ntfy", tokens={TOKEN: "bob"}, grants={"bob": {TOPIC}})
    server.start()
    yield server
    server.stop()


@pytest.fixture
def ntfy(running_ntfy: FakeNtfy) -> FakeNtfy:
    running_ntfy.reset()
    return running_ntfy


def test_ntfy_push_carries_the_rooms_sequence_id_and_replaces(ntfy: FakeNtfy) -> None:
    target = {"url": ntfy.topic_url(TOPIC), "token": TOKEN}
    backend = NtfyBackend()

    backend.send(rendered("message_group_3_members.1.full"), target, DEFAULT, HTTP)
    backend.send(rendered("message_group_mention.1.full"), target, DEFAULT, HTTP)

    sids = [r.json()["sequence_id"] for r in ntfy.requests]
    assert sids == [notification_tag(GROUP_ROOM)] * 2
    assert list(ntfy.shown) == [(TOPIC, notification_tag(GROUP_ROOM))]
    assert ntfy.shown[(TOPIC, sids[0])]["message"] == "alice: bob: are you there?"


def test_ntfy_call_and_ungrouped_pushes_keep_their_own_sequence_ids(ntfy: FakeNtfy) -> None:
    target = {"url": ntfy.topic_url(TOPIC), "token": TOKEN}
    backend = NtfyBackend()
    ungrouped = RegistrationOptions(group_by_room=False)

    backend.send(rendered("message_group_mention.1.full"), target, ungrouped, HTTP)
    backend.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)
    call = rendered("call_invite_dm.1.full")
    backend.send(call, target, DEFAULT, HTTP)

    sids = [r.json()["sequence_id"] for r in ntfy.requests]
    assert sids == [
        notification_tag(MENTION_EVENT),
        notification_tag(DM_ROOM),
        notification_tag(str(call.event_id)),
    ]


def test_ntfy_retract_clears_each_shown_sequence_id(ntfy: FakeNtfy) -> None:
    target = {"url": ntfy.topic_url(TOPIC), "token": TOKEN}
    backend = NtfyBackend()
    backend.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)
    backend.send(rendered("message_group_mention.1.full"), target, DEFAULT, HTTP)

    assert backend.retract(BOTH, target, DEFAULT, HTTP) == Delivered(200)

    clears = ntfy.requests[2:]
    assert [(r.method, r.path) for r in clears] == [
        ("PUT", f"/ntfy/{TOPIC}/{notification_tag(DM_ROOM)}/clear"),
        ("PUT", f"/ntfy/{TOPIC}/{notification_tag(GROUP_ROOM)}/clear"),
    ]
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in clears)
    assert all(r.body == b"" for r in clears)
    assert ntfy.shown == {}


def test_ntfy_before_2_16_has_nothing_to_clear(ntfy: FakeNtfy) -> None:
    ntfy.sequence_support = False
    target = {"url": ntfy.topic_url(TOPIC), "token": TOKEN}

    assert NtfyBackend().retract(BOTH, target, DEFAULT, HTTP) == Delivered()


def test_ntfy_retract_with_a_revoked_token_rejects(ntfy: FakeNtfy) -> None:
    target = {"url": ntfy.topic_url(TOPIC), "token": "tk_revoked"}

    assert isinstance(NtfyBackend().retract(BOTH, target, DEFAULT, HTTP), Rejected)


def test_ntfy_retract_rate_limited_is_retried(ntfy: FakeNtfy) -> None:
    ntfy.rate_limited = True
    target = {"url": ntfy.topic_url(TOPIC), "token": TOKEN}
    try:
        with pytest.raises(TransientDeliveryError):
            NtfyBackend().retract(BOTH, target, DEFAULT, HTTP)
    finally:
        ntfy.rate_limited = False


# --- Gotify ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def running_gotify() -> Iterator[FakeGotify]:
    server = FakeGotify(prefix="/gotify")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def gotify(running_gotify: FakeGotify) -> FakeGotify:
    running_gotify.reset()
    return running_gotify


def test_gotify_keeps_the_message_id_and_deletes_it_with_the_client_token(
    gotify: FakeGotify,
) -> None:
    target = {
        "url": gotify.base_url,
        "token": "AppToken.Valid1",
        "client_token": "ClientToken.Valid1",
    }
    backend = GotifyBackend()
    delivered = backend.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)
    assert isinstance(delivered, Delivered) and delivered.ref == str(gotify.messages[0]["id"])
    retraction = Retraction(
        (
            ShownPush(key=DM_ROOM, room_id=DM_ROOM, event_id=DM_EVENT, ref=delivered.ref),
            ShownPush(key=GROUP_ROOM, room_id=GROUP_ROOM, event_id=MENTION_EVENT, ref="999"),
        )
    )

    assert backend.retract(retraction, target, DEFAULT, HTTP) == Delivered()

    deletes = gotify.requests[1:]
    assert [(r.method, r.path) for r in deletes] == [
        ("DELETE", f"/gotify/message/{delivered.ref}"),
        ("DELETE", "/gotify/message/999"),  # gone already: 404, nothing to do
    ]
    assert all(r.headers["x-gotify-key"] == "ClientToken.Valid1" for r in deletes)
    assert gotify.messages == [] and gotify.deleted == [int(str(delivered.ref))]


def test_gotify_refused_client_token_fails_without_rejecting(gotify: FakeGotify) -> None:
    target = {"url": gotify.base_url, "token": "AppToken.Valid1", "client_token": "AppToken.Valid1"}
    retraction = Retraction((ShownPush(key=DM_ROOM, room_id=DM_ROOM, event_id=DM_EVENT, ref="1"),))

    with pytest.raises(PermanentDeliveryError, match="client token"):
        GotifyBackend().retract(retraction, target, DEFAULT, HTTP)


def test_gotify_client_token_is_a_masked_secret() -> None:
    target = {"url": "https://g.example.org", "token": "AppToken.Valid1", "client_token": "C" * 20}
    assert GotifyBackend().mask_target(target)["client_token"] == "****CCC"


# --- webhook --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hook() -> Iterator[FakeWebhook]:
    server = FakeWebhook(secret="s3cr3t-s3cr3t-s3cr3t-42")
    server.start()
    yield server
    server.stop()


def test_webhook_retract_is_the_documented_signed_document(hook: FakeWebhook) -> None:
    hook.reset()
    backend = WebhookBackend(clock=lambda: 1795316400.25)
    target = {"url": hook.hook_url, "secret": "s3cr3t-s3cr3t-s3cr3t-42"}

    assert backend.retract(BOTH, target, DEFAULT, HTTP) == Delivered(200)

    assert hook.documents == [
        {
            "type": "mxpush.notification",
            "version": 1,
            "kind": "retract",
            "room_ids": [DM_ROOM, GROUP_ROOM],
            "event_ids": [DM_EVENT, GROUP_EVENT, MENTION_EVENT],
            "counts": {"unread": 0},
            "timestamp": "2026-11-22T03:00:00.250Z",
        }
    ]


def test_webhook_retract_is_retried_like_a_push(hook: FakeWebhook) -> None:
    hook.reset()
    hook.queue(Reply(503, {"error": "busy"}))
    target = {"url": hook.hook_url, "secret": "s3cr3t-s3cr3t-s3cr3t-42"}

    with pytest.raises(TransientDeliveryError):
        WebhookBackend().retract(BOTH, target, DEFAULT, HTTP)


# --- UnifiedPush ----------------------------------------------------------------------------


def test_unifiedpush_forwards_the_badge_only_notification() -> None:
    distributor = FakeDistributor().start()
    try:
        endpoint = distributor.new_endpoint()
        result = UnifiedPushBackend().retract(BOTH, {"endpoint": endpoint}, DEFAULT, HTTP)
        assert result == Delivered(200)
        [request] = distributor.requests
        assert json.loads(request.body) == {
            "notification": {"id": "", "type": None, "sender": "", "counts": {"unread": 0}}
        }
        assert distributor.cleared == 1
    finally:
        distributor.stop()


# --- Web Push -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def push_service() -> Iterator[FakePushService]:
    server = FakePushService()
    server.start()
    yield server
    server.stop()


def test_webpush_retract_closes_the_tagged_notifications(push_service: FakePushService) -> None:
    push_service.reset()
    key = load_vapid_key(generate_private_key(), "mailto:ops@example.org")
    backend = WebPushBackend(lambda: key)
    browser = push_service.subscribe(key.public_key)
    target = browser.subscription()
    backend.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)
    backend.send(rendered("message_group_mention.1.full"), target, DEFAULT, HTTP)
    assert set(browser.shown) == {DM_ROOM, GROUP_ROOM}

    assert backend.retract(BOTH, target, DEFAULT, HTTP) == Delivered(201)

    retract = push_service.messages[-1]
    assert retract.json() == {
        "kind": "retract",
        "tags": [DM_ROOM, GROUP_ROOM],
        "room_ids": [DM_ROOM, GROUP_ROOM],
        "counts": {"unread": 0},
    }
    assert (retract.urgency, retract.ttl, retract.topic) == ("low", 900, None)
    assert browser.shown == {}


def test_webpush_retract_of_one_room_carries_its_topic(push_service: FakePushService) -> None:
    push_service.reset()
    key = load_vapid_key(generate_private_key(), "mailto:ops@example.org")
    backend = WebPushBackend(lambda: key)
    browser = push_service.subscribe(key.public_key)
    backend.send(rendered("message_dm_2_members.1.full"), browser.subscription(), DEFAULT, HTTP)
    one = Retraction((ShownPush(key=DM_ROOM, room_id=DM_ROOM, event_id=DM_EVENT),))

    backend.retract(one, browser.subscription(), DEFAULT, HTTP)

    pushed, retract = push_service.messages
    assert retract.topic == pushed.topic is not None


def test_webpush_retract_payload_fits_with_fifty_long_room_ids() -> None:
    rooms = [f"!{i:03d}" + "r" * 250 for i in range(50)]

    raw = encode_retraction(rooms, rooms)

    assert len(raw) <= MAX_PLAINTEXT_BYTES
    payload: dict[str, Any] = json.loads(raw)
    assert payload["tags"] == rooms[: len(payload["tags"])] and payload["tags"]


def test_readme_retract_document_is_what_a_receiver_accepts() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    match = re.search(r"<!-- webhook-retract-document -->\n```json\n(.*?)```", readme, re.DOTALL)
    assert match, "README has no webhook-retract-document example"
    document = json.loads(match.group(1))
    assert check_document(document) is None
    assert set(document) == set(WebhookBackend().retract_document(BOTH))
