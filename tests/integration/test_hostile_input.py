"""Reproductions of issue 9, over real HTTP to local mode: hostile input is answered 4xx with a
Matrix error, and nothing oversized can make a later notify for the same pushkey fail."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import GOTIFY_TOKEN, Api, synapse_body, wait_until, with_event_id
from tests.fakes.gotify import FakeGotify

NOTIFY = "/_matrix/push/v1/notify"
MESSAGE = "message_dm_2_members.1.full"


def assert_bad_json(answer: Any, field: str) -> None:
    assert answer.status == 400, answer.body
    assert answer.body["errcode"] == "M_BAD_JSON"
    assert answer.body["error"].startswith(field + ":"), answer.body


def delivered(api: Api, pushkey: str) -> list[dict[str, Any]]:
    return [e for e in api.deliveries(pushkey) if e["outcome"] == "delivered"]


# --- Lone surrogates: valid JSON, but no UTF-8 text ---------------------------------------------


def test_lone_surrogate_in_pushkey(api: Api) -> None:
    raw = rb'{"notification":{"event_id":"$e","devices":[{"app_id":"a","pushkey":"\ud800"}]}}'
    answer = api.request("POST", NOTIFY, raw=raw, token=None)
    assert_bad_json(answer, "notification.devices[0].pushkey")


def test_lone_surrogate_in_event_id(api: Api) -> None:
    raw = rb'{"notification":{"event_id":"$e\udfff","devices":[{"app_id":"a","pushkey":"k"}]}}'
    answer = api.request("POST", NOTIFY, raw=raw, token=None)
    assert_bad_json(answer, "notification.event_id")


def test_lone_surrogate_in_registration_target_url(api: Api, gotify: FakeGotify) -> None:
    url = json.dumps(gotify.base_url)[1:-1] + r"/\ud800"
    raw = f'{{"backend":"gotify","target":{{"url":"{url}","token":"{GOTIFY_TOKEN}"}}}}'.encode()
    answer = api.request("POST", "/api/v1/pushkeys", raw=raw)
    assert_bad_json(answer, "target.url")


def test_surrogate_pair_is_fine(api: Api, gotify: FakeGotify) -> None:
    pushkey = api.register(gotify, delay=30)
    text = json.dumps(synapse_body(MESSAGE, pushkey))
    raw = text.replace('"alice"', r'"alice \ud83d\ude00"', 1).encode()
    assert raw != text.encode()
    answer = api.request("POST", NOTIFY, raw=raw, token=None)
    assert answer.status == 200, answer.body


# --- Deep nesting: refused before the recursive parser can blow up ------------------------------


@pytest.mark.parametrize(
    "path", [NOTIFY, "/api/v1/pushkeys", "/api/client/push_token_report"], ids=lambda p: p
)
def test_nesting_1000_deep(api: Api, path: str) -> None:
    raw = b'{"a":' + b"[" * 1000 + b"]" * 1000 + b"}"
    answer = api.request("POST", path, raw=raw)
    assert_bad_json(answer, "body")
    assert "nested deeper than 64" in answer.body["error"]


def test_brackets_inside_strings_do_not_count(api: Api, gotify: FakeGotify) -> None:
    pushkey = api.register(gotify, delay=30)
    body = synapse_body(MESSAGE, pushkey)
    body["notification"]["content"]["body"] = "[[[{{{" * 100 + '\\"[' * 100
    answer = api.notify(body)
    assert answer.status == 200, answer.body


# --- Oversized fields: cut when stored, or refused, never a poisoned pushkey --------------------


def test_500_kb_room_name_is_cut_and_delivered(api: Api, gotify: FakeGotify) -> None:
    pushkey = api.register(gotify, delay=1)
    body = synapse_body(MESSAGE, pushkey)
    body["notification"]["room_name"] = "r" * 500_000
    first = api.notify(body)
    retry = api.notify(body)

    assert first.status == 200, first.body
    assert retry.status == 200, retry.body
    wait_until(lambda: delivered(api, pushkey), timeout=15)
    assert [e["outcome"] for e in api.deliveries(pushkey)] == ["delivered"]
    [push] = gotify.requests
    # The room name is shown cut, never in full.
    assert len(push.body) < 10_000


def test_over_long_ids_are_refused_and_do_not_block_the_pushkey(
    api: Api, gotify: FakeGotify
) -> None:
    pushkey = api.register(gotify, delay=1)
    for n in range(2):
        body = with_event_id(synapse_body(MESSAGE, pushkey), f"${n}" + "e" * 10_000)
        body["notification"]["room_id"] = "!" + "r" * 10_000
        answer = api.notify(body)
        assert_bad_json(answer, "notification.event_id")

    normal = api.notify(synapse_body(MESSAGE, pushkey))
    assert normal.status == 200, normal.body
    assert normal.body == {"rejected": []}
    wait_until(lambda: delivered(api, pushkey), timeout=15)


def test_over_long_room_id_is_refused(api: Api) -> None:
    body = synapse_body(MESSAGE, "any-pushkey")
    body["notification"]["room_id"] = "!" + "r" * 255
    assert_bad_json(api.notify(body), "notification.room_id")
