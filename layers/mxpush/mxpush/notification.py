"""Parsing and validation of Push Gateway API notify bodies (`POST /_matrix/push/v1/notify`).

Every rejection names the field that was wrong, e.g.
`notification.devices[0].pushkey: must be a string`. Unknown fields are accepted and ignored,
as the spec requires (Synapse sends `id` and `membership`, for instance).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mxpush.errors import BadJson, NotJson, TooLarge

MAX_BODY_BYTES = 512 * 1024
MAX_APP_ID_CHARS = 64
MAX_PUSHKEY_BYTES = 512
_OPTIONAL_STRINGS = (
    "event_id",
    "room_id",
    "type",
    "sender",
    "sender_display_name",
    "room_name",
    "room_alias",
)


@dataclass(frozen=True)
class Tweaks:
    sound: str | None = None
    highlight: bool = False


@dataclass(frozen=True)
class Device:
    app_id: str
    pushkey: str
    pushkey_ts: int | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    tweaks: Tweaks = field(default_factory=Tweaks)

    @property
    def event_id_only(self) -> bool:
        return self.data.get("format") == "event_id_only"


@dataclass(frozen=True)
class Notification:
    devices: tuple[Device, ...]
    event_id: str | None = None
    room_id: str | None = None
    type: str | None = None
    sender: str | None = None
    sender_display_name: str | None = None
    room_name: str | None = None
    room_alias: str | None = None
    user_is_target: bool = False
    prio: str = "high"
    content: Mapping[str, Any] | None = None
    unread: int = 0
    missed_calls: int = 0

    @property
    def is_badge_only(self) -> bool:
        """No event: a badge update, which Synapse sends when the user reads messages."""
        return self.event_id is None


def parse_notify_body(raw: bytes) -> Notification:
    """Parse a notify request body, or raise `NotJson` / `BadJson` / `TooLarge`."""
    if len(raw) > MAX_BODY_BYTES:
        raise TooLarge(f"request body is larger than {MAX_BODY_BYTES // 1024} KiB")
    document = load_json(raw)
    if not isinstance(document, dict):
        raise BadJson("body: must be a JSON object")
    notification = document.get("notification")
    if not isinstance(notification, dict):
        raise BadJson("notification: required, must be an object")
    return _parse_notification(notification)


def load_json(raw: bytes) -> Any:
    """`json.loads` that rejects invalid UTF-8 and the non-standard NaN/Infinity literals."""
    try:
        text = raw.decode("utf-8")
        return json.loads(text, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise NotJson("body: not valid UTF-8") from None
    except ValueError as exc:
        raise NotJson(f"body: not valid JSON ({exc})") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_notification(n: Mapping[str, Any]) -> Notification:
    strings: dict[str, str | None] = {}
    for key in _OPTIONAL_STRINGS:
        strings[key] = _optional_string(n, key, "notification")
    # Badge-only updates carry no event_id (Synapse sends `"id": ""` beside it); an empty
    # event_id is treated the same way.
    if strings["event_id"] == "":
        strings["event_id"] = None

    user_is_target = n.get("user_is_target", False)
    if user_is_target is None:
        user_is_target = False
    if not isinstance(user_is_target, bool):
        raise BadJson("notification.user_is_target: must be a boolean")

    prio = n.get("prio", "high")
    if prio is None:
        prio = "high"
    if prio not in ("high", "low"):
        raise BadJson('notification.prio: must be "high" or "low"')

    content = n.get("content")
    if content is not None and not isinstance(content, dict):
        raise BadJson("notification.content: must be an object")

    unread, missed_calls = _parse_counts(n.get("counts"))

    devices_raw = n.get("devices")
    if not isinstance(devices_raw, list):
        raise BadJson("notification.devices: required, must be an array")
    if not devices_raw:
        raise BadJson("notification.devices: must contain at least one device")
    devices = tuple(_parse_device(d, i) for i, d in enumerate(devices_raw))

    return Notification(
        devices=devices,
        user_is_target=user_is_target,
        prio=prio,
        content=content,
        unread=unread,
        missed_calls=missed_calls,
        **strings,
    )


def _parse_counts(counts: Any) -> tuple[int, int]:
    if counts is None:
        return 0, 0
    if not isinstance(counts, dict):
        raise BadJson("notification.counts: must be an object")
    return (
        _count(counts, "unread"),
        _count(counts, "missed_calls"),
    )


def _count(counts: Mapping[str, Any], key: str) -> int:
    value = counts.get(key, 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadJson(f"notification.counts.{key}: must be a non-negative integer")
    return value


def _parse_device(d: Any, index: int) -> Device:
    where = f"notification.devices[{index}]"
    if not isinstance(d, dict):
        raise BadJson(f"{where}: must be an object")

    app_id = d.get("app_id")
    if not isinstance(app_id, str):
        raise BadJson(f"{where}.app_id: required, must be a string")
    if not app_id or len(app_id) > MAX_APP_ID_CHARS:
        raise BadJson(f"{where}.app_id: must be 1 to {MAX_APP_ID_CHARS} characters")

    pushkey = d.get("pushkey")
    if not isinstance(pushkey, str):
        raise BadJson(f"{where}.pushkey: required, must be a string")
    if not pushkey or len(pushkey.encode("utf-8")) > MAX_PUSHKEY_BYTES:
        raise BadJson(f"{where}.pushkey: must be 1 to {MAX_PUSHKEY_BYTES} bytes")

    pushkey_ts = d.get("pushkey_ts")
    if pushkey_ts is not None and (isinstance(pushkey_ts, bool) or not isinstance(pushkey_ts, int)):
        raise BadJson(f"{where}.pushkey_ts: must be an integer")

    data = d.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BadJson(f"{where}.data: must be an object")

    return Device(
        app_id=app_id,
        pushkey=pushkey,
        pushkey_ts=pushkey_ts,
        data=data,
        tweaks=_parse_tweaks(d.get("tweaks"), f"{where}.tweaks"),
    )


def _parse_tweaks(tweaks: Any, where: str) -> Tweaks:
    if tweaks is None:
        return Tweaks()
    if not isinstance(tweaks, dict):
        raise BadJson(f"{where}: must be an object")
    sound = tweaks.get("sound")
    if sound is not None and not isinstance(sound, str):
        raise BadJson(f"{where}.sound: must be a string")
    highlight = tweaks.get("highlight", False)
    if highlight is None:
        highlight = False
    if not isinstance(highlight, bool):
        raise BadJson(f"{where}.highlight: must be a boolean")
    return Tweaks(sound=sound, highlight=highlight)


def _optional_string(n: Mapping[str, Any], key: str, where: str) -> str | None:
    value = n.get(key)
    if value is None or isinstance(value, str):
        return value
    raise BadJson(f"{where}.{key}: must be a string")
