"""What we keep of an event between the notify request and the delivery.

Only what rendering needs is stored: never ciphertext, never the whole `content`, and every
string within the limits of `mxpush.notification` (the body cut to `MAX_MESSAGE_BODY_BYTES`), so
that a stored summary stays small whatever a caller sends. The stored form is a flat
JSON-compatible dict.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from mxpush.notification import (
    MAX_KEYWORD_BYTES,
    MAX_MESSAGE_BODY_BYTES,
    Device,
    Notification,
    cut_text,
    fits,
)

CALL_EVENT_TYPES = frozenset({"m.call.invite"})
ENCRYPTED_EVENT_TYPE = "m.room.encrypted"


class Urgency(enum.IntEnum):
    """How urgent a push is; backends map it to their own priority scale."""

    LOW = 1
    HIGH = 2
    HIGHLIGHT = 3
    CALL = 4

    @property
    def key(self) -> str:
        """The name used in per-registration priority overrides."""
        return self.name.lower()


@dataclass(frozen=True)
class EventSummary:
    event_id: str
    room_id: str | None = None
    type: str | None = None
    sender: str | None = None
    sender_name: str | None = None
    room_name: str | None = None
    prio: str = "high"
    highlight: bool = False
    sound: str | None = None
    unread: int = 0
    msgtype: str | None = None
    body: str | None = None
    membership: str | None = None
    user_is_target: bool = False
    is_direct: bool = False
    video: bool = False
    # event_id_only pushers: Synapse sent no type, sender or content.
    withheld: bool = False

    @property
    def is_call(self) -> bool:
        return self.type in CALL_EVENT_TYPES

    @property
    def is_encrypted(self) -> bool:
        return self.type == ENCRYPTED_EVENT_TYPE

    @property
    def is_invite(self) -> bool:
        return self.type == "m.room.member" and self.membership == "invite" and self.user_is_target

    @property
    def urgency(self) -> Urgency:
        if self.is_call:
            return Urgency.CALL
        if self.highlight:
            return Urgency.HIGHLIGHT
        return Urgency.HIGH if self.prio == "high" else Urgency.LOW

    def to_item(self) -> dict[str, Any]:
        """A dict without empty values (DynamoDB maps stay small)."""
        return {k: v for k, v in asdict(self).items() if v not in (None, False, "")}

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> EventSummary:
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in item.items():
            if key not in known:
                continue
            # DynamoDB hands numbers back as Decimal/float; our only number is `unread`.
            values[key] = int(value) if key == "unread" else value
        return cls(**values)


def summarize(notification: Notification, device: Device) -> EventSummary:
    """Reduce a notification (for one device) to what a push needs."""
    if notification.event_id is None:
        raise ValueError("badge-only notifications have no event to summarize")
    content = notification.content or {}
    withheld = notification.type is None and not content and notification.sender is None
    body = content.get("body")
    return EventSummary(
        event_id=notification.event_id,
        room_id=notification.room_id,
        type=notification.type,
        sender=notification.sender or None,
        sender_name=notification.sender_display_name or None,
        room_name=notification.room_name or notification.room_alias or None,
        prio=notification.prio,
        highlight=device.tweaks.highlight,
        sound=device.tweaks.sound,
        unread=notification.unread,
        msgtype=_keyword(content.get("msgtype")),
        body=cut_text(body, MAX_MESSAGE_BODY_BYTES)
        if isinstance(body, str) and notification.type != ENCRYPTED_EVENT_TYPE
        else None,
        membership=_keyword(content.get("membership")),
        user_is_target=notification.user_is_target,
        is_direct=content.get("is_direct") is True,
        video=_is_video_call(notification.type, content),
        withheld=withheld,
    )


def _keyword(value: Any) -> str | None:
    """A name we only compare with known ones: a longer one than any could be is dropped."""
    return value if isinstance(value, str) and fits(value, MAX_KEYWORD_BYTES) else None


def _is_video_call(event_type: str | None, content: Mapping[str, Any]) -> bool:
    if event_type not in CALL_EVENT_TYPES:
        return False
    offer = content.get("offer")
    sdp = offer.get("sdp") if isinstance(offer, dict) else None
    return isinstance(sdp, str) and "m=video" in sdp
