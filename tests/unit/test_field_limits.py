"""Field limits (README "Field limits"): refused, cut or ignored, and what is stored stays small."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mxpush.errors import BadJson, NotJson
from mxpush.events import summarize
from mxpush.notification import (
    MAX_COUNT,
    MAX_ID_BYTES,
    MAX_JSON_DEPTH,
    MAX_KEYWORD_BYTES,
    MAX_MESSAGE_BODY_BYTES,
    MAX_NAME_BYTES,
    cut_text,
    load_json,
    parse_notify_body,
)

# Four UTF-8 bytes each: the worst case for every byte limit.
WIDE = "\U0001f600"


def notify(**fields: Any) -> bytes:
    device = {"app_id": "a", "pushkey": "k", **fields.pop("device", {})}
    body = {"notification": {"devices": [device], **fields}}
    return json.dumps(body, ensure_ascii=False).encode()


def at_limit(max_bytes: int) -> str:
    """The longest string of 4-byte characters that fits, padded with ASCII to exactly fit."""
    return WIDE * (max_bytes // 4) + "x" * (max_bytes % 4)


# --- load_json ----------------------------------------------------------------------------------


def test_depth_limit_is_exact() -> None:
    assert MAX_JSON_DEPTH == 64
    assert load_json(b"[" * 64 + b"]" * 64) is not None
    with pytest.raises(BadJson, match="nested deeper than 64"):
        load_json(b"[" * 65 + b"]" * 65)
    with pytest.raises(BadJson, match="nested deeper than 64"):
        load_json(b'{"a":' * 65 + b"1" + b"}" * 65)


def test_brackets_in_strings_and_escaped_quotes_are_not_nesting() -> None:
    text = '"' + "[" * 200 + '\\"' + "{" * 200 + '"'
    assert load_json(f"[{text}]".encode()) == ["[" * 200 + '"' + "{" * 200]


def test_unterminated_string_is_not_json() -> None:
    with pytest.raises(NotJson):
        load_json(b'["' + b'\\"' * 10_000)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (
            rb'{"notification":{"devices":[{"pushkey":"\uDBFF"}]}}',
            "notification.devices[0].pushkey",
        ),
        (rb'{"a":["x","\udc00"]}', "a[1]"),
        (rb'{"\ud800":1}', "body[\u2026]"),
        (rb'"\ud800"', "body"),
    ],
)
def test_lone_surrogates_are_refused_naming_the_field(raw: bytes, field: str) -> None:
    with pytest.raises(BadJson) as error:
        load_json(raw)
    assert error.value.error.startswith(field + ":")
    error.value.error.encode("utf-8")  # the answer itself must be sendable


def test_surrogate_pairs_and_escaped_backslashes_are_fine() -> None:
    assert load_json(rb'["\ud83d\ude00", "\\ud800"]') == [WIDE, "\\ud800"]


@pytest.mark.parametrize(
    "raw", [b"[1e400]", b"[-1e400]", b"[" + b"9" * 5000 + b"]", b"[NaN]", b"[-Infinity]"]
)
def test_numbers_no_float_or_int_holds_are_refused(raw: bytes) -> None:
    with pytest.raises(NotJson):
        load_json(raw)


# --- notify fields ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["event_id", "room_id", "type", "sender", "room_alias"])
def test_ids_are_refused_over_255_bytes(key: str) -> None:
    assert MAX_ID_BYTES == 255
    parse_notify_body(notify(**{key: at_limit(255)}))
    with pytest.raises(BadJson, match=f"^notification.{key}: must be at most 255 bytes"):
        parse_notify_body(notify(**{key: "é" * 128}))


def test_display_name_is_cut() -> None:
    n = parse_notify_body(notify(event_id="$e", sender_display_name=WIDE * 100))
    name = summarize(n, n.devices[0]).sender_name
    assert name is not None
    assert name == WIDE * 63 + "…"
    assert len(name.encode()) <= MAX_NAME_BYTES


def test_room_name_is_cut() -> None:
    n = parse_notify_body(notify(event_id="$e", room_name="r" * 500_000))
    assert n.room_name == "r" * (MAX_NAME_BYTES - 3) + "…"


def test_counts_are_clamped() -> None:
    n = parse_notify_body(notify(counts={"unread": 10**40, "missed_calls": 10**30}))
    assert (n.unread, n.missed_calls) == (MAX_COUNT, MAX_COUNT)


def test_over_long_keywords_are_ignored() -> None:
    long = "m." + "x" * MAX_KEYWORD_BYTES
    n = parse_notify_body(
        notify(
            event_id="$e",
            type="m.room.member",
            content={"msgtype": long, "membership": long, "body": "hi"},
            device={"tweaks": {"sound": long}},
        )
    )
    summary = summarize(n, n.devices[0])
    assert (summary.msgtype, summary.membership, summary.sound) == (None, None, None)
    assert summary.body == "hi"


def test_cut_text_keeps_whole_characters() -> None:
    assert cut_text("abc", 3) == "abc"
    assert cut_text("abcd", 3) == "…"
    assert cut_text("é" * 10, 8) == "éé…"  # 2 + 2 + 3 bytes; a third é would not fit


def test_stored_summary_is_bounded_with_every_field_at_its_limit() -> None:
    keyword = at_limit(MAX_KEYWORD_BYTES)
    n = parse_notify_body(
        notify(
            event_id=at_limit(MAX_ID_BYTES),
            room_id=at_limit(MAX_ID_BYTES),
            type=at_limit(MAX_ID_BYTES),
            sender=at_limit(MAX_ID_BYTES),
            room_alias=at_limit(MAX_ID_BYTES),
            sender_display_name=WIDE * 30_000,
            room_name=WIDE * 30_000,
            user_is_target=True,
            prio="high",
            counts={"unread": 10**100},
            content={
                "body": WIDE * 30_000,
                "msgtype": keyword,
                "membership": keyword,
                "is_direct": True,
                "other": "x" * 30_000,
            },
            device={"tweaks": {"sound": keyword, "highlight": True}},
        )
    )
    item = summarize(n, n.devices[0]).to_item()
    stored = json.dumps(item, ensure_ascii=False).encode()
    assert MAX_MESSAGE_BODY_BYTES - 4 < len(item["body"].encode()) <= MAX_MESSAGE_BODY_BYTES
    assert len(stored) <= 3 * 1024, len(stored)
