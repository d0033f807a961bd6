"""The domain's records: registrations, delivery batches and delivery-log records."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mxpush.events import EventSummary, Urgency

OPERATOR_OWNER = "operator"


class Status(enum.StrEnum):
    ACTIVE = "active"
    # An earlier delivery found the backend token invalid: notify answers `rejected`.
    REJECTED = "rejected"


class Outcome(enum.StrEnum):
    """How an accepted notification ended. Every accepted notification gets exactly one."""

    DELIVERED = "delivered"
    # Joined a pending push that was delivered with it ("3 new messages").
    COALESCED = "coalesced"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    FAILED = "failed"
    # A retraction (after a read) cleared what earlier pushes left on the device.
    RETRACTED = "retracted"


@dataclass(frozen=True)
class RegistrationOptions:
    """Per-registration presentation choices, the same for every backend."""

    # A template such as `element://vector/webapp/#/room/{room_id}/{event_id}`; None = matrix.to.
    click_url: str | None = None
    # Overrides of the backend's priority per urgency key (`call`, `highlight`, `high`, `low`).
    priority: Mapping[str, int] = field(default_factory=dict)
    markdown: bool = False
    # False: never send message text, only who wrote and where.
    include_content: bool = True
    # False: a read never retracts what was delivered (README, "How it behaves").
    retract: bool = True
    # True: one notification per room, a newer push replacing the older one where the backend
    # can; False: one per push.
    group_by_room: bool = True

    def to_item(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "markdown": self.markdown,
            "include_content": self.include_content,
            "retract": self.retract,
            "group_by_room": self.group_by_room,
        }
        if self.click_url is not None:
            item["click_url"] = self.click_url
        if self.priority:
            item["priority"] = dict(self.priority)
        return item

    @classmethod
    def from_item(cls, item: Mapping[str, Any] | None) -> RegistrationOptions:
        if not item:
            return cls()
        return cls(
            click_url=item.get("click_url"),
            priority={k: int(v) for k, v in (item.get("priority") or {}).items()},
            markdown=bool(item.get("markdown", False)),
            include_content=bool(item.get("include_content", True)),
            retract=bool(item.get("retract", True)),
            group_by_room=bool(item.get("group_by_room", True)),
        )


@dataclass(frozen=True)
class Registration:
    rid: str
    pushkey: str
    backend: str
    target: Mapping[str, Any]
    app_id: str
    owner: str
    created_at: float
    delay_seconds: int | None = None
    options: RegistrationOptions = field(default_factory=RegistrationOptions)
    homeserver: str | None = None
    pusher: Mapping[str, Any] | None = None
    pusher_registered: bool = False
    status: Status = Status.ACTIVE
    status_reason: str | None = None
    status_at: float | None = None
    # A value only this registration holds among its owner's registrations of its backend
    # (`Backend.claim`: an Acrobits selector); None for most backends.
    claim: str | None = None
    # When an idle registration the notify path made (stateless UnifiedPush) expires.
    expires_at: float | None = None

    def effective_delay(self, default: int) -> int:
        return default if self.delay_seconds is None else self.delay_seconds


@dataclass(frozen=True)
class EventRef:
    """One event of a batch, as kept for the delivery log."""

    event_id: str
    room_id: str | None
    at: float
    urgency: Urgency

    def to_item(self) -> dict[str, Any]:
        item: dict[str, Any] = {"id": self.event_id, "at": self.at, "u": int(self.urgency)}
        if self.room_id:
            item["room"] = self.room_id
        return item

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> EventRef:
        return cls(
            event_id=str(item["id"]),
            room_id=item.get("room"),
            at=float(item.get("at", 0)),
            urgency=Urgency(int(item.get("u", Urgency.HIGH))),
        )


@dataclass(frozen=True)
class Batch:
    """The events one push covers: the latest is shown, the others counted."""

    batch_id: str
    latest: EventSummary
    # The latest events (a batch keeps a bounded number); `total` counts them all.
    events: tuple[EventRef, ...]
    created_at: float
    total: int | None = None
    # Every room the batch's events came from (bounded), when more than `events` tells.
    rooms: frozenset[str] = frozenset()

    @property
    def count(self) -> int:
        return self.total if self.total is not None else len(self.events)

    @property
    def urgency(self) -> Urgency:
        return max((e.urgency for e in self.events), default=self.latest.urgency)

    @property
    def room_ids(self) -> frozenset[str]:
        return self.rooms | frozenset(e.room_id for e in self.events if e.room_id)


@dataclass(frozen=True)
class DeliveryRecord:
    """One line of a pushkey's delivery log: how one batch ended."""

    at: float
    outcome: Outcome
    events: tuple[EventRef, ...]
    reason: str | None = None
    batch_id: str | None = None
    # How many notifications the batch covered; `events` lists the latest of them.
    total: int | None = None
    # `retract` for a retraction (it lists the rooms it covered, not events).
    kind: str | None = None
    rooms: tuple[str, ...] = ()

    @property
    def count(self) -> int:
        return self.total if self.total is not None else len(self.events)

    def entries(self) -> list[dict[str, Any]]:
        """One entry per listed notification, newest first: the shown event carries the
        batch's outcome, the events it absorbed are `coalesced` into it. A batch larger than
        what it lists says so in `count` (each entry names its `batch`)."""
        ordered = sorted(self.events, key=lambda e: e.at, reverse=True)
        if not ordered:
            return [self._entry(None, self.outcome)]
        result = []
        for index, event in enumerate(ordered):
            outcome = self.outcome
            if self.outcome is Outcome.DELIVERED and index > 0:
                outcome = Outcome.COALESCED
            result.append(self._entry(event, outcome, shown=ordered[0].event_id))
        return result

    def _entry(
        self, event: EventRef | None, outcome: Outcome, shown: str | None = None
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "time": iso_time(self.at),
            "outcome": outcome.value,
            "count": self.count,
        }
        if self.batch_id:
            entry["batch"] = self.batch_id[:16]
        if self.kind:
            entry["kind"] = self.kind
            entry["room_ids"] = list(self.rooms)
        if event is not None:
            entry["event_id"] = event.event_id
            entry["received"] = iso_time(event.at)
            if event.room_id:
                entry["room_id"] = event.room_id
        if outcome is Outcome.COALESCED and shown:
            entry["delivered_with"] = shown
        if self.reason:
            entry["reason"] = self.reason
        return entry


def iso_time(timestamp: float) -> str:
    return (
        datetime.fromtimestamp(timestamp, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
