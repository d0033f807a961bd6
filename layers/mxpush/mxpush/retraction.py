"""Retraction: what a read takes back, and how a notification is named so it can be.

A badge-only update with no unread rooms left (`counts.unread` 0 or absent) is the only "the
user has read everything" signal Synapse sends (it names no room). When the pushkey's latest
batches show a push delivered since the last retraction, the notify path opens a *retract*
item (kind `retract`) beside any cancel, and hands it to the backend's sender like a call. The
sender reads the pushkey's delivered batches back to the previous retraction (bounded) and
asks the backend to take them back (`Backend.retract`).

Naming, so that a newer push replaces an older one and a retraction can find it again:

- with `options.group_by_room` (the default) a push is named after the room of the event it
  shows, so a newer push in the same room replaces the older notification (ntfy sequence id,
  Bark id / APNs collapse id, Web Push `tag`). Calls keep their own name (a message must not
  replace a ringing call, nor a call a message).
- without it, after the event it shows: one notification per push.

A batch that coalesced events of several rooms ("5 new messages in 3 rooms") is one
notification, named after its latest event's room; a retraction lists every room it covered
(webhook, Web Push `room_ids`) and takes back its one notification.

This module stays import-light: the notify handler uses `can_retract`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# The delivered pushes a retraction looks back over: at most this many distinct rooms (the
# newest), and at most `MAX_RETRACT_SCAN` log items back to the previous retraction.
MAX_RETRACT_ROOMS = 50
MAX_RETRACT_SCAN = 200
# Backends that can take something back (Gotify only with a client token in the target;
# Acrobits PNM has no verb for it).
_RETRACTABLE = frozenset({"ntfy", "bark", "webhook", "webpush", "unifiedpush"})
TAG_PREFIX = "mx"


def can_retract(backend: str, target: Mapping[str, Any]) -> bool:
    if backend == "gotify":
        return bool(target.get("client_token"))
    return backend in _RETRACTABLE


def notification_key(
    room_id: str | None, event_id: str | None, *, is_call: bool, group_by_room: bool
) -> str | None:
    """What a push's notification is named after: its room (grouped, not a call) or its
    event."""
    if group_by_room and room_id and not is_call:
        return room_id
    return event_id or room_id


def notification_tag(key: str) -> str:
    """A short stable name for a key, within every backend's limits: ntfy sequence ids
    (`[-_A-Za-z0-9]`, at most 64), Bark ids (the APNs collapse id, at most 64 bytes). `mx` and 30
    hex digits of SHA-256: the room id itself stays off the push service."""
    return TAG_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()[:30]


@dataclass(frozen=True)
class ShownPush:
    """One delivered push that may still be on the device."""

    key: str
    room_id: str | None
    event_id: str | None
    # Every room and the latest events the push covered.
    rooms: tuple[str, ...] = ()
    event_ids: tuple[str, ...] = ()
    # The backend's reference to the delivered message (Gotify's message id), if any.
    ref: str | None = None


@dataclass(frozen=True)
class Retraction:
    """What a read takes back: the pushes delivered since the previous retraction, newest
    first."""

    pushes: tuple[ShownPush, ...]

    @property
    def keys(self) -> list[str]:
        return _unique(p.key for p in self.pushes)

    @property
    def tags(self) -> list[str]:
        return [notification_tag(k) for k in self.keys]

    @property
    def room_ids(self) -> list[str]:
        return _unique(
            r for p in self.pushes for r in (p.rooms or ((p.room_id,) if p.room_id else ()))
        )

    @property
    def event_ids(self) -> list[str]:
        return _unique(
            e for p in self.pushes for e in (p.event_ids or ((p.event_id,) if p.event_id else ()))
        )

    @property
    def refs(self) -> list[str]:
        return _unique(p.ref for p in self.pushes if p.ref)


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))
