"""Parsing and validation of Push Gateway API notify bodies (`POST /_matrix/push/v1/notify`).

Every rejection names the field that was wrong, e.g.
`notification.devices[0].pushkey: must be a string`. Unknown fields are accepted and ignored,
as the spec requires (Synapse sends `id` and `membership`, for instance).

The field limits (the README's "Field limits" table) live here, so that nothing a caller sends
can make what we store grow without bound: identifiers are refused when longer than their limit,
since a cut identifier would name something else; text shown to people is cut with "…".
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mxpush.errors import BadJson, NotJson, TooLarge

# --- Field limits -------------------------------------------------------------------------------
MAX_BODY_BYTES = 512 * 1024
# Nesting of arrays and objects in any JSON body: Synapse's deepest is 4.
MAX_JSON_DEPTH = 64
# The Matrix spec caps event ids, room ids, user ids, room aliases and event types at 255 bytes.
MAX_ID_BYTES = 255
MAX_APP_ID_CHARS = 64
MAX_PUSHKEY_BYTES = 512
# Display names and room names: cut with "…" (Synapse caps display names at 256 characters).
MAX_NAME_BYTES = 255
# The message body kept for rendering: cut with "…".
MAX_MESSAGE_BODY_BYTES = 1000
# `tweaks.sound`, `content.msgtype`, `content.membership`: names we only match against known
# values; a longer one matches none, so it is ignored (the default sound, a generic message).
MAX_KEYWORD_BYTES = 64
# `counts.unread` and `counts.missed_calls` are clamped here (a badge shows no more anyway).
MAX_COUNT = 2**31 - 1

ELLIPSIS = "…"
_IDS = ("event_id", "room_id", "type", "sender", "room_alias")
_NAMES = ("sender_display_name", "room_name")
# A JSON string literal, escapes included; unterminated ones run to the end, which keeps the
# scan linear (a required closing quote makes the regex quadratic on `"\\"\\"\\"...`).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
# `\uD800` to `\uDFFF`: the only way a lone surrogate gets into a decoded JSON string.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SIMPLE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


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
    """`json.loads` for untrusted bodies: rejects invalid UTF-8, nesting deeper than
    `MAX_JSON_DEPTH` (checked before parsing, which recurses), numbers no float can hold, the
    non-standard NaN/Infinity literals, and strings with lone surrogates (`"\\ud800"` is valid
    JSON, but no UTF-8 text: storing or sending it would fail later)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise NotJson("body: not valid UTF-8") from None
    _check_depth(raw)
    try:
        document = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except ValueError as exc:
        # Also Python's limit on the digits of an integer (`10**5000` written out).
        raise NotJson(f"body: not valid JSON ({exc})") from None
    if _SURROGATE_ESCAPE.search(raw):
        _check_unicode(document)
    return document


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError("a number is out of range")
    return value


def _check_depth(raw: bytes) -> None:
    """A linear scan: brackets outside string literals, counted."""
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    depth = 0
    for byte in brackets:
        depth += 1 if byte in b"[{" else -1
        if depth > MAX_JSON_DEPTH:
            raise BadJson(f"body: nested deeper than {MAX_JSON_DEPTH} levels")


def _check_unicode(document: Any) -> None:
    """Raise `BadJson` naming the first string (value or key) that is not valid Unicode."""
    # Iterative, though `_check_depth` bounds the depth: no recursion on untrusted input.
    pending: list[tuple[Any, str]] = [(document, "body")]
    while pending:
        value, where = pending.pop()
        if isinstance(value, str):
            if not _is_unicode(value):
                raise BadJson(f"{where}: not valid Unicode (a lone surrogate)")
        elif isinstance(value, dict):
            for key, item in value.items():
                name = _path(where, key)
                if not _is_unicode(key):
                    raise BadJson(f"{name}: key is not valid Unicode (a lone surrogate)")
                pending.append((item, name))
        elif isinstance(value, list):
            pending.extend((item, f"{where}[{i}]") for i, item in enumerate(value))


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _path(where: str, key: str) -> str:
    """`where.key`, as field names are written in errors; "body" is the document itself. Keys
    that are no plain name (the caller's own text, maybe invalid) are not echoed."""
    if not _SIMPLE_KEY.fullmatch(key):
        return f"{where}[…]"
    return key if where == "body" else f"{where}.{key}"


def cut_text(text: str, max_bytes: int) -> str:
    """`text` if its UTF-8 form fits `max_bytes`, else its longest prefix that fits with "…"."""
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    budget = max_bytes - len(ELLIPSIS.encode("utf-8"))
    # Decoding with "ignore" drops the bytes of a character the cut went through.
    return encoded[:budget].decode("utf-8", "ignore") + ELLIPSIS


def fits(text: str, max_bytes: int) -> bool:
    return len(text.encode("utf-8")) <= max_bytes


def _parse_notification(n: Mapping[str, Any]) -> Notification:
    strings: dict[str, str | None] = {}
    for key in _IDS:
        value = _optional_string(n, key, "notification")
        if value is not None and not fits(value, MAX_ID_BYTES):
            raise BadJson(f"notification.{key}: must be at most {MAX_ID_BYTES} bytes")
        strings[key] = value
    for key in _NAMES:
        value = _optional_string(n, key, "notification")
        strings[key] = None if value is None else cut_text(value, MAX_NAME_BYTES)
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
    return min(value, MAX_COUNT)


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
    if sound is not None and not fits(sound, MAX_KEYWORD_BYTES):
        sound = None
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
