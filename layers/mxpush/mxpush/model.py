"""The domain's records: registrations, delivery batches and delivery-log records."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
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


class Mode(enum.StrEnum):
    """How a registration's channels share a push (README, "Channels")."""

    # The first channel that works: the next is tried only when one is rejected, fails for
    # good or runs out of retries; a channel with `after_seconds` is an escalation.
    FALLBACK = "fallback"
    # Every channel gets the push (fan-out), each with its own outcome.
    ALL = "all"


@dataclass(frozen=True)
class Channel:
    """One way to reach the user: a backend, its target and options, and when it is used."""

    backend: str
    target: Mapping[str, Any]
    options: RegistrationOptions = field(default_factory=RegistrationOptions)
    # Escalation (fallback mode): sent only if the push is still unread this long after the
    # first delivery. 0: a plain fallback (or, in mode `all`, part of the fan-out).
    after_seconds: int = 0
    # Fall back once this channel has been failing this long (None: its backend's full retry
    # schedule; 0: no retries).
    give_up_after_seconds: int | None = None

    def to_item(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "backend": self.backend,
            "target": dict(self.target),
            "options": self.options.to_item(),
        }
        if self.after_seconds:
            item["after_seconds"] = self.after_seconds
        if self.give_up_after_seconds is not None:
            item["give_up_after_seconds"] = self.give_up_after_seconds
        return item

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> Channel:
        give_up = item.get("give_up_after_seconds")
        return cls(
            backend=str(item["backend"]),
            target=dict(item.get("target") or {}),
            options=RegistrationOptions.from_item(item.get("options")),
            after_seconds=int(item.get("after_seconds") or 0),
            give_up_after_seconds=None if give_up is None else int(give_up),
        )


@dataclass(frozen=True)
class ChannelRejection:
    reason: str
    at: float


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
    # Channels after the first (`backend`, `target` and `options` are the first's: a
    # registration of one backend is a registration of one channel, stored as it always was).
    more_channels: tuple[Channel, ...] = ()
    mode: Mode = Mode.FALLBACK
    # The first channel's `give_up_after_seconds`.
    give_up_after_seconds: int | None = None
    # Channels a backend rejected (by index): skipped from then on. The registration itself is
    # `rejected` only once every channel is.
    rejected_channels: Mapping[int, ChannelRejection] = field(default_factory=dict)

    @property
    def channels(self) -> tuple[Channel, ...]:
        first = Channel(
            self.backend,
            self.target,
            self.options,
            after_seconds=0,
            give_up_after_seconds=self.give_up_after_seconds,
        )
        return (first, *self.more_channels)

    @property
    def multi_channel(self) -> bool:
        return bool(self.more_channels)

    def channel(self, index: int) -> Channel | None:
        channels = self.channels
        return channels[index] if 0 <= index < len(channels) else None

    def channel_rejected(self, index: int) -> bool:
        if not self.multi_channel:
            return self.status is Status.REJECTED
        return index in self.rejected_channels

    def channel_view(self, index: int) -> Registration | None:
        """This registration as its channel `index` sees it (backend, target and options):
        what a backend is handed, so that no backend knows about channels. None: no such
        channel."""
        if index == 0:
            return self
        channel = self.channel(index)
        if channel is None:
            return None
        return replace(
            self,
            backend=channel.backend,
            target=channel.target,
            options=channel.options,
            give_up_after_seconds=channel.give_up_after_seconds,
        )

    def effective_delay(self, default: int) -> int:
        return default if self.delay_seconds is None else self.delay_seconds


@dataclass(frozen=True)
class ChannelHealth:
    """How a channel has been doing, from its delivery log (within the log's retention)."""

    last_success: float | None = None
    last_failure: float | None = None
    last_failure_reason: str | None = None
    last_failure_outcome: str | None = None

    def seen(self, outcome: str, at: float, reason: str | None) -> ChannelHealth:
        """This health with one more (older or newer) outcome taken into account."""
        if outcome == Outcome.DELIVERED.value:
            if self.last_success is None or at > self.last_success:
                return replace(self, last_success=at)
        elif outcome in (Outcome.FAILED.value, Outcome.REJECTED.value) and (
            self.last_failure is None or at > self.last_failure
        ):
            return replace(
                self, last_failure=at, last_failure_reason=reason, last_failure_outcome=outcome
            )
        return self

    def describe(
        self, *, rejected: bool, rejected_reason: str | None, rejected_at: float | None
    ) -> dict[str, Any]:
        view: dict[str, Any] = {
            "rejected": rejected,
            "last_success": None if self.last_success is None else iso_time(self.last_success),
            "last_failure": None,
        }
        if self.last_failure is not None:
            view["last_failure"] = {
                "time": iso_time(self.last_failure),
                "outcome": self.last_failure_outcome,
                "reason": self.last_failure_reason,
            }
        if rejected:
            view["rejected_reason"] = rejected_reason
            view["rejected_at"] = None if rejected_at is None else iso_time(rejected_at)
        return view


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
    # A registration of several channels: each channel's outcome (`{"channel", "backend",
    # "outcome", "time", "reason"?}`), in channel order.
    channels: tuple[Mapping[str, Any], ...] = ()

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
        if self.channels and outcome is not Outcome.COALESCED:
            entry["channels"] = [dict(c) for c in self.channels]
        return entry


def iso_time(timestamp: float) -> str:
    return (
        datetime.fromtimestamp(timestamp, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
