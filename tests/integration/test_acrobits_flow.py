"""Acrobits PNM end to end in local mode: register through the API (delay 0), notify with
captured Synapse bodies, and check what the fake PNM received."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Api, synapse_body, wait_until
from tests.fakes.acrobits import FakeAcrobitsPnm
from tests.fakes.server import Reply

pytestmark = pytest.mark.slow

TOKEN = "QVBBOTFiRzlhcVd2bW54bllCWldHOWh4dnRrZ3pUWFNvcGZpdWZ6bWM2dFAzS2J="
APP_ID = "com.cloudsoftphone.app"
CALL_TOKEN = "Udl99X2JFP1bWwS5gR/wGeLE1hmAB2CMpr1Ej0wxkrY="
CALL_APP_ID = "com.cloudsoftphone.app.pushkit"
SELECTOR = "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14"
DM = "message_dm_2_members.1.full"
GROUP = "message_group_3_members.1.full"
DM_ROOM = "!YIkXvNfjndhc9gq49pm2feQdKxlW4LZTdsnotiA5TMg"
DM_EVENT = "$9YKtqgWbvfhsr99S2R_6S66iVIWunPAkPKPnHo_e5tI"
GROUP_ROOM = "!bbQQMCPwmd9aM1RGdKYA_jwXJsIG1Mb_o6KwYXBITTU"
GROUP_EVENT = "$qVYN4m3Z_uU6ednCv43VNRVpkUL2EvV13YUB5DoO74U"
CALL_EVENT = "$bObJ4sJMXlYweZxqmA6OVwGsSZZlM0cpBmzPhmED5ac"


@pytest.fixture
def pnm() -> Iterator[FakeAcrobitsPnm]:
    server = FakeAcrobitsPnm({TOKEN: APP_ID, CALL_TOKEN: CALL_APP_ID}).start()
    yield server
    server.stop()


def register(
    api: Api,
    pnm: FakeAcrobitsPnm,
    *,
    selector: str | None = SELECTOR,
    calls: bool = True,
    expect: int = 201,
    **extra: Any,
) -> dict[str, Any]:
    target: dict[str, Any] = {"device_token": TOKEN, "app_id": APP_ID, "url": pnm.send_url}
    if selector:
        target["selector"] = selector
    if calls:
        target |= {"calls_device_token": CALL_TOKEN, "calls_app_id": CALL_APP_ID}
    body = {"backend": "acrobits", "target": target, "delay_seconds": 0, **extra}
    answer = api.request("POST", "/api/v1/pushkeys", body)
    assert answer.status == expect, answer.body
    result: dict[str, Any] = answer.body
    return result


def outcomes(api: Api, pushkey: str) -> list[str]:
    return [entry["outcome"] for entry in api.deliveries(pushkey)]


def wait_for_outcome(api: Api, pushkey: str, outcome: str) -> list[dict[str, Any]]:
    return list(
        wait_until(lambda: [e for e in api.deliveries(pushkey) if e["outcome"] == outcome], 15)
    )


def test_dm_group_message_and_call_reach_pnm_exactly(api: Api, pnm: FakeAcrobitsPnm) -> None:
    # One selector per registration and operator: this test's own.
    pushkey = register(api, pnm, selector=f"{SELECTOR}-flow")["pushkey"]

    assert api.notify(synapse_body(DM, pushkey)).body == {"rejected": []}
    [dm] = pnm.wait_for(1)
    assert api.notify(synapse_body(GROUP, pushkey)).body == {"rejected": []}
    pnm.wait_for(2)
    assert api.notify(synapse_body("call_invite_dm.1.full", pushkey)).body == {"rejected": []}
    _, group, call = pnm.wait_for(3)

    assert (dm.method, dm.path, dm.headers["content-type"]) == (
        "POST",
        "/pnm2/send",
        "application/json",
    )
    assert dm.json() == {
        "verb": "NotifyTextMessage",
        "AppId": APP_ID,
        "DeviceToken": TOKEN,
        "Selector": f"{SELECTOR}-flow",
        "Badge": 2,
        "Sound": "default",
        "UserName": "@alice:localhost",
        "UserDisplayName": "alice",
        "Message": "hi, this is a DM",
        "ContentType": "text/plain",
        "ThreadId": DM_ROOM,
        "Id": DM_EVENT,
    }
    assert group.json() == {
        "verb": "NotifyTextMessage",
        "AppId": APP_ID,
        "DeviceToken": TOKEN,
        "Selector": f"{SELECTOR}-flow",
        "Badge": 1,
        "Sound": "default",
        "UserName": "@alice:localhost",
        "UserDisplayName": "alice",
        "Message": "hello group",
        "ContentType": "text/plain",
        "ThreadId": GROUP_ROOM,
        "Id": GROUP_EVENT,
    }
    assert call.json() == {
        "verb": "NotifyIncomingCall",
        "AppId": CALL_APP_ID,
        "DeviceToken": CALL_TOKEN,
        "Selector": f"{SELECTOR}-flow",
        "Id": CALL_EVENT,
        "UserName": "@alice:localhost",
        "UserDisplayName": "alice",
    }
    wait_until(lambda: outcomes(api, pushkey) == ["delivered"] * 3, 15)
    assert len(pnm.pushes) == 3


def test_without_selector_pnm_gets_the_generic_verb(api: Api, pnm: FakeAcrobitsPnm) -> None:
    pushkey = register(api, pnm, selector=None, calls=False)["pushkey"]

    api.notify(synapse_body(GROUP, pushkey))

    [request] = pnm.wait_for(1)
    assert request.json() == {
        "verb": "NotifyGenericTextMessage",
        "AppId": APP_ID,
        "DeviceToken": TOKEN,
        "Message": "E2E Group: alice: hello group",
    }


def test_include_content_false_sends_who_but_not_what(api: Api, pnm: FakeAcrobitsPnm) -> None:
    pushkey = register(api, pnm, selector=None, calls=False, options={"include_content": False})[
        "pushkey"
    ]

    api.notify(synapse_body(DM, pushkey))

    [request] = pnm.wait_for(1)
    assert request.json()["Message"] == "alice: New message"
    assert "hi, this is a DM" not in request.body.decode()


def test_unregistered_token_rejects_the_pushkey_at_the_next_event(
    api: Api, pnm: FakeAcrobitsPnm
) -> None:
    pushkey = register(api, pnm, selector=None, calls=False)["pushkey"]
    pnm.unregister(TOKEN)

    assert api.notify(synapse_body(DM, pushkey)).body == {"rejected": []}

    pnm.wait_for(1)
    [entry] = wait_for_outcome(api, pushkey, "rejected")
    assert "code 404" in entry["reason"]
    assert TOKEN not in entry["reason"]
    assert api.request("GET", f"/api/v1/pushkeys/{pushkey}").body["status"] == "rejected"
    # The next event notification reports it, so Synapse deletes the pusher.
    assert api.notify(synapse_body(GROUP, pushkey)).body == {"rejected": [pushkey]}
    time.sleep(1)
    assert len(pnm.requests) == 1  # nothing more was sent to the dead token


def test_transient_failure_is_retried_then_delivered_once(api: Api, pnm: FakeAcrobitsPnm) -> None:
    pnm.queue(Reply(503, b"Service Unavailable", {"Content-Type": "text/plain"}))
    pushkey = register(api, pnm, selector=None, calls=False)["pushkey"]

    api.notify(synapse_body(DM, pushkey))

    first, second = pnm.wait_for(2, timeout=15)
    assert first.json() == second.json()
    wait_for_outcome(api, pushkey, "delivered")
    assert outcomes(api, pushkey) == ["delivered"]
    assert len(pnm.pushes) == 1


def test_registration_masks_tokens_and_explains_what_acrobits_cannot_do(
    api: Api, pnm: FakeAcrobitsPnm
) -> None:
    answer = register(
        api,
        pnm,
        selector=f"{SELECTOR}-view",
        options={"click_url": "element://vector/webapp/#/room/{room_id}", "markdown": True},
    )
    assert answer["app_id"] == "org.mxpush.acrobits"
    assert answer["warnings"] == [
        "options.click_url: not supported by backend 'acrobits', ignored",
        "options.markdown: not supported by backend 'acrobits', ignored",
    ]
    shown = api.request("GET", f"/api/v1/pushkeys/{answer['pushkey']}").body
    assert shown["target"] == {
        "device_token": "****2J=",
        "app_id": APP_ID,
        "selector": f"{SELECTOR}-view",
        "url": pnm.send_url,
        "calls_device_token": "****rY=",
        "calls_app_id": CALL_APP_ID,
    }
    listed = str(api.request("GET", "/api/v1/pushkeys").body)
    assert TOKEN not in listed and CALL_TOKEN not in listed


def test_priority_overrides_are_refused(api: Api, pnm: FakeAcrobitsPnm) -> None:
    answer = register(api, pnm, options={"priority": {"call": 5}}, expect=400)

    assert answer["errcode"] == "M_INVALID_PARAM"
    assert answer["error"].startswith("options.priority: backend 'acrobits' has no priority")


def test_a_second_registration_for_the_same_selector_is_refused(
    api: Api, pnm: FakeAcrobitsPnm
) -> None:
    register(api, pnm, selector=f"{SELECTOR}-twice")

    answer = register(api, pnm, selector=f"{SELECTOR}-twice", expect=400)

    assert answer["errcode"] == "M_INVALID_PARAM"
    assert answer["error"].startswith("target.selector: you already have")


def test_test_push_reaches_pnm(api: Api, pnm: FakeAcrobitsPnm) -> None:
    pushkey = register(api, pnm, selector=f"{SELECTOR}-test")["pushkey"]

    answer = api.request("POST", f"/api/v1/pushkeys/{pushkey}/test")

    assert answer.body == {"outcome": "delivered"}
    [request] = pnm.requests
    assert request.json()["Message"] == "Your push gateway can reach this device."
