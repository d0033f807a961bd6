"""Turn a delivery batch into the title and text a person wants to see.

Backend-neutral: every backend maps `PushMessage` onto its own fields.

- DM (no room name): title = sender, text = message.
- Room: title = room name, text = "sender: message".
- Invite: "alice invited you to Room". Call: "Incoming call from alice".
- Encrypted: "Encrypted message" (never ciphertext).
- event_id_only pushers: a generic text; nothing is invented.
- Several events: "3 new messages", showing the latest.
"""

from __future__ import annotations

import enum
import string
from dataclasses import dataclass
from urllib.parse import quote

from mxpush.events import EventSummary, Urgency
from mxpush.model import Batch, RegistrationOptions

DEFAULT_CLICK_URL = "https://matrix.to/#/{room_id}/{event_id}"
CLICK_URL_FIELDS = frozenset({"room_id", "event_id", "sender"})
_FORBIDDEN_CLICK_SCHEMES = ("javascript:", "data:", "vbscript:", "file:")

_MSGTYPE_TEXT = {
    "m.image": "sent an image",
    "m.file": "sent a file",
    "m.audio": "sent an audio message",
    "m.video": "sent a video",
    "m.location": "shared a location",
}
_EVENT_TYPE_TEXT = {
    "m.sticker": "sent a sticker",
    "m.poll.start": "started a poll",
    "org.matrix.msc3381.poll.start": "started a poll",
}


class MessageKind(enum.StrEnum):
    MESSAGE = "message"
    CALL = "call"
    INVITE = "invite"
    TEST = "test"


@dataclass(frozen=True)
class PushMessage:
    title: str
    body: str
    urgency: Urgency
    kind: MessageKind
    click_url: str | None = None
    event_id: str | None = None
    room_id: str | None = None
    room_name: str | None = None
    sender: str | None = None
    sender_name: str | None = None
    count: int = 1
    unread: int = 0
    sound: str | None = None
    # Raw facts for backends that send structured data (webhook, UnifiedPush, Web Push, ...).
    event_type: str | None = None
    prio: str = "high"
    msgtype: str | None = None
    # The message text itself: None when the pusher withheld content (event_id_only), the
    # event is encrypted, or the registration says `include_content: false`.
    content_body: str | None = None
    # Event IDs of the coalesced batch, oldest first (the last one is `event_id`).
    event_ids: tuple[str, ...] = ()
    # The batch room by room, the latest room first (for digests: the email backend).
    rooms: tuple[RoomDigest, ...] = ()


@dataclass(frozen=True)
class RoomDigest:
    """One room of a batch: how many of the batch's listed events came from it (0 when the
    batch only remembers the room), its newest event and where a click on it leads. `name`
    and `line` are known for the latest event's room only; `line` says what happened there
    ("alice: hello"), by the same rules as the push's text (never text that is withheld)."""

    room_id: str
    count: int
    event_id: str | None = None
    click_url: str | None = None
    name: str | None = None
    line: str | None = None


def render_batch(batch: Batch, options: RegistrationOptions) -> PushMessage:
    latest = batch.latest
    title, body = _single(latest, include_content=options.include_content)
    kind = _kind(latest)
    if batch.count > 1:
        title, body = _coalesced(batch, body)
        kind = MessageKind.MESSAGE if kind is MessageKind.INVITE else kind
    return PushMessage(
        title=title,
        body=body,
        urgency=batch.urgency,
        kind=kind,
        click_url=click_url(options.click_url, latest),
        event_id=latest.event_id,
        room_id=latest.room_id,
        room_name=latest.room_name,
        sender=latest.sender,
        sender_name=latest.sender_name,
        count=batch.count,
        unread=latest.unread,
        sound=latest.sound,
        event_type=latest.type,
        prio=latest.prio,
        msgtype=latest.msgtype,
        content_body=_raw_text(latest, include_content=options.include_content),
        event_ids=tuple(e.event_id for e in sorted(batch.events, key=lambda e: e.at)),
        rooms=room_digest(batch, options),
    )


def room_digest(batch: Batch, options: RegistrationOptions) -> tuple[RoomDigest, ...]:
    """The batch's rooms, the latest event's first, then by their newest listed event."""
    latest = batch.latest
    newest: dict[str, tuple[float, str]] = {}
    counts: dict[str, int] = {}
    for ref in batch.events:
        if not ref.room_id:
            continue
        counts[ref.room_id] = counts.get(ref.room_id, 0) + 1
        if ref.room_id not in newest or ref.at > newest[ref.room_id][0]:
            newest[ref.room_id] = (ref.at, ref.event_id)
    order = sorted(newest, key=lambda room: newest[room][0], reverse=True)
    order += sorted(batch.room_ids - set(order))
    if latest.room_id:
        order = [latest.room_id] + [room for room in order if room != latest.room_id]
    rooms = []
    for room in order:
        if room == latest.room_id:
            rooms.append(
                RoomDigest(
                    room_id=room,
                    count=max(counts.get(room, 0), 1),
                    event_id=latest.event_id,
                    click_url=click_url(options.click_url, latest),
                    name=latest.room_name
                    or (None if latest.withheld else latest.sender_name or latest.sender),
                    line=_line(latest, include_content=options.include_content),
                )
            )
            continue
        event_id = newest[room][1] if room in newest else None
        url = click_url(options.click_url, EventSummary(event_id=event_id or "", room_id=room))
        rooms.append(
            RoomDigest(room_id=room, count=counts.get(room, 0), event_id=event_id, click_url=url)
        )
    return tuple(rooms)


def render_test() -> PushMessage:
    return PushMessage(
        title="mxpush test",
        body="Your push gateway can reach this device.",
        urgency=Urgency.HIGH,
        kind=MessageKind.TEST,
    )


def click_url(template: str | None, event: EventSummary) -> str | None:
    """Fill the click-URL template; None when the event has no room to point at."""
    if not event.room_id:
        return None
    values = {
        "room_id": quote(event.room_id, safe="!:@"),
        "event_id": quote(event.event_id, safe="$:@"),
        "sender": quote(event.sender or "", safe="@:"),
    }
    return (template or DEFAULT_CLICK_URL).format_map(values)


def check_click_url_template(template: str) -> None:
    """Raise ValueError unless `template` is a usable click-URL template."""
    if len(template) > 500:
        raise ValueError("must be at most 500 characters")
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ValueError(f"bad placeholder syntax ({exc})") from None
    unknown = names - CLICK_URL_FIELDS
    if unknown:
        allowed = ", ".join("{" + n + "}" for n in sorted(CLICK_URL_FIELDS))
        raise ValueError(f"unknown placeholder {{{sorted(unknown)[0]}}} (allowed: {allowed})")
    if ":" not in template.split("/", 1)[0]:
        raise ValueError("must start with a URL scheme, e.g. https:// or element://")
    if template.strip().lower().startswith(_FORBIDDEN_CLICK_SCHEMES):
        raise ValueError("this URL scheme is not allowed")


def _kind(event: EventSummary) -> MessageKind:
    if event.is_call:
        return MessageKind.CALL
    if event.is_invite:
        return MessageKind.INVITE
    return MessageKind.MESSAGE


def _who(event: EventSummary) -> str:
    return event.sender_name or event.sender or "Someone"


def _single(event: EventSummary, *, include_content: bool) -> tuple[str, str]:
    if event.withheld:
        return "New message", "You have a new message."
    who = _who(event)
    if event.is_call:
        call = "Video call" if event.video else "Voice call"
        return f"Incoming call from {who}", call + (
            f" in {event.room_name}" if event.room_name else ""
        )
    if event.is_invite:
        where = event.room_name or ("a direct chat" if event.is_direct else "a room")
        return "Invitation", f"{who} invited you to {where}"
    text = _text(event, include_content=include_content)
    if event.room_name:
        line = f"* {who} {text}" if _is_emote(event, include_content) else f"{who}: {text}"
        return event.room_name, line
    line = f"* {who} {text}" if _is_emote(event, include_content) else text
    return who, line


def _line(event: EventSummary, *, include_content: bool) -> str | None:
    """What the event says in one line with who said it: "alice: hello", "* alice waves",
    "alice invited you to E2E Group", "Incoming call from alice (Voice call)"; None for an
    `event_id_only` pusher's event (nothing is known)."""
    if event.withheld:
        return None
    title, text = _single(event, include_content=include_content)
    if event.is_call:
        return f"{title} ({text})"
    if event.is_invite or event.room_name or _is_emote(event, include_content):
        return text
    return f"{title}: {text}"


def _is_emote(event: EventSummary, include_content: bool) -> bool:
    return include_content and event.msgtype == "m.emote" and bool(event.body)


def _text(event: EventSummary, *, include_content: bool) -> str:
    if event.is_encrypted:
        return "Encrypted message"
    if event.type in _EVENT_TYPE_TEXT:
        return _EVENT_TYPE_TEXT[event.type or ""]
    if event.type != "m.room.message":
        return "New event" if event.type else "New message"
    if event.msgtype in _MSGTYPE_TEXT:
        return _MSGTYPE_TEXT[event.msgtype or ""]
    if not include_content or not event.body:
        return "New message"
    return event.body


def _raw_text(event: EventSummary, *, include_content: bool) -> str | None:
    """The message's own text for structured payloads: only for text-like messages (a file's
    `body` is its name), and never when content is withheld."""
    if not include_content or event.withheld or event.type != "m.room.message":
        return None
    if event.msgtype in _MSGTYPE_TEXT:
        return None
    return event.body


def _coalesced(batch: Batch, single_body: str) -> tuple[str, str]:
    latest = batch.latest
    n = batch.count
    if latest.withheld:
        return f"{n} new messages", "You have new messages."
    rooms = batch.room_ids
    same_room = len(rooms) <= 1
    if same_room and latest.room_name:
        # single_body is already "alice: text".
        return f"{latest.room_name}: {n} new messages", single_body
    who = _who(latest)
    if same_room:
        # A DM: the title is the sender, the body the latest message.
        return f"{who}: {n} new messages", single_body
    if latest.room_name:
        return f"{n} new messages in {len(rooms)} rooms", f"{latest.room_name} · {single_body}"
    if latest.is_invite:
        return f"{n} new messages in {len(rooms)} rooms", single_body
    return f"{n} new messages in {len(rooms)} rooms", f"{who}: {single_body}"
