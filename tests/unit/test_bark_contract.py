"""`BarkBackend` against `FakeBark`, which checks pushes as Finb/bark-server does and shows
them as the Bark app would (decrypting encrypted ones)."""

from __future__ import annotations

import json
import os
import socket
import string
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mxpush
from mxpush.backends import get_backend
from mxpush.backends.bark import BarkBackend, bark_sound, encrypt
from mxpush.backends.base import Delivered, Rejected
from mxpush.errors import InvalidParam, PermanentDeliveryError, TransientDeliveryError
from mxpush.events import Urgency
from mxpush.model import RegistrationOptions
from mxpush.outbound import OutboundHttp
from mxpush.render import MessageKind, PushMessage, render_test
from mxpush.retraction import Retraction, ShownPush, notification_tag
from mxpush.urlsafety import TargetPolicy
from tests.fakes.bark import Device, FakeBark, bark_answer, decrypt
from tests.fakes.server import Reply
from tests.unit.backend_support import DEFAULT, PUBLIC, rendered, rendered_batch, resolving

KEY = "F5u42Bd3HyW8KxkUqo2gRA"
CRYPTO_KEY = "0123456789abcdef0123456789abcdef"
BACKEND = BarkBackend()
HTTP = OutboundHttp(TargetPolicy(allow_private=True))
GROUP_ROOM = "!bbQQMCPwmd9aM1RGdKYA_jwXJsIG1Mb_o6KwYXBITTU"
DM_ROOM = "!YIkXvNfjndhc9gq49pm2feQdKxlW4LZTdsnotiA5TMg"
MENTION_EVENT = "$-ua_nw959CRpUT5XabGaIbDJyRyBzHQDZQieXOt1nHY"
DM_EVENT = "$9YKtqgWbvfhsr99S2R_6S66iVIWunPAkPKPnHo_e5tI"
CALL_EVENT = "$bObJ4sJMXlYweZxqmA6OVwGsSZZlM0cpBmzPhmED5ac"


@pytest.fixture(scope="module")
def running_bark() -> Iterator[FakeBark]:
    server = FakeBark(prefix="/bark")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def bark(running_bark: FakeBark) -> FakeBark:
    running_bark.reset()
    running_bark.devices = {KEY: Device(), "CryptoPhone": Device(encryption_key=CRYPTO_KEY)}
    return running_bark


@pytest.fixture
def target(bark: FakeBark) -> dict[str, Any]:
    return {"url": bark.base_url, "device_key": KEY}


def sent_body(bark: FakeBark) -> dict[str, Any]:
    (request,) = bark.requests
    body: dict[str, Any] = request.json()
    return body


def test_registry_knows_bark() -> None:
    assert isinstance(get_backend("bark"), BarkBackend)


def test_importing_the_backends_does_not_import_cryptography() -> None:
    """The registration Lambda imports every backend: its cold start must not load the crypto
    layer's packages."""
    code = "import sys, mxpush.backends; print('cryptography' in sys.modules)"
    layer = str(Path(mxpush.__file__).parents[1])
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": layer},
    )

    assert result.stdout.strip() == "False"


# --- the request --------------------------------------------------------------------------------


def test_room_message_is_pushed_as_room_sender_text(bark: FakeBark, target: dict[str, Any]) -> None:
    message = rendered("message_group_mention.1.full")

    assert BACKEND.send(message, target, DEFAULT, HTTP) == Delivered(200)

    (request,) = bark.requests
    assert (request.method, request.path) == ("POST", "/bark/push")
    assert request.headers["content-type"] == "application/json; charset=utf-8"
    assert dict(request.query) == {}
    assert request.json() == {
        "device_key": KEY,
        "title": "E2E Group",
        "subtitle": "alice",
        "body": "bob: are you there?",
        "group": "E2E Group",
        "url": f"https://matrix.to/#/{GROUP_ROOM}/{MENTION_EVENT}",
        "badge": 1,
        "level": "timeSensitive",
        "id": notification_tag(GROUP_ROOM),
    }
    [shown] = bark.notifications
    assert (shown["title"], shown["subtitle"], shown["body"]) == (
        "E2E Group",
        "alice",
        "bob: are you there?",
    )


def test_dm_is_grouped_by_the_other_person(bark: FakeBark, target: dict[str, Any]) -> None:
    BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)

    assert sent_body(bark) == {
        "device_key": KEY,
        "title": "alice",
        "body": "hi, this is a DM",
        "group": "alice",
        "url": f"https://matrix.to/#/{DM_ROOM}/{DM_EVENT}",
        "badge": 2,
        "level": "active",
        "id": notification_tag(DM_ROOM),
    }


def test_call_rings_time_sensitive(bark: FakeBark, target: dict[str, Any]) -> None:
    BACKEND.send(rendered("call_invite_dm.1.full"), target, DEFAULT, HTTP)

    body = sent_body(bark)
    assert body["title"] == "Incoming call from alice"
    assert body["body"] == "Voice call"
    assert body["level"] == "timeSensitive"
    assert body["call"] == "1"
    assert body["sound"] == "multiwayinvitation"  # the push rule's "ring"
    assert body["id"] == notification_tag(CALL_EVENT)


@pytest.mark.parametrize(
    ("name", "level"),
    [
        ("call_invite_dm.1.full", "timeSensitive"),
        ("message_group_mention.1.full", "timeSensitive"),
        ("message_dm_2_members.1.full", "active"),
        ("encrypted_group.1.full", "active"),
        ("message_group_3_members.1.full", "passive"),
    ],
)
def test_level_per_urgency(bark: FakeBark, target: dict[str, Any], name: str, level: str) -> None:
    BACKEND.send(rendered(name), target, DEFAULT, HTTP)

    assert sent_body(bark)["level"] == level


def test_priority_override_picks_the_level(bark: FakeBark, target: dict[str, Any]) -> None:
    options = RegistrationOptions(priority={"call": 4, "low": 2})

    BACKEND.send(rendered("call_invite_dm.1.full", options), target, options, HTTP)
    BACKEND.send(rendered("message_group_3_members.1.full", options), target, options, HTTP)

    assert [r.json()["level"] for r in bark.requests] == ["critical", "active"]


@pytest.mark.parametrize(
    ("tweak", "sound"),
    [
        (None, None),
        ("default", None),
        ("ring", "multiwayinvitation"),
        ("minuet", "minuet"),
        ("Bell.caf", "bell"),
        ("my-own-sound", None),
    ],
)
def test_sound_from_the_tweak_when_bark_has_it(tweak: str | None, sound: str | None) -> None:
    assert bark_sound(tweak) == sound


def test_sound_tweak_is_sent(bark: FakeBark, target: dict[str, Any]) -> None:
    message = PushMessage(
        title="alice", body="hi", urgency=Urgency.HIGH, kind=MessageKind.MESSAGE, sound="birdsong"
    )

    BACKEND.send(message, target, DEFAULT, HTTP)

    assert sent_body(bark)["sound"] == "birdsong"


def test_coalesced_batch_keeps_the_latest_event_id(bark: FakeBark, target: dict[str, Any]) -> None:
    names = ["message_group_3_members.1.full", "message_group_mention.1.full"]

    BACKEND.send(rendered_batch(names), target, DEFAULT, HTTP)

    body = sent_body(bark)
    assert body["title"] == "E2E Group: 2 new messages"
    assert (body["subtitle"], body["body"]) == ("alice", "bob: are you there?")
    assert body["id"] == notification_tag(GROUP_ROOM)


def test_include_content_false_sends_no_message_text(
    bark: FakeBark, target: dict[str, Any]
) -> None:
    options = RegistrationOptions(include_content=False)

    BACKEND.send(rendered("message_group_mention.1.full", options), target, options, HTTP)

    (request,) = bark.requests
    assert "are you there" not in request.body.decode()
    assert (request.json()["subtitle"], request.json()["body"]) == ("alice", "New message")


def test_custom_click_url(bark: FakeBark, target: dict[str, Any]) -> None:
    options = RegistrationOptions(click_url="element://vector/webapp/#/room/{room_id}/{event_id}")

    BACKEND.send(rendered("message_dm_2_members.1.full", options), target, options, HTTP)

    assert sent_body(bark)["url"] == f"element://vector/webapp/#/room/{DM_ROOM}/{DM_EVENT}"


def test_test_push_has_no_url_no_id_and_no_badge(bark: FakeBark, target: dict[str, Any]) -> None:
    assert BACKEND.send(render_test(), target, DEFAULT, HTTP) == Delivered(200)

    body = sent_body(bark)
    assert (body["title"], body["group"]) == ("mxpush test", "mxpush")
    assert "url" not in body
    assert "id" not in body
    assert "badge" not in body  # the app's badge keeps the real unread count


def test_long_text_fits_apns_payload(bark: FakeBark, target: dict[str, Any]) -> None:
    message = PushMessage(
        title="☕" * 200, body="🎉" * 1000, urgency=Urgency.HIGH, kind=MessageKind.MESSAGE
    )

    assert BACKEND.send(message, target, DEFAULT, HTTP) == Delivered(200)

    assert len(bark.notifications[0]["body"].encode()) <= 1500


def test_a_newer_push_in_the_room_replaces_the_shown_one(
    bark: FakeBark, target: dict[str, Any]
) -> None:
    BACKEND.send(rendered("message_group_3_members.1.full"), target, DEFAULT, HTTP)
    BACKEND.send(rendered("message_group_mention.1.full"), target, DEFAULT, HTTP)

    assert [b["id"] for b in (r.json() for r in bark.requests)] == [
        notification_tag(GROUP_ROOM)
    ] * 2
    [shown] = bark.notifications
    assert shown["body"] == "bob: are you there?"


def test_group_by_room_false_keeps_one_notification_per_push(
    bark: FakeBark, target: dict[str, Any]
) -> None:
    options = RegistrationOptions(group_by_room=False)
    BACKEND.send(rendered("message_group_3_members.1.full"), target, options, HTTP)
    BACKEND.send(rendered("message_group_mention.1.full"), target, options, HTTP)

    assert bark.requests[1].json()["id"] == notification_tag(MENTION_EVENT)
    assert len(bark.notifications) == 2


def test_retract_deletes_each_shown_notification(bark: FakeBark, target: dict[str, Any]) -> None:
    BACKEND.send(rendered("message_group_mention.1.full"), target, DEFAULT, HTTP)
    BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)
    retraction = Retraction(
        (
            ShownPush(key=DM_ROOM, room_id=DM_ROOM, event_id=DM_EVENT),
            ShownPush(key=GROUP_ROOM, room_id=GROUP_ROOM, event_id=MENTION_EVENT),
        )
    )

    assert BACKEND.retract(retraction, target, DEFAULT, HTTP) == Delivered(200)

    deletes = [r.json() for r in bark.requests[2:]]
    assert deletes == [
        {"device_key": KEY, "id": notification_tag(DM_ROOM), "delete": "1"},
        {"device_key": KEY, "id": notification_tag(GROUP_ROOM), "delete": "1"},
    ]
    assert bark.notifications == []


def test_retract_of_an_encrypted_registration_is_sent_in_clear(bark: FakeBark) -> None:
    """bark-server must read `delete` to send the background push; only the id is in it."""
    target = {"url": bark.base_url, "device_key": "CryptoPhone", "encryption_key": CRYPTO_KEY}
    BACKEND.send(rendered("message_group_mention.1.full"), target, DEFAULT, HTTP)
    retraction = Retraction(
        (ShownPush(key=GROUP_ROOM, room_id=GROUP_ROOM, event_id=MENTION_EVENT),)
    )

    assert BACKEND.retract(retraction, target, DEFAULT, HTTP) == Delivered(200)

    assert bark.requests[1].json() == {
        "device_key": "CryptoPhone",
        "id": notification_tag(GROUP_ROOM),
        "delete": "1",
    }
    assert bark.notifications == []


def test_retract_to_an_unknown_device_key_rejects(bark: FakeBark) -> None:
    target = {"url": bark.base_url, "device_key": "NoSuchKey"}
    retraction = Retraction(
        (ShownPush(key=GROUP_ROOM, room_id=GROUP_ROOM, event_id=MENTION_EVENT),)
    )

    assert isinstance(BACKEND.retract(retraction, target, DEFAULT, HTTP), Rejected)


# --- end-to-end encryption ----------------------------------------------------------------------


def test_encrypted_push_carries_only_ciphertext_iv_and_id(bark: FakeBark) -> None:
    target = {"url": bark.base_url, "device_key": "CryptoPhone", "encryption_key": CRYPTO_KEY}

    result = BACKEND.send(rendered("message_group_mention.1.full"), target, DEFAULT, HTTP)

    assert result == Delivered(200)
    body = sent_body(bark)
    assert set(body) == {"device_key", "ciphertext", "iv", "id"}
    assert body["id"] == notification_tag(GROUP_ROOM)
    assert len(body["iv"]) == 16 and set(body["iv"]) <= set(string.ascii_letters + string.digits)
    raw = bark.requests[0].body.decode()
    for plain in ("E2E Group", "alice", "are you there", "timeSensitive", "matrix.to"):
        assert plain not in raw
    # The phone decrypts it to the same fields a plain push carries.
    assert decrypt(body["ciphertext"], body["iv"], CRYPTO_KEY) == {
        "title": "E2E Group",
        "subtitle": "alice",
        "body": "bob: are you there?",
        "group": "E2E Group",
        "url": f"https://matrix.to/#/{GROUP_ROOM}/{MENTION_EVENT}",
        "badge": 1,
        "level": "timeSensitive",
        "id": notification_tag(GROUP_ROOM),
    }
    [shown] = bark.notifications
    assert (shown["title"], shown["body"], shown["badge"]) == (
        "E2E Group",
        "bob: are you there?",
        "1",
    )


@pytest.mark.parametrize("key", ["k" * 16, "k" * 24, "k" * 32])
def test_key_length_picks_aes_128_192_256(key: str) -> None:
    fields = {"title": "Café", "body": "日本語"}

    ciphertext, iv = encrypt(fields, key)

    assert decrypt(ciphertext, iv, key) == fields
    with pytest.raises(ValueError, match=r".*"):
        decrypt(ciphertext, iv, "x" * len(key))


def test_every_push_gets_a_fresh_iv() -> None:
    ivs = {encrypt({"body": "same"}, CRYPTO_KEY)[1] for _ in range(20)}

    assert len(ivs) == 20


def test_wrong_key_shows_decryption_failed(bark: FakeBark) -> None:
    target = {"url": bark.base_url, "device_key": "CryptoPhone", "encryption_key": "x" * 32}

    assert BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP) == (
        Delivered(200)
    )

    assert bark.notifications == [{"device_key": "CryptoPhone", "body": "Decryption Failed"}]


# --- the answers --------------------------------------------------------------------------------


def test_unknown_device_key_is_rejected(bark: FakeBark) -> None:
    target = {"url": bark.base_url, "device_key": "NoSuchKey123"}

    result = BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)

    assert isinstance(result, Rejected)
    assert "400" in result.reason
    assert "NoSuchKey123" not in result.reason
    assert bark.notifications == []


@pytest.mark.parametrize("reason", ["Unregistered", "BadDeviceToken", "DeviceTokenNotForTopic"])
def test_dead_apns_token_is_rejected(bark: FakeBark, target: dict[str, Any], reason: str) -> None:
    bark.devices[KEY].apns = reason

    result = BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)

    assert isinstance(result, Rejected)
    assert reason in result.reason
    assert KEY not in result.reason


def test_after_unregistered_the_cleared_token_is_rejected_too(
    bark: FakeBark, target: dict[str, Any]
) -> None:
    bark.devices[KEY].apns = "Unregistered"
    BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)

    again = BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)

    assert isinstance(again, Rejected)
    assert "MissingDeviceToken" in again.reason


def test_other_bad_request_fails_without_rejecting(bark: FakeBark, target: dict[str, Any]) -> None:
    bark.queue(bark_answer(400, f"request bind failed: bad json near {KEY}"))

    with pytest.raises(PermanentDeliveryError, match="400") as caught:
        BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)

    assert "request bind failed" in caught.value.reason
    assert KEY not in str(caught.value)
    assert KEY not in caught.value.reason


def test_compatible_server_answering_200_with_an_error_code(
    bark: FakeBark, target: dict[str, Any]
) -> None:
    bark.queue(
        Reply(200, {"code": 400, "message": f"failed to get device token: [{KEY}] not found"})
    )

    result = BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)

    assert isinstance(result, Rejected)


@pytest.mark.parametrize(
    "reply",
    [
        bark_answer(500, "push failed: ServiceUnavailable"),
        bark_answer(500, "push failed: Post https://api.push.apple.com: i/o timeout"),
        Reply(500, b"Internal Server Error", {"Content-Type": "text/plain"}),
        Reply(502, b"<html>bad gateway</html>", {"Content-Type": "text/html"}),
        bark_answer(429, "too many requests"),
    ],
    ids=["apns-503", "apns-timeout", "panic", "proxy-502", "429"],
)
def test_server_trouble_is_transient(bark: FakeBark, target: dict[str, Any], reply: Reply) -> None:
    bark.queue(reply)

    with pytest.raises(TransientDeliveryError, match=str(reply.status)):
        BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)


def test_connection_refused_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    target = {"url": f"http://127.0.0.1:{port}", "device_key": KEY}

    with pytest.raises(TransientDeliveryError) as caught:
        BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)

    assert KEY not in str(caught.value)


def test_target_the_policy_forbids_at_send_time_is_permanent(
    bark: FakeBark, target: dict[str, Any]
) -> None:
    strict = OutboundHttp(TargetPolicy(allow_private=False))

    with pytest.raises(PermanentDeliveryError):
        BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, strict)

    assert bark.requests == []


# --- validate_target ----------------------------------------------------------------------------


def test_default_server_is_api_day_app() -> None:
    checked = BACKEND.validate_target({"device_key": KEY}, resolving({"api.day.app": [PUBLIC]}))

    assert checked.target == {"url": "https://api.day.app", "device_key": KEY}
    assert checked.warnings == []


def test_self_hosted_server_with_prefix_and_encryption_key() -> None:
    checked = BACKEND.validate_target(
        {"url": "https://push.example.org/bark/", "device_key": KEY, "encryption_key": CRYPTO_KEY},
        resolving({"push.example.org": [PUBLIC]}),
    )

    assert checked.target == {
        "url": "https://push.example.org/bark",
        "device_key": KEY,
        "encryption_key": CRYPTO_KEY,
    }


def test_unknown_keys_are_warned_about_and_dropped() -> None:
    checked = BACKEND.validate_target(
        {"device_key": KEY, "iv": "1234567890123456", "sound": "bell"},
        resolving({"api.day.app": [PUBLIC]}),
    )

    assert checked.target == {"url": "https://api.day.app", "device_key": KEY}
    assert [w.split(":")[0] for w in checked.warnings] == ["target.iv", "target.sound"]


@pytest.mark.parametrize(
    ("target", "field"),
    [
        ({}, "target.device_key"),
        ({"device_key": ""}, "target.device_key"),
        ({"device_key": "has space"}, "target.device_key"),
        ({"device_key": 42}, "target.device_key"),
        ({"device_key": KEY, "encryption_key": "short"}, "target.encryption_key"),
        ({"device_key": KEY, "encryption_key": "x" * 20}, "target.encryption_key"),
        ({"device_key": KEY, "encryption_key": "é" * 16}, "target.encryption_key"),
        ({"device_key": KEY, "encryption_key": 1234567890123456}, "target.encryption_key"),
        ({"device_key": KEY, "url": "ftp://api.day.app"}, "target.url"),
        ({"device_key": KEY, "url": ""}, "target.url"),
        ({"device_key": KEY, "url": "https://api.day.app/?key=x"}, "target.url"),
        ({"device_key": KEY, "url": "http://10.0.0.7"}, "target.url"),
        ({"device_key": KEY, "url": "http://169.254.169.254"}, "target.url"),
    ],
)
def test_invalid_target_names_the_field(target: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidParam) as caught:
        BACKEND.validate_target(target, resolving({"api.day.app": [PUBLIC]}))

    assert caught.value.error.startswith(field + ":"), caught.value.error


# --- secrets and priorities ---------------------------------------------------------------------


def test_mask_target_hides_the_device_key_and_the_encryption_key() -> None:
    masked = BACKEND.mask_target(
        {"url": "https://api.day.app", "device_key": KEY, "encryption_key": CRYPTO_KEY}
    )

    assert masked == {
        "url": "https://api.day.app",
        "device_key": "****gRA",
        "encryption_key": "****def",
    }
    assert KEY not in json.dumps(masked)


def test_validate_priority_uses_barks_levels() -> None:
    assert BACKEND.validate_priority({"call": 4, "low": 1}) == {"call": 4, "low": 1}
    for bad in (0, 5):
        with pytest.raises(InvalidParam, match=r"from 1 to 4"):
            BACKEND.validate_priority({"high": bad})
