"""The registration API over real HTTP: auth, validation, pushers/set on the user's behalf,
masking, delete, test push, delivery log."""

from __future__ import annotations

from typing import Any

import pytest

from mxpush import wiring
from mxpush.urlsafety import TargetPolicy
from mxpush_local.gateway import LocalGateway
from tests.conftest import ADMIN_TOKEN, GOTIFY_TOKEN, Api, synapse_body
from tests.fakes.gotify import FakeGotify
from tests.fakes.homeserver import FakeHomeserver
from tests.fakes.server import Reply


def gotify_body(gotify: FakeGotify, **extra: Any) -> dict[str, Any]:
    return {"backend": "gotify", "target": {"url": gotify.base_url, "token": GOTIFY_TOKEN}, **extra}


def test_operator_registers_and_gets_the_pusher_body(
    api: Api, gateway: LocalGateway, gotify: FakeGotify
) -> None:
    answer = api.request(
        "POST",
        "/api/v1/pushkeys",
        gotify_body(
            gotify,
            delay_seconds=5,
            pusher={"device_display_name": "Phone", "format": "event_id_only"},
        ),
    )
    assert answer.status == 201
    pushkey = answer.body["pushkey"]
    assert pushkey.startswith("mxp_") and len(pushkey) > 40
    assert answer.body["app_id"] == "org.mxpush.gotify"
    assert answer.body["pusher"] == {
        "kind": "http",
        "app_id": "org.mxpush.gotify",
        "pushkey": pushkey,
        "app_display_name": "mxpush",
        "device_display_name": "Phone",
        "lang": "en",
        "data": {"url": gateway.url + "/_matrix/push/v1/notify", "format": "event_id_only"},
        "append": False,
    }
    assert answer.body["pusher_registered"] is False
    assert any("pushers/set yourself" in w for w in answer.body["warnings"])


def test_registration_is_shown_with_secrets_masked(api: Api, gotify: FakeGotify) -> None:
    pushkey = api.register(
        gotify, delay=5, options={"click_url": "element://vector/webapp/#/room/{room_id}"}
    )
    one = api.request("GET", f"/api/v1/pushkeys/{pushkey}")
    assert one.status == 200
    assert one.body["target"] == {"url": gotify.base_url, "token": "****id1"}
    assert one.body["delay_seconds"] == 5
    assert one.body["options"]["click_url"] == "element://vector/webapp/#/room/{room_id}"
    assert one.body["status"] == "active"
    listed = api.request("GET", "/api/v1/pushkeys").body["pushkeys"]
    assert pushkey in [r["pushkey"] for r in listed]
    assert GOTIFY_TOKEN not in str(listed)


def test_missing_and_wrong_tokens(api: Api) -> None:
    missing = api.request("GET", "/api/v1/pushkeys", token=None)
    assert (missing.status, missing.body["errcode"]) == (401, "M_MISSING_TOKEN")
    wrong = api.request("GET", "/api/v1/pushkeys", token="not-a-token")
    assert (wrong.status, wrong.body["errcode"]) == (401, "M_UNKNOWN_TOKEN")


def test_matrix_user_registers_and_the_pusher_is_set(
    api: Api, gateway: LocalGateway, gotify: FakeGotify, homeserver: FakeHomeserver
) -> None:
    answer = api.request(
        "POST", "/api/v1/pushkeys", gotify_body(gotify, pusher={"lang": "de"}), token="bob-token"
    )
    assert answer.status == 201, answer.body
    pushkey = answer.body["pushkey"]
    assert answer.body["pusher_registered"] is True
    [stored] = [p for p in homeserver.pushers["@bob:localhost"] if p["pushkey"] == pushkey]
    assert stored == answer.body["pusher"]
    assert stored["data"]["url"] == gateway.url + "/_matrix/push/v1/notify"
    assert stored["lang"] == "de"

    mine = api.request("GET", "/api/v1/pushkeys", token="bob-token").body["pushkeys"]
    assert [r["pushkey"] for r in mine if r["pushkey"] == pushkey] == [pushkey]
    assert all(r["owner"] == "@bob:localhost" for r in mine)
    # Eve can neither see nor delete it.
    assert api.request("GET", f"/api/v1/pushkeys/{pushkey}", token="eve-token").status == 404
    assert api.request("DELETE", f"/api/v1/pushkeys/{pushkey}", token="eve-token").status == 404
    assert pushkey not in str(api.request("GET", "/api/v1/pushkeys", token="eve-token").body)

    assert api.request("DELETE", f"/api/v1/pushkeys/{pushkey}", token="bob-token").status == 204
    assert not [p for p in homeserver.pushers["@bob:localhost"] if p["pushkey"] == pushkey]
    assert api.request("GET", f"/api/v1/pushkeys/{pushkey}", token="bob-token").status == 404


def test_homeserver_refusing_the_pusher_leaves_nothing_behind(
    api: Api, gotify: FakeGotify, homeserver: FakeHomeserver
) -> None:
    before = len(api.request("GET", "/api/v1/pushkeys", token="bob-token").body["pushkeys"])
    homeserver.pushers_set_failure = Reply(500, {"errcode": "M_UNKNOWN", "error": "db"})
    try:
        answer = api.request(
            "POST", "/api/v1/pushkeys", gotify_body(gotify, pusher={}), token="bob-token"
        )
    finally:
        homeserver.pushers_set_failure = None
    assert answer.status == 502
    assert "pushers/set" in answer.body["error"]
    after = api.request("GET", "/api/v1/pushkeys", token="bob-token").body["pushkeys"]
    assert len(after) == before


def test_homeserver_outside_the_allowed_list_is_refused(api: Api, gotify: FakeGotify) -> None:
    answer = api.request(
        "POST",
        "/api/v1/pushkeys",
        gotify_body(gotify, homeserver="https://evil.example"),
        token="bob-token",
    )
    assert (answer.status, answer.body["errcode"]) == (403, "M_FORBIDDEN")


@pytest.mark.parametrize(
    ("body", "errcode", "mentions"),
    [
        ({"target": {}}, "M_MISSING_PARAM", "backend"),
        ({"backend": "carrier-pigeon", "target": {}}, "M_INVALID_PARAM", "backend"),
        ({"backend": "gotify"}, "M_MISSING_PARAM", "target"),
        (
            {"backend": "gotify", "target": {"url": "ftp://x", "token": "t"}},
            "M_INVALID_PARAM",
            "target.url",
        ),
        (
            {"backend": "gotify", "target": {"url": "http://127.0.0.1:1"}},
            "M_INVALID_PARAM",
            "target.token",
        ),
        (
            {"backend": "gotify", "target": {"url": "http://169.254.169.254/", "token": "t"}},
            "M_INVALID_PARAM",
            "metadata",
        ),
        (
            {
                "backend": "gotify",
                "target": {"url": "http://127.0.0.1:1", "token": "t"},
                "delay_seconds": 4000,
            },
            "M_INVALID_PARAM",
            "delay_seconds",
        ),
        (
            {
                "backend": "gotify",
                "target": {"url": "http://127.0.0.1:1", "token": "t"},
                "options": {"click_url": "https://x/{nope}"},
            },
            "M_INVALID_PARAM",
            "options.click_url",
        ),
        (
            {
                "backend": "gotify",
                "target": {"url": "http://127.0.0.1:1", "token": "t"},
                "options": {"priority": {"call": 11}},
            },
            "M_INVALID_PARAM",
            "options.priority.call",
        ),
        (
            {
                "backend": "gotify",
                "target": {"url": "http://127.0.0.1:1", "token": "t"},
                "pusher": {"format": "full"},
            },
            "M_INVALID_PARAM",
            "pusher.format",
        ),
    ],
)
def test_invalid_registrations_say_what_is_wrong(
    api: Api, body: dict[str, Any], errcode: str, mentions: str
) -> None:
    answer = api.request("POST", "/api/v1/pushkeys", body)
    assert answer.status == 400, answer.body
    assert answer.body["errcode"] == errcode
    assert mentions in answer.body["error"]


def test_not_json_registration(api: Api) -> None:
    answer = api.request("POST", "/api/v1/pushkeys", raw=b"{oops")
    assert (answer.status, answer.body["errcode"]) == (400, "M_NOT_JSON")


def test_unknown_fields_are_warned_about(api: Api, gotify: FakeGotify) -> None:
    body = gotify_body(gotify, colour="blue")
    body["target"]["priority"] = 5
    answer = api.request("POST", "/api/v1/pushkeys", body)
    assert answer.status == 201
    assert "colour: unknown field, ignored" in answer.body["warnings"]
    assert any(w.startswith("target.priority") for w in answer.body["warnings"])
    shown = api.request("GET", f"/api/v1/pushkeys/{answer.body['pushkey']}").body
    assert "priority" not in shown["target"]


def test_private_targets_refused_when_the_operator_forbids_them(
    api: Api, gotify: FakeGotify, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wiring, "target_policy", lambda: TargetPolicy(allow_private=False))
    answer = api.request("POST", "/api/v1/pushkeys", gotify_body(gotify))
    assert answer.status == 400
    assert "MXPUSH_ALLOW_PRIVATE_TARGETS" in answer.body["error"]


def test_test_push_is_delivered_and_logged(api: Api, gotify: FakeGotify) -> None:
    pushkey = api.register(gotify, delay=30)
    answer = api.request("POST", f"/api/v1/pushkeys/{pushkey}/test")
    assert answer.status == 200
    assert answer.body == {"outcome": "delivered"}
    [request] = gotify.requests
    assert request.json()["title"] == "mxpush test"
    [entry] = api.deliveries(pushkey)
    assert (entry["outcome"], entry["reason"]) == ("delivered", "test push")


def test_test_push_with_a_bad_token_reports_and_rejects(api: Api, gotify: FakeGotify) -> None:
    pushkey = api.register(gotify, delay=30, token="AppToken.Wrong")
    answer = api.request("POST", f"/api/v1/pushkeys/{pushkey}/test")
    assert answer.status == 502
    assert answer.body["outcome"] == "rejected"
    assert "401" in answer.body["error"]
    assert api.request("GET", f"/api/v1/pushkeys/{pushkey}").body["status"] == "rejected"
    assert api.notify(synapse_body("message_dm_2_members.1.full", pushkey)).body == {
        "rejected": [pushkey]
    }


def test_unknown_pushkey_and_api_paths(api: Api) -> None:
    assert api.request("GET", "/api/v1/pushkeys/mxp_nope").status == 404
    assert api.request("GET", "/api/v1/pushkeys/mxp_nope/deliveries").status == 404
    assert api.request("POST", "/api/v1/pushkeys/mxp_nope/test").status == 404
    wrong = api.request("PATCH", "/api/v1/pushkeys", {})
    assert (wrong.status, wrong.body["errcode"]) == (405, "M_UNRECOGNIZED")
    unknown = api.request("GET", "/api/v2/things", token=ADMIN_TOKEN)
    assert (unknown.status, unknown.body["errcode"]) == (404, "M_UNRECOGNIZED")
