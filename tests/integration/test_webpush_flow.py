"""Web Push end to end in local mode: a browser subscribes with the gateway's VAPID public key,
registers its subscription through the API, and the fake push service verifies and decrypts
what the real state machine and sender Lambda send."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mxpush.vapid import generate_private_key, load_vapid_key
from mxpush_local.gateway import LOCAL_VAPID_SUBJECT, LocalGateway, LocalSettings
from tests.conftest import Api, synapse_body, wait_until
from tests.fakes.webpush import Browser, FakePushService, push_error
from tests.integration.test_local_mode import call, free_port, running

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PUBLIC_KEY = "/api/v1/webpush/vapid-public-key"
DM = "message_dm_2_members.1.full"
DM_EVENT = "$9YKtqgWbvfhsr99S2R_6S66iVIWunPAkPKPnHo_e5tI"
DM_ROOM = "!YIkXvNfjndhc9gq49pm2feQdKxlW4LZTdsnotiA5TMg"


@pytest.fixture(scope="module")
def running_push() -> Iterator[FakePushService]:
    server = FakePushService().start()
    yield server
    server.stop()


@pytest.fixture
def push(running_push: FakePushService) -> FakePushService:
    running_push.reset()
    return running_push


@pytest.fixture
def browser(api: Api, push: FakePushService) -> Browser:
    """A browser that asked the gateway for its public key and subscribed with it."""
    answer = api.request("GET", PUBLIC_KEY, token=None)
    assert answer.status == 200, answer.body
    return push.subscribe(answer.body["public_key"])


def register(api: Api, browser: Browser, **extra: Any) -> str:
    body = {"backend": "webpush", "target": browser.subscription(), "delay_seconds": 0, **extra}
    answer = api.request("POST", "/api/v1/pushkeys", body)
    assert answer.status == 201, answer.body
    assert "warnings" not in answer.body  # toJSON() as a browser gives it: nothing unknown
    assert answer.body["app_id"] == "org.mxpush.webpush"
    return str(answer.body["pushkey"])


def wait_for_outcome(api: Api, pushkey: str, outcome: str) -> list[dict[str, Any]]:
    return list(
        wait_until(lambda: [e for e in api.deliveries(pushkey) if e["outcome"] == outcome], 15)
    )


def test_session_key_pair_is_generated_and_served_publicly(api: Api, gateway: LocalGateway) -> None:
    answer = api.request("GET", PUBLIC_KEY, token=None)

    assert answer.status == 200
    assert answer.headers["Content-Type"] == "application/json"
    assert gateway.generated_vapid_key
    expected = load_vapid_key(gateway.vapid_private_key, LOCAL_VAPID_SUBJECT).public_key
    assert answer.body == {"public_key": expected}
    # The same key for the whole session, and only the public half is ever answered.
    again = api.request("GET", PUBLIC_KEY, token="whatever")
    assert again.body == answer.body
    assert gateway.vapid_private_key not in str(answer.body)
    assert api.request("POST", PUBLIC_KEY, {}, token=None).status == 405


def test_registered_subscription_gets_exactly_one_decryptable_push(
    api: Api, push: FakePushService, browser: Browser
) -> None:
    pushkey = register(api, browser)
    stored = api.request("GET", f"/api/v1/pushkeys/{pushkey}").body
    assert stored["backend"] == "webpush"
    assert stored["target"]["endpoint"] == f"{push.url}/****{browser.endpoint[-3:]}"
    for secret in (browser.endpoint, browser.auth, browser.p256dh):
        assert secret not in str(stored)

    assert api.notify(synapse_body(DM, pushkey)).body == {"rejected": []}

    [request] = push.wait_for(1, timeout=10)
    assert request.path == f"/push/{browser.subscription_id}"
    [message] = push.wait_for_pushes(1)
    assert (message.ttl, message.urgency) == (900, "normal")
    assert message.claims["aud"] == push.url
    assert message.json() == {
        "kind": "message",
        "prio": "high",
        "event_id": DM_EVENT,
        "room_id": DM_ROOM,
        "tag": DM_ROOM,
        "counts": {"unread": 2},
        "title": "alice",
        "body": "hi, this is a DM",
        "click_url": f"https://matrix.to/#/{DM_ROOM}/{DM_EVENT}",
    }
    [entry] = wait_for_outcome(api, pushkey, "delivered")
    assert entry["event_id"] == DM_EVENT
    time.sleep(1)
    assert len(push.requests) == 1


def test_include_content_false_pushes_ids_only(
    api: Api, push: FakePushService, browser: Browser
) -> None:
    pushkey = register(api, browser, options={"include_content": False})

    api.notify(synapse_body(DM, pushkey))

    [message] = push.wait_for_pushes(1)
    payload = message.json()
    assert set(payload) == {"kind", "prio", "event_id", "room_id", "tag", "counts", "click_url"}
    assert b"hi, this is a DM" not in message.plaintext


def test_gone_subscription_rejects_the_pushkey_next_time(
    api: Api, push: FakePushService, browser: Browser
) -> None:
    pushkey = register(api, browser)
    push.unsubscribe(browser)
    assert api.notify(synapse_body(DM, pushkey)).body == {"rejected": []}

    push.wait_for(1, timeout=10)
    [entry] = wait_for_outcome(api, pushkey, "rejected")
    assert "410" in entry["reason"]
    assert api.request("GET", f"/api/v1/pushkeys/{pushkey}").body["status"] == "rejected"
    # The next event notification tells Synapse, which deletes the pusher.
    answer = api.notify(synapse_body("message_group_3_members.1.full", pushkey))
    assert answer.body == {"rejected": [pushkey]}
    time.sleep(1)
    assert len(push.requests) == 1


def test_unavailable_push_service_is_retried_then_delivered_once(
    api: Api, push: FakePushService, browser: Browser
) -> None:
    push.queue(push_error(503, "Service Unavailable"))
    pushkey = register(api, browser)

    api.notify(synapse_body(DM, pushkey))

    first, second = push.wait_for(2, timeout=15)
    assert first.headers["topic"] == second.headers["topic"]
    wait_for_outcome(api, pushkey, "delivered")
    assert len(push.messages) == 1
    assert [e["outcome"] for e in api.deliveries(pushkey)] == ["delivered"]


def test_test_push_goes_out_at_once(api: Api, push: FakePushService, browser: Browser) -> None:
    pushkey = register(api, browser)

    answer = api.request("POST", f"/api/v1/pushkeys/{pushkey}/test")

    assert answer.status == 200, answer.body
    assert answer.body == {"outcome": "delivered"}
    assert push.messages[0].json()["kind"] == "test"


def test_registration_names_a_bad_key(api: Api, browser: Browser) -> None:
    target = browser.subscription()
    target["keys"]["p256dh"] = target["keys"]["p256dh"][:-4]

    answer = api.request("POST", "/api/v1/pushkeys", {"backend": "webpush", "target": target})

    assert answer.status == 400
    assert answer.body["errcode"] == "M_INVALID_PARAM"
    assert answer.body["error"].startswith("target.keys.p256dh: must encode 65 bytes")


def test_numeric_priority_overrides_outside_the_urgency_levels_are_refused(
    api: Api, browser: Browser
) -> None:
    body = {
        "backend": "webpush",
        "target": browser.subscription(),
        "options": {"priority": {"high": 5}},
    }

    answer = api.request("POST", "/api/v1/pushkeys", body)

    assert answer.status == 400
    assert answer.body["error"].startswith("options.priority.high: must be an integer from 0 to 3")


# --- local mode as a user runs it ---------------------------------------------------------------


def test_local_mode_prints_the_public_key_it_serves() -> None:
    port = free_port()
    env = {
        "PYTHONPATH": f"{ROOT / 'layers' / 'mxpush'}:{ROOT / 'local'}",
        "PORT": str(port),
        "MXPUSH_ADMIN_TOKEN": "chosen-admin-token",
        "MXPUSH_VAPID_PRIVATE_KEY": "",
        "MXPUSH_VAPID_SUBJECT": "",
    }
    with running([sys.executable, "-m", "mxpush_local"], env) as process:
        printed = process.wait_for_line(
            r"Web Push VAPID public key \(generated for this session\): ([A-Za-z0-9_-]{87})$"
        ).group(1)
        status, answer = call("GET", f"http://127.0.0.1:{port}{PUBLIC_KEY}")
        assert (status, answer) == (200, {"public_key": printed})
        process.popen.send_signal(signal.SIGTERM)
        assert process.popen.wait(timeout=15) == 0


def test_local_mode_uses_a_given_key_and_refuses_a_bad_one() -> None:
    private = generate_private_key()
    subject = "mailto:me@example.org"
    settings = LocalSettings.from_env(
        {
            "MXPUSH_VAPID_PRIVATE_KEY": private,
            "MXPUSH_VAPID_SUBJECT": subject,
            "MXPUSH_STATE": ":memory:",  # not the checkout's state (and its kept key)
        }
    )
    local = LocalGateway(settings)  # not started: only one may run per process
    assert not local.generated_vapid_key
    assert local.vapid_public_key() == load_vapid_key(private, subject).public_key

    env = {
        "PYTHONPATH": f"{ROOT / 'layers' / 'mxpush'}:{ROOT / 'local'}",
        "PORT": str(free_port()),
        "MXPUSH_VAPID_PRIVATE_KEY": "bm90LWEta2V5",
    }
    with running([sys.executable, "-m", "mxpush_local"], env) as process:
        assert process.popen.wait(timeout=30) == 2
        assert "bad setting: the VAPID private key is not a P-256 key" in process.output
        assert "bm90LWEta2V5" not in process.output
