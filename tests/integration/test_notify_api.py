"""The Push Gateway API surface, over real HTTP to local mode (contract: Push Gateway API)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import FIXTURES, Api, synapse_body
from tests.fakes.gotify import FakeGotify

ALL_FIXTURES = sorted(p.stem for p in FIXTURES.glob("*.json"))


def test_discovery_for_unifiedpush(api: Api) -> None:
    answer = api.request("GET", "/_matrix/push/v1/notify", token=None)
    assert answer.status == 200
    assert answer.body == {"unifiedpush": {"gateway": "matrix"}}
    assert answer.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_every_synapse_fixture_is_accepted(api: Api, gotify: FakeGotify, name: str) -> None:
    pushkey = api.register(gotify, delay=30)
    answer = api.notify(synapse_body(name, pushkey))
    assert answer.status == 200, answer.body
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.body == {"rejected": []}


@pytest.mark.parametrize("name", ["message_dm_2_members.1.full", "read_receipt_dm_badge.0.full"])
def test_unknown_pushkey_is_rejected(api: Api, name: str) -> None:
    body = synapse_body(name, "never-registered-pushkey")
    answer = api.notify(body)
    assert answer.status == 200
    assert answer.body == {"rejected": ["never-registered-pushkey"]}


def test_several_devices_per_request(api: Api, gotify: FakeGotify) -> None:
    known = api.register(gotify, delay=30)
    body = synapse_body("message_group_3_members.1.full", known)
    device = body["notification"]["devices"][0]
    body["notification"]["devices"] = [
        device,
        {**device, "pushkey": "unknown-1"},
        {**device, "pushkey": "unknown-2"},
    ]
    answer = api.notify(body)
    assert answer.status == 200
    assert sorted(answer.body["rejected"]) == ["unknown-1", "unknown-2"]


def test_deleted_registration_is_rejected(api: Api, gotify: FakeGotify) -> None:
    pushkey = api.register(gotify, delay=30)
    assert api.request("DELETE", f"/api/v1/pushkeys/{pushkey}").status == 204
    answer = api.notify(synapse_body("message_dm_2_members.1.full", pushkey))
    assert answer.body == {"rejected": [pushkey]}


def test_unknown_fields_are_accepted(api: Api, gotify: FakeGotify) -> None:
    pushkey = api.register(gotify, delay=30)
    body = synapse_body("message_dm_2_members.1.full", pushkey)
    body["notification"]["org.example.future_field"] = {"x": [1, 2]}
    body["notification"]["devices"][0]["org.example.extra"] = True
    body["top_level_extension"] = 1
    answer = api.notify(body)
    assert answer.status == 200
    assert answer.body == {"rejected": []}


@pytest.mark.parametrize(
    ("raw", "errcode", "mentions"),
    [
        (b"not json", "M_NOT_JSON", "body"),
        (b"\xff\xfe", "M_NOT_JSON", "UTF-8"),
        (b"[]", "M_BAD_JSON", "body"),
        (b"{}", "M_BAD_JSON", "notification"),
        (b'{"notification": {"devices": []}}', "M_BAD_JSON", "notification.devices"),
        (b'{"notification": {"devices": [{"pushkey": "x"}]}}', "M_BAD_JSON", "devices[0].app_id"),
        (
            b'{"notification": {"devices": [{"app_id": "a", "pushkey": 5}]}}',
            "M_BAD_JSON",
            "devices[0].pushkey",
        ),
        (
            b'{"notification": {"counts": {"unread": "3"},'
            b' "devices": [{"app_id": "a", "pushkey": "p"}]}}',
            "M_BAD_JSON",
            "counts.unread",
        ),
        (
            b'{"notification": {"prio": "urgent", "devices": [{"app_id": "a", "pushkey": "p"}]}}',
            "M_BAD_JSON",
            "prio",
        ),
    ],
)
def test_bad_bodies_get_matrix_errors(api: Api, raw: bytes, errcode: str, mentions: str) -> None:
    answer = api.request("POST", "/_matrix/push/v1/notify", raw=raw, token=None)
    assert answer.status == 400
    assert answer.body["errcode"] == errcode
    assert mentions in answer.body["error"]


def test_body_over_512_kib_is_too_large(api: Api) -> None:
    body = {
        "notification": {
            "devices": [{"app_id": "a", "pushkey": "p"}],
            "content": {"body": "x" * (512 * 1024)},
        }
    }
    answer = api.request(
        "POST", "/_matrix/push/v1/notify", raw=json.dumps(body).encode(), token=None
    )
    assert answer.status == 413
    assert answer.body["errcode"] == "M_TOO_LARGE"


def test_unknown_path_and_wrong_method(api: Api) -> None:
    unknown = api.request("GET", "/_matrix/push/v1/nope", token=None)
    assert unknown.status == 404
    assert unknown.body["errcode"] == "M_UNRECOGNIZED"
    root = api.request("GET", "/", token=None)
    assert (root.status, root.body["errcode"]) == (404, "M_UNRECOGNIZED")
    wrong = api.request("PUT", "/_matrix/push/v1/notify", {"x": 1}, token=None)
    assert wrong.status == 405
    assert wrong.body["errcode"] == "M_UNRECOGNIZED"
    assert wrong.headers["Allow"] == "GET, POST"
