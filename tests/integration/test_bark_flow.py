"""Bark through local mode: registration over the API, the real state machine, a fake
bark-server that also shows what the Bark app would display."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from mxpush.retraction import notification_tag
from tests.conftest import Api, synapse_body
from tests.fakes.bark import Device, FakeBark, bark_answer, decrypt
from tests.integration.flow_support import outcomes, register, wait_for_outcome

pytestmark = pytest.mark.slow

KEY = "F5u42Bd3HyW8KxkUqo2gRA"
CRYPTO_KEY = "0123456789abcdef"
GROUP_ROOM = "!bbQQMCPwmd9aM1RGdKYA_jwXJsIG1Mb_o6KwYXBITTU"
MENTION = "message_group_mention.1.full"
MENTION_EVENT = "$-ua_nw959CRpUT5XabGaIbDJyRyBzHQDZQieXOt1nHY"


@pytest.fixture
def bark() -> Iterator[FakeBark]:
    server = FakeBark(
        prefix="/bark", devices={KEY: Device(), "CryptoPhone": Device(encryption_key=CRYPTO_KEY)}
    ).start()
    yield server
    server.stop()


def test_mention_is_pushed_as_bark_expects(api: Api, bark: FakeBark) -> None:
    pushkey = register(api, "bark", {"url": bark.base_url, "device_key": KEY})
    assert api.notify(synapse_body(MENTION, pushkey)).body == {"rejected": []}

    [request] = bark.wait_for(1)
    assert (request.method, request.path) == ("POST", "/bark/push")
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
    [entry] = wait_for_outcome(api, pushkey, "delivered")
    assert entry["event_id"] == MENTION_EVENT
    assert len(bark.notifications) == 1


def test_encrypted_push_reaches_the_phone_readable(api: Api, bark: FakeBark) -> None:
    pushkey = register(
        api,
        "bark",
        {"url": bark.base_url, "device_key": "CryptoPhone", "encryption_key": CRYPTO_KEY},
        options={"include_content": False},
    )
    shown = api.request("GET", f"/api/v1/pushkeys/{pushkey}").body["target"]
    assert shown == {"url": bark.base_url, "device_key": "****", "encryption_key": "****def"}
    api.notify(synapse_body(MENTION, pushkey))

    [request] = bark.wait_for(1)
    body = request.json()
    assert set(body) == {"device_key", "ciphertext", "iv", "id"}
    assert "E2E Group" not in request.body.decode()
    fields = decrypt(body["ciphertext"], body["iv"], CRYPTO_KEY)
    assert (fields["title"], fields["subtitle"], fields["body"]) == (
        "E2E Group",
        "alice",
        "New message",  # include_content: false
    )
    wait_for_outcome(api, pushkey, "delivered")
    assert bark.notifications[0]["title"] == "E2E Group"


def test_unknown_device_key_rejects_the_pushkey_at_the_next_notification(
    api: Api, bark: FakeBark
) -> None:
    pushkey = register(api, "bark", {"url": bark.base_url, "device_key": "ResetKey"})
    api.notify(synapse_body(MENTION, pushkey))

    [entry] = wait_for_outcome(api, pushkey, "rejected")
    assert "400" in entry["reason"]
    assert "ResetKey" not in entry["reason"]
    answer = api.notify(synapse_body("message_dm_2_members.1.full", pushkey))
    assert answer.body == {"rejected": [pushkey]}
    time.sleep(1)
    assert len(bark.requests) == 1


def test_removed_app_rejects_the_pushkey(api: Api, bark: FakeBark) -> None:
    bark.devices[KEY].apns = "Unregistered"
    pushkey = register(api, "bark", {"url": bark.base_url, "device_key": KEY})
    api.notify(synapse_body(MENTION, pushkey))

    [entry] = wait_for_outcome(api, pushkey, "rejected")
    assert "Unregistered" in entry["reason"]
    assert api.request("GET", f"/api/v1/pushkeys/{pushkey}").body["status"] == "rejected"


def test_apns_hiccup_is_retried_and_delivered_once(api: Api, bark: FakeBark) -> None:
    bark.queue(bark_answer(500, "push failed: ServiceUnavailable"))
    pushkey = register(api, "bark", {"url": bark.base_url, "device_key": KEY})
    api.notify(synapse_body(MENTION, pushkey))

    first, second = bark.wait_for(2, timeout=15)
    assert first.json() == second.json()
    wait_for_outcome(api, pushkey, "delivered")
    assert len(bark.notifications) == 1
    assert outcomes(api, pushkey) == ["delivered"]
