"""`POST /api/client/push_token_report` (matrix2acrobits' endpoint) over real HTTP in local mode:
one Acrobits registration per caller and selector, created then updated in place, and the
pusher set on the homeserver for Matrix-token callers as matrix2acrobits sets it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from mxpush_local.gateway import LocalGateway
from tests.conftest import (
    ADMIN_TOKEN,
    Api,
    count_aws_calls,
    synapse_body,
    wait_until,
    with_event_id,
)
from tests.fakes.acrobits import FakeAcrobitsPnm
from tests.fakes.homeserver import FakeHomeserver
from tests.fakes.server import Reply

REPORT = "/api/client/push_token_report"
APP_ID = "com.cloudsoftphone.app"
CALL_APP_ID = "com.cloudsoftphone.app.pushkit"
EIO_DM = "message_dm_2_members.0.eio"


@pytest.fixture
def pnm() -> Iterator[FakeAcrobitsPnm]:
    server = FakeAcrobitsPnm().start()
    yield server
    server.stop()


@pytest.fixture
def selector() -> str:
    """A selector of this test's own (the gateway and its table are shared by all tests)."""
    return f"{uuid.uuid4().hex[:40].upper()}:7C3A0D14"


def report_body(selector: str, n: int = 1, *, calls: bool = True, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "selector": selector,
        "token_msgs": f"TokenMsgs{n}{selector[:8]}==",
        "appid_msgs": APP_ID,
    }
    if calls:
        body |= {"token_calls": f"TokenCalls{n}{selector[:8]}/=", "appid_calls": CALL_APP_ID}
    return body | extra


def pushers_of(homeserver: FakeHomeserver, user: str, pushkey: str) -> list[dict[str, Any]]:
    return [p for p in homeserver.pushers.get(user, []) if p["pushkey"] == pushkey]


def pusher_sets(homeserver: FakeHomeserver, pushkey: str) -> int:
    return sum(
        1
        for r in homeserver.requests
        if r.path == "/_matrix/client/v3/pushers/set" and r.json().get("pushkey") == pushkey
    )


def registrations_with(api: Api, selector: str, token: str) -> list[dict[str, Any]]:
    listed = api.request("GET", "/api/v1/pushkeys", token=token).body["pushkeys"]
    return [r for r in listed if r["target"].get("selector") == selector]


def test_operator_report_creates_then_updates_one_registration(
    api: Api, gateway: LocalGateway, selector: str
) -> None:
    first = api.request("POST", REPORT, report_body(selector))

    assert first.status == 200, first.body
    pushkey = first.body["pushkey"]
    assert first.body["created"] is True
    assert first.body["app_id"] == APP_ID
    assert first.body["pusher"] == {
        "kind": "http",
        "app_id": APP_ID,
        "pushkey": pushkey,
        "app_display_name": APP_ID,
        "device_display_name": "Acrobits Softphone",
        "lang": "en",
        "data": {"url": gateway.url + "/_matrix/push/v1/notify", "format": "event_id_only"},
        "append": False,
    }
    assert first.body["pusher_registered"] is False
    assert any("pushers/set yourself" in w for w in first.body["warnings"])

    second = api.request("POST", REPORT, report_body(selector, 2, calls=False))

    assert second.status == 200, second.body
    assert (second.body["pushkey"], second.body["created"]) == (pushkey, False)
    assert second.body["pusher"] == first.body["pusher"]
    [shown] = registrations_with(api, selector, token=ADMIN_TOKEN)
    assert shown["pushkey"] == pushkey
    assert shown["backend"] == "acrobits"
    assert shown["target"] == {
        "device_token": "****" + f"2{selector[:8]}=="[-3:],
        "app_id": APP_ID,
        "selector": selector,
        "url": "https://pnm.cloudsoftphone.com/pnm2/send",
    }  # the calls token of the first report is gone: the second had none
    assert f"TokenMsgs2{selector[:8]}" not in str(shown)


def test_a_repeated_report_costs_two_aws_calls(gateway: LocalGateway, selector: str) -> None:
    """The softphone reports at every start: a repeat is one GetItem and one UpdateItem."""

    def report(n: int) -> tuple[int, list[str]]:
        with count_aws_calls() as counter:
            status, _, _ = gateway.handle(
                "POST",
                REPORT,
                {"Content-Type": "application/json", "Authorization": f"Bearer {ADMIN_TOKEN}"},
                json.dumps(report_body(selector, n)).encode(),
            )
        return status, counter.calls

    assert report(1) == (200, ["GetItem", "TransactWriteItems"])
    assert report(2) == (200, ["GetItem", "UpdateItem"])


def test_matrix_user_report_sets_the_pusher_like_matrix2acrobits(
    api: Api, gateway: LocalGateway, homeserver: FakeHomeserver, selector: str
) -> None:
    answer = api.request("POST", REPORT, report_body(selector), token="bob-token")

    assert answer.status == 200, answer.body
    pushkey = answer.body["pushkey"]
    assert answer.body["pusher_registered"] is True
    assert "warnings" not in answer.body
    [pusher] = pushers_of(homeserver, "@bob:localhost", pushkey)
    assert pusher == answer.body["pusher"]
    assert pusher["append"] is False
    assert pusher["data"] == {
        "url": gateway.url + "/_matrix/push/v1/notify",
        "format": "event_id_only",
    }
    assert (pusher["kind"], pusher["app_id"], pusher["device_display_name"]) == (
        "http",
        APP_ID,
        "Acrobits Softphone",
    )
    [mine] = registrations_with(api, selector, token="bob-token")
    assert (mine["owner"], mine["pusher_registered"]) == ("@bob:localhost", True)

    again = api.request("POST", REPORT, report_body(selector, 2), token="bob-token")

    assert (again.status, again.body["pushkey"], again.body["created"]) == (200, pushkey, False)
    # Set again (idempotent on the homeserver): still exactly one pusher for this pushkey.
    assert pusher_sets(homeserver, pushkey) == 2
    assert len(pushers_of(homeserver, "@bob:localhost", pushkey)) == 1
    assert len(registrations_with(api, selector, token="bob-token")) == 1


def test_someone_elses_report_cannot_touch_a_registration(
    api: Api, homeserver: FakeHomeserver, selector: str
) -> None:
    bobs = api.request("POST", REPORT, report_body(selector), token="bob-token").body
    [before] = registrations_with(api, selector, token="bob-token")

    eves = api.request("POST", REPORT, report_body(selector, 9), token="eve-token")

    assert eves.status == 200
    assert eves.body["created"] is True
    assert eves.body["pushkey"] != bobs["pushkey"]
    assert registrations_with(api, selector, token="bob-token") == [before]
    [eves_own] = registrations_with(api, selector, token="eve-token")
    assert eves_own["owner"] == "@eve:localhost"
    assert pushers_of(homeserver, "@eve:localhost", bobs["pushkey"]) == []
    assert api.request("GET", f"/api/v1/pushkeys/{bobs['pushkey']}", token="eve-token").status == (
        404
    )


def test_reported_tokens_are_used_and_a_new_report_revives_a_rejected_registration(
    api: Api, pnm: FakeAcrobitsPnm, homeserver: FakeHomeserver, selector: str
) -> None:
    body = report_body(selector, calls=False, url=pnm.send_url)
    pushkey = api.request("POST", REPORT, body, token="bob-token").body["pushkey"]

    # The token is not (or no longer) registered at PNM: rejected, and Synapse drops the pusher.
    api.notify(synapse_body(EIO_DM, pushkey))
    pnm.wait_for(1)
    wait_until(lambda: status(api, pushkey) == "rejected", 15)
    assert api.notify(with_event_id(synapse_body(EIO_DM, pushkey), "$next")).body == {
        "rejected": [pushkey]
    }
    homeserver.pushers["@bob:localhost"] = pushers_of(homeserver, "@bob:localhost", "none")

    # The softphone starts again and reports a fresh token (and no URL: the stored one stays).
    fresh = report_body(selector, 2, calls=False)
    pnm.register_device(fresh["token_msgs"], APP_ID)
    answer = api.request("POST", REPORT, fresh, token="bob-token")

    assert (answer.body["pushkey"], answer.body["created"]) == (pushkey, False)
    assert status(api, pushkey) == "active"
    assert len(pushers_of(homeserver, "@bob:localhost", pushkey)) == 1  # set again
    later = with_event_id(synapse_body(EIO_DM, pushkey), "$after-the-report")
    assert api.notify(later).body == {"rejected": []}
    _, delivered = pnm.wait_for(2)
    assert delivered.json() == {
        "verb": "NotifyTextMessage",
        "AppId": APP_ID,
        "DeviceToken": fresh["token_msgs"],
        "Selector": selector,
        "Badge": 2,
        "Sound": "default",
        "UserDisplayName": "New message",
        "Message": "You have a new message.",
        "ContentType": "text/plain",
        "ThreadId": "!YIkXvNfjndhc9gq49pm2feQdKxlW4LZTdsnotiA5TMg",
        "Id": "$after-the-report",
    }


def status(api: Api, pushkey: str) -> str:
    return str(api.request("GET", f"/api/v1/pushkeys/{pushkey}", token="bob-token").body["status"])


def test_a_report_updates_a_registration_made_through_the_api(
    api: Api, pnm: FakeAcrobitsPnm, selector: str
) -> None:
    target = {
        "device_token": "OldToken==",
        "app_id": APP_ID,
        "selector": selector,
        "url": pnm.send_url,
    }
    made = api.request(
        "POST", "/api/v1/pushkeys", {"backend": "acrobits", "target": target}, token="bob-token"
    )
    assert made.status == 201, made.body

    answer = api.request("POST", REPORT, report_body(selector), token="bob-token")

    assert (answer.body["pushkey"], answer.body["created"]) == (made.body["pushkey"], False)
    [shown] = registrations_with(api, selector, token="bob-token")
    assert shown["target"]["url"] == pnm.send_url  # kept
    assert shown["target"]["calls_app_id"] == CALL_APP_ID  # added
    assert answer.body["pusher"] == made.body["pusher"]  # the registration's own pusher


def test_homeserver_refusing_the_pusher_leaves_nothing_behind(
    api: Api, homeserver: FakeHomeserver, selector: str
) -> None:
    homeserver.pushers_set_failure = Reply(500, {"errcode": "M_UNKNOWN", "error": "db"})
    try:
        failed = api.request("POST", REPORT, report_body(selector), token="bob-token")
    finally:
        homeserver.pushers_set_failure = None

    assert failed.status == 502
    assert "pushers/set" in failed.body["error"]
    assert registrations_with(api, selector, token="bob-token") == []
    retried = api.request("POST", REPORT, report_body(selector), token="bob-token")
    assert (retried.status, retried.body["created"]) == (200, True)


def test_deleting_the_registration_lets_the_next_report_start_afresh(
    api: Api, selector: str
) -> None:
    first = api.request("POST", REPORT, report_body(selector), token="bob-token").body
    assert api.request(
        "DELETE", f"/api/v1/pushkeys/{first['pushkey']}", token="bob-token"
    ).status == (204)

    again = api.request("POST", REPORT, report_body(selector), token="bob-token").body

    assert again["created"] is True
    assert again["pushkey"] != first["pushkey"]


def test_the_documented_app_id_spelling_is_accepted_too(api: Api, selector: str) -> None:
    body = {
        "selector": selector,
        "token_msgs": "TokenMsgs==",
        "app_id_msgs": APP_ID,
        "token_calls": "TokenCalls==",
        "app_id_calls": CALL_APP_ID,
        "username": "201",
    }

    answer = api.request("POST", REPORT, body)

    assert answer.status == 200, answer.body
    assert answer.body["app_id"] == APP_ID
    assert "username: unknown field, ignored" in answer.body["warnings"]
    [shown] = registrations_with(api, selector, token=ADMIN_TOKEN)
    assert shown["target"]["calls_app_id"] == CALL_APP_ID


def test_a_reported_url_is_checked_like_every_target_url(api: Api, selector: str) -> None:
    body = report_body(selector, url="http://169.254.169.254/pnm2/send")

    answer = api.request("POST", REPORT, body)

    assert (answer.status, answer.body["errcode"]) == (400, "M_INVALID_PARAM")
    assert answer.body["error"].startswith("url: ")
    assert "metadata" in answer.body["error"]


def test_empty_call_fields_mean_no_calls_token(api: Api, selector: str) -> None:
    answer = api.request("POST", REPORT, report_body(selector, token_calls="", appid_calls=""))

    assert answer.status == 200, answer.body
    [shown] = registrations_with(api, selector, token=ADMIN_TOKEN)
    assert "calls_device_token" not in shown["target"]


@pytest.mark.parametrize(
    ("change", "errcode", "field"),
    [
        ({"selector": None}, "M_MISSING_PARAM", "selector:"),
        ({"token_msgs": ""}, "M_MISSING_PARAM", "token_msgs:"),
        ({"appid_msgs": None}, "M_MISSING_PARAM", "appid_msgs:"),
        ({"token_msgs": 12345}, "M_INVALID_PARAM", "token_msgs:"),
        ({"token_msgs": "two words"}, "M_INVALID_PARAM", "token_msgs:"),
        ({"selector": "x" * 513}, "M_INVALID_PARAM", "selector:"),
        ({"appid_msgs": "a" * 65}, "M_INVALID_PARAM", "appid_msgs:"),
        ({"app_id_msgs": "com.other.app"}, "M_INVALID_PARAM", "app_id_msgs:"),
        ({"appid_calls": None}, "M_MISSING_PARAM", "appid_calls"),
        ({"token_calls": ""}, "M_MISSING_PARAM", "token_calls:"),
        ({"token_calls": "tab\there"}, "M_INVALID_PARAM", "token_calls:"),
    ],
)
def test_bad_reports_name_the_field(
    api: Api, selector: str, change: dict[str, Any], errcode: str, field: str
) -> None:
    body = {k: v for k, v in (report_body(selector) | change).items() if v is not None}

    answer = api.request("POST", REPORT, body)

    assert answer.status == 400, answer.body
    assert answer.body["errcode"] == errcode
    assert answer.body["error"].startswith(field), answer.body["error"]
    assert registrations_with(api, selector, token=ADMIN_TOKEN) == []


@pytest.mark.parametrize("body", [[], "selector", 42])
def test_report_body_must_be_an_object(api: Api, body: Any) -> None:
    answer = api.request("POST", REPORT, body)

    assert (answer.status, answer.body["errcode"]) == (400, "M_INVALID_PARAM")
    assert answer.body["error"].startswith("body:")


def test_report_needs_json_and_a_token(api: Api, selector: str) -> None:
    not_json = api.request("POST", REPORT, raw=b"selector=x&token_msgs=y")
    assert (not_json.status, not_json.body["errcode"]) == (400, "M_NOT_JSON")
    missing = api.request("POST", REPORT, report_body(selector), token=None)
    assert (missing.status, missing.body["errcode"]) == (401, "M_MISSING_TOKEN")
    wrong = api.request("POST", REPORT, report_body(selector), token="not-a-token")
    assert (wrong.status, wrong.body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    get = api.request("GET", REPORT)
    assert (get.status, get.body["errcode"]) == (405, "M_UNRECOGNIZED")
