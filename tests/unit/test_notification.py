"""`parse_notify_body`: what Synapse sends parses, and every bad body is refused by type, with
a message naming the field that was wrong."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from mxpush.errors import ApiError, BadJson, NotJson, TooLarge
from mxpush.notification import MAX_BODY_BYTES, parse_notify_body

FIXTURES = Path(__file__).parents[1] / "fixtures" / "synapse-1.163.2"
FIXTURE_FILES = sorted(FIXTURES.glob("*.json"))
BADGE_FIXTURES = ("read_receipt_dm_badge.0.full", "read_receipts_all_badge.3.eio")


def fixture(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return body


def encode(body: Any) -> bytes:
    return json.dumps(body).encode()


def minimal(**notification: Any) -> dict[str, Any]:
    """The smallest valid body, with `notification` fields added or replaced."""
    base: dict[str, Any] = {"devices": [{"app_id": "org.example.test", "pushkey": "pk"}]}
    base.update(notification)
    return {"notification": base}


_REMOVE = object()


def with_device(**device: Any) -> dict[str, Any]:
    """A valid body whose only device has `device` fields added, replaced or (`_REMOVE`) removed."""
    dev: dict[str, Any] = {"app_id": "org.example.test", "pushkey": "pk"}
    for key, value in device.items():
        if value is _REMOVE:
            dev.pop(key, None)
        else:
            dev[key] = value
    return {"notification": {"event_id": "$e", "devices": [dev]}}


def test_fixture_directory_is_not_empty() -> None:
    assert len(FIXTURE_FILES) >= 30


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.stem)
def test_every_captured_synapse_body_parses(path: Path) -> None:
    raw = path.read_bytes()
    document = json.loads(raw)["notification"]

    notification = parse_notify_body(raw)

    assert len(notification.devices) == len(document["devices"]) == 1
    device = notification.devices[0]
    assert device.app_id == document["devices"][0]["app_id"]
    assert device.pushkey == document["devices"][0]["pushkey"]
    assert device.pushkey_ts == document["devices"][0]["pushkey_ts"]
    assert device.event_id_only == path.name.endswith(".eio.json")
    assert notification.unread == document["counts"]["unread"]
    assert notification.event_id == document.get("event_id")
    assert notification.room_id == document.get("room_id")
    assert notification.type == document.get("type")


def test_full_fixture_fields_are_kept() -> None:
    notification = parse_notify_body(encode(fixture("message_group_mention.1.full")))

    assert notification.event_id == "$-ua_nw959CRpUT5XabGaIbDJyRyBzHQDZQieXOt1nHY"
    assert notification.room_id == "!bbQQMCPwmd9aM1RGdKYA_jwXJsIG1Mb_o6KwYXBITTU"
    assert notification.type == "m.room.message"
    assert notification.sender == "@alice:localhost"
    assert notification.sender_display_name == "alice"
    assert notification.room_name == "E2E Group"
    assert notification.prio == "high"
    assert notification.content is not None
    assert notification.content["body"] == "bob: are you there?"
    assert notification.devices[0].tweaks.highlight is True
    assert notification.devices[0].tweaks.sound == "default"
    assert not notification.is_badge_only


def test_invite_fixture_keeps_user_is_target() -> None:
    notification = parse_notify_body(encode(fixture("member_invite_dm.1.full")))

    assert notification.user_is_target is True
    assert notification.type == "m.room.member"


def test_low_priority_fixture() -> None:
    notification = parse_notify_body(encode(fixture("message_group_3_members.1.full")))

    assert notification.prio == "low"
    assert notification.devices[0].tweaks.highlight is False
    assert notification.devices[0].tweaks.sound is None


# --- badge-only ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BADGE_FIXTURES)
def test_badge_only_fixtures_are_detected(name: str) -> None:
    notification = parse_notify_body(encode(fixture(name)))

    assert notification.is_badge_only
    assert notification.event_id is None
    assert notification.room_id is None


def test_counts_zero_badge() -> None:
    notification = parse_notify_body(encode(fixture("read_receipts_all_badge.2.full")))

    assert notification.is_badge_only
    assert notification.unread == 0


@pytest.mark.parametrize(
    "notification",
    [
        {},
        {"id": ""},
        {"event_id": ""},
        {"event_id": None},
        {"id": "", "sender": "", "type": None, "counts": {"unread": 3}},
    ],
    ids=["no-event-id", "empty-id", "empty-event-id", "null-event-id", "synapse-shape"],
)
def test_no_event_id_means_badge_only(notification: dict[str, Any]) -> None:
    assert parse_notify_body(encode(minimal(**notification))).is_badge_only


def test_event_id_means_not_badge_only() -> None:
    parsed = parse_notify_body(encode(minimal(event_id="$abc")))

    assert not parsed.is_badge_only
    assert parsed.event_id == "$abc"


# --- lenient where the spec says so -------------------------------------------------------------


def test_unknown_fields_are_accepted_at_every_level() -> None:
    body = fixture("message_dm_2_members.1.full")
    body["x_top"] = [1, 2]
    body["notification"]["x_notification"] = {"nested": True}
    body["notification"]["counts"]["x_count"] = "text"
    body["notification"]["devices"][0]["x_device"] = None
    body["notification"]["devices"][0]["tweaks"]["x_tweak"] = 5

    notification = parse_notify_body(encode(body))

    assert notification.event_id == "$9YKtqgWbvfhsr99S2R_6S66iVIWunPAkPKPnHo_e5tI"
    assert notification.devices[0].tweaks.sound == "default"


def test_nulls_mean_defaults() -> None:
    body = minimal(prio=None, user_is_target=None, counts={"unread": None}, content=None)
    body["notification"]["devices"][0].update(data=None, tweaks=None, pushkey_ts=None)

    notification = parse_notify_body(encode(body))

    assert notification.prio == "high"
    assert notification.user_is_target is False
    assert notification.unread == 0
    assert notification.content is None
    assert dict(notification.devices[0].data) == {}
    assert notification.devices[0].tweaks.highlight is False


def test_several_devices_in_one_request() -> None:
    body = fixture("message_group_mention.1.full")
    second = copy.deepcopy(body["notification"]["devices"][0])
    second.update(
        pushkey="second-key", data={"format": "event_id_only"}, tweaks={"highlight": False}
    )
    body["notification"]["devices"].append(second)

    notification = parse_notify_body(encode(body))

    assert [d.pushkey for d in notification.devices] == ["test-pushkey", "second-key"]
    assert [d.event_id_only for d in notification.devices] == [False, True]
    assert [d.tweaks.highlight for d in notification.devices] == [True, False]


def test_a_bad_second_device_is_named_by_its_index() -> None:
    body = minimal()
    body["notification"]["devices"].append({"app_id": "org.example.test"})

    with pytest.raises(BadJson, match=r"notification\.devices\[1\]\.pushkey"):
        parse_notify_body(encode(body))


# --- limits -------------------------------------------------------------------------------------


def _body_of_size(size: int) -> bytes:
    def build(padding: str) -> bytes:
        return encode(minimal(event_id="$e", x_padding=padding))

    raw = build("x" * (size - len(build(""))))
    assert len(raw) == size
    return raw


def test_body_of_exactly_the_limit_is_accepted() -> None:
    assert MAX_BODY_BYTES == 512 * 1024

    notification = parse_notify_body(_body_of_size(512 * 1024))

    assert notification.event_id == "$e"


def test_body_one_byte_over_the_limit_is_too_large() -> None:
    with pytest.raises(TooLarge) as caught:
        parse_notify_body(_body_of_size(512 * 1024 + 1))

    assert caught.value.status == 413
    assert caught.value.errcode == "M_TOO_LARGE"


def test_app_id_of_64_characters_is_accepted() -> None:
    parsed = parse_notify_body(encode(with_device(app_id="a" * 64)))

    assert parsed.devices[0].app_id == "a" * 64


def test_pushkey_of_512_bytes_in_multibyte_characters_is_accepted() -> None:
    pushkey = "é" * 256  # 512 bytes in UTF-8

    parsed = parse_notify_body(encode(with_device(pushkey=pushkey)))

    assert parsed.devices[0].pushkey == pushkey


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"this is not json", "body: not valid JSON"),
        (b'{"notification": ', "body: not valid JSON"),
        (b'{"notification": {"room_name": "\xff\xfe"}}', "body: not valid UTF-8"),
        (b'{"notification": {"counts": {"unread": NaN}}}', "NaN"),
        (b'{"notification": {"counts": {"unread": Infinity}}}', "Infinity"),
        (b"", "body: not valid JSON"),
    ],
    ids=["text", "truncated", "invalid-utf8", "nan", "infinity", "empty"],
)
def test_not_json(raw: bytes, message: str) -> None:
    with pytest.raises(NotJson, match=message) as caught:
        parse_notify_body(raw)

    assert caught.value.errcode == "M_NOT_JSON"
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ([minimal()], "body"),
        ("notification", "body"),
        ({}, "notification"),
        ({"notification": []}, "notification"),
        ({"notification": {"event_id": "$e"}}, "notification.devices"),
        (minimal(devices=[]), "notification.devices"),
        (minimal(devices={"app_id": "a", "pushkey": "p"}), "notification.devices"),
        (minimal(devices=["pushkey"]), "notification.devices[0]"),
        (minimal(event_id=42), "notification.event_id"),
        (minimal(room_id=["!r"]), "notification.room_id"),
        (minimal(sender_display_name={}), "notification.sender_display_name"),
        (minimal(prio="urgent"), "notification.prio"),
        (minimal(prio=1), "notification.prio"),
        (minimal(user_is_target="yes"), "notification.user_is_target"),
        (minimal(content="hello"), "notification.content"),
        (minimal(content=["hello"]), "notification.content"),
        (minimal(counts=[1]), "notification.counts"),
        (minimal(counts={"unread": -1}), "notification.counts.unread"),
        (minimal(counts={"unread": True}), "notification.counts.unread"),
        (minimal(counts={"unread": "3"}), "notification.counts.unread"),
        (minimal(counts={"unread": 1.5}), "notification.counts.unread"),
        (minimal(counts={"missed_calls": -2}), "notification.counts.missed_calls"),
        (with_device(app_id=_REMOVE), "notification.devices[0].app_id"),
        (with_device(app_id=7), "notification.devices[0].app_id"),
        (with_device(app_id=""), "notification.devices[0].app_id"),
        (with_device(app_id="a" * 65), "notification.devices[0].app_id"),
        (with_device(pushkey=_REMOVE), "notification.devices[0].pushkey"),
        (with_device(pushkey=123), "notification.devices[0].pushkey"),
        (with_device(pushkey=""), "notification.devices[0].pushkey"),
        (with_device(pushkey="k" * 513), "notification.devices[0].pushkey"),
        # 257 characters but 514 bytes: the limit counts bytes.
        (with_device(pushkey="é" * 257), "notification.devices[0].pushkey"),
        (with_device(pushkey_ts=True), "notification.devices[0].pushkey_ts"),
        (with_device(pushkey_ts="1795316302"), "notification.devices[0].pushkey_ts"),
        (with_device(data="format"), "notification.devices[0].data"),
        (with_device(data=["format"]), "notification.devices[0].data"),
        (with_device(tweaks="sound"), "notification.devices[0].tweaks"),
        (with_device(tweaks={"highlight": "true"}), "notification.devices[0].tweaks.highlight"),
        (with_device(tweaks={"highlight": 1}), "notification.devices[0].tweaks.highlight"),
        (with_device(tweaks={"sound": True}), "notification.devices[0].tweaks.sound"),
        (with_device(tweaks={"sound": {"name": "ring"}}), "notification.devices[0].tweaks.sound"),
    ],
)
def test_bad_json_names_the_field(body: Any, field: str) -> None:
    with pytest.raises(BadJson) as caught:
        parse_notify_body(encode(body))

    # The message starts with the exact field path, then ": ".
    assert caught.value.error.startswith(field + ": "), caught.value.error
    assert caught.value.errcode == "M_BAD_JSON"
    assert caught.value.status == 400


def test_errors_never_echo_the_pushkey() -> None:
    pushkey = "secret-" + "k" * 600

    with pytest.raises(ApiError) as caught:
        parse_notify_body(encode(with_device(pushkey=pushkey)))

    assert "secret-" not in str(caught.value)
