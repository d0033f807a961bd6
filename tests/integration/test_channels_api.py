"""Registering channels over real HTTP: validation naming the field, limits, warnings, masked
listing with each channel's health, and registrations of one backend unchanged."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from mxpush import wiring
from mxpush.ids import registration_id
from mxpush.model import Mode
from mxpush.store.models import REGISTRATION_SK
from tests.conftest import GOTIFY_TOKEN, Api
from tests.fakes.gotify import FakeGotify

NTFY_TOKEN = "tk_AgQdq7mVBoFD37zQVN29RhuMzNIz2"
GOTIFY: dict[str, Any] = {
    "backend": "gotify",
    "target": {"url": "http://127.0.0.1:1", "token": GOTIFY_TOKEN},
}
NTFY: dict[str, Any] = {
    "backend": "ntfy",
    "target": {"url": "http://127.0.0.1:2/topic_x", "token": NTFY_TOKEN},
}
HOOK: dict[str, Any] = {"backend": "webhook", "target": {"url": "http://127.0.0.1:3/hook"}}


def post(api: Api, body: dict[str, Any]) -> Any:
    return api.request("POST", "/api/v1/pushkeys", body)


def raw_registration(pushkey: str) -> dict[str, Any]:
    store = wiring.store()
    item = store._get_raw(registration_id(pushkey), REGISTRATION_SK)
    assert item is not None
    return item


def test_channels_are_registered_and_shown_masked_with_their_health(api: Api) -> None:
    answer = post(
        api,
        {
            "channels": [
                {**GOTIFY, "give_up_after_seconds": 10},
                {**NTFY, "options": {"include_content": False}},
                {**HOOK, "after_seconds": 900},
            ],
            "options": {"markdown": True},
            "delay_seconds": 5,
        },
    )
    assert answer.status == 201, answer.body
    assert "warnings" not in answer.body
    assert answer.body["app_id"] == "org.mxpush.gotify"  # the first channel's
    pushkey = answer.body["pushkey"]

    shown = api.request("GET", f"/api/v1/pushkeys/{pushkey}").body
    assert shown["mode"] == "fallback"
    assert shown["backend"] == "gotify"  # the first channel, as for one backend
    channels = shown["channels"]
    assert [c["backend"] for c in channels] == ["gotify", "ntfy", "webhook"]
    assert channels[0]["target"]["token"] == "****id1"
    assert channels[1]["target"]["token"].startswith("****")
    assert GOTIFY_TOKEN not in str(shown) and NTFY_TOKEN not in str(shown)
    assert [c["after_seconds"] for c in channels] == [0, 0, 900]
    assert [c["give_up_after_seconds"] for c in channels] == [10, None, None]
    # Top-level options are the default of channels without their own.
    assert channels[0]["options"]["markdown"] is True
    assert channels[1]["options"]["markdown"] is False
    assert channels[1]["options"]["include_content"] is False
    assert channels[2]["options"]["markdown"] is True
    assert all(
        c["health"] == {"rejected": False, "last_success": None, "last_failure": None}
        for c in channels
    )
    listed = api.request("GET", "/api/v1/pushkeys").body["pushkeys"]
    [mine] = [r for r in listed if r["pushkey"] == pushkey]
    assert [c["backend"] for c in mine["channels"]] == ["gotify", "ntfy", "webhook"]
    assert NTFY_TOKEN not in str(listed)


def test_a_registration_of_one_backend_is_stored_as_before(api: Api, gotify: FakeGotify) -> None:
    pushkey = api.register(gotify)
    item = raw_registration(pushkey)
    assert not {"more_channels", "mode", "chrej", "give_up_after_seconds"} & set(item)
    shown = api.request("GET", f"/api/v1/pushkeys/{pushkey}").body
    assert shown["mode"] == "fallback"
    assert [c["backend"] for c in shown["channels"]] == ["gotify"]
    # A list of one channel is the same registration.
    one = post(api, {"channels": [GOTIFY]})
    assert one.status == 201
    assert not {"more_channels", "mode"} & set(raw_registration(one.body["pushkey"]))


def test_mode_all_is_stored(api: Api) -> None:
    answer = post(api, {"channels": [GOTIFY, NTFY], "mode": "all"})
    assert answer.status == 201, answer.body
    item = raw_registration(answer.body["pushkey"])
    assert item["mode"] == Mode.ALL.value
    assert [c["backend"] for c in item["more_channels"]] == ["ntfy"]


def test_unknown_channel_fields_are_warned_about(api: Api) -> None:
    answer = post(
        api,
        {"channels": [GOTIFY, {**NTFY, "colour": "blue", "target": {**NTFY["target"], "x": 1}}]},
    )
    assert answer.status == 201, answer.body
    assert "channels[1].colour: unknown field, ignored" in answer.body["warnings"]
    assert any(w.startswith("channels[1].target.x") for w in answer.body["warnings"])


@pytest.mark.parametrize(
    ("body", "errcode", "mentions"),
    [
        ({"channels": []}, "M_INVALID_PARAM", "channels: must hold 1 to 5"),
        ({"channels": [GOTIFY] * 6}, "M_INVALID_PARAM", "channels: must hold 1 to 5"),
        ({"channels": {"0": GOTIFY}}, "M_INVALID_PARAM", "channels: must be a list"),
        ({"channels": [GOTIFY, "ntfy"]}, "M_INVALID_PARAM", "channels[1]: must be an object"),
        (
            {"channels": [GOTIFY, {**NTFY, "target": {"url": "ftp://x/y"}}]},
            "M_INVALID_PARAM",
            "channels[1].target.url",
        ),
        (
            {"channels": [GOTIFY, {"target": {}}]},
            "M_MISSING_PARAM",
            "channels[1].backend: required",
        ),
        (
            {"channels": [GOTIFY, {"backend": "ntfy"}]},
            "M_MISSING_PARAM",
            "channels[1].target: required",
        ),
        (
            {"channels": [GOTIFY, {**NTFY, "backend": "pigeon"}]},
            "M_INVALID_PARAM",
            "channels[1].backend: unknown backend",
        ),
        (
            {"channels": [{**GOTIFY, "after_seconds": 5}, NTFY]},
            "M_INVALID_PARAM",
            "channels[0].after_seconds",
        ),
        (
            {"channels": [GOTIFY, {**NTFY, "after_seconds": 86401}]},
            "M_INVALID_PARAM",
            "channels[1].after_seconds: must be between 0 and 86400",
        ),
        (
            {"channels": [GOTIFY, {**NTFY, "after_seconds": -1}]},
            "M_INVALID_PARAM",
            "channels[1].after_seconds",
        ),
        (
            {"channels": [GOTIFY, {**NTFY, "after_seconds": "5"}]},
            "M_INVALID_PARAM",
            "channels[1].after_seconds: must be an integer",
        ),
        (
            {"channels": [GOTIFY, {**NTFY, "give_up_after_seconds": 1.5}]},
            "M_INVALID_PARAM",
            "channels[1].give_up_after_seconds: must be an integer",
        ),
        (
            {"channels": [GOTIFY, {**NTFY, "after_seconds": 60}], "mode": "all"},
            "M_INVALID_PARAM",
            'channels[1].after_seconds: only in mode "fallback"',
        ),
        ({"channels": [GOTIFY], "mode": "some"}, "M_INVALID_PARAM", "mode: must be"),
        ({**GOTIFY, "mode": "all"}, "M_INVALID_PARAM", "mode: only with channels"),
        ({**GOTIFY, "channels": [NTFY]}, "M_INVALID_PARAM", "give either backend and target"),
        (
            {"channels": [GOTIFY, {**NTFY, "options": {"priority": {"call": 9}}}]},
            "M_INVALID_PARAM",
            "channels[1].options.priority.call",
        ),
        (
            {
                "channels": [
                    GOTIFY,
                    {
                        "backend": "acrobits",
                        "target": {"device_token": "abc", "selector": "sel"},
                    },
                ]
            },
            "M_INVALID_PARAM",
            "channels[1].backend: 'acrobits' can only be the first channel",
        ),
    ],
)
def test_invalid_channels_say_which_field(
    api: Api, body: dict[str, Any], errcode: str, mentions: str
) -> None:
    answer = post(api, body)
    assert answer.status == 400, answer.body
    assert answer.body["errcode"] == errcode
    assert mentions in answer.body["error"]


def test_the_readme_channel_examples_register(api: Api) -> None:
    """The README's curl bodies in "Channels", with their example hosts pointed at this machine
    (local mode resolves every target's hostname at registration)."""

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("\n## Channels\n", 1)[1].split("\n## ", 1)[0]
    bodies = re.findall(r"-d '(\{.*?\})'", section, re.DOTALL)
    assert len(bodies) == 2
    for text in bodies:
        body = json.loads(re.sub(r"https://[a-z]+\.example\.org", "http://127.0.0.1:9", text))
        answer = post(api, body)
        assert answer.status == 201, answer.body
        assert "warnings" not in answer.body
