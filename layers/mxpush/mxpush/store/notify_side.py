"""The notify path's reads and writes. Per notification:

- one strongly consistent Query reads the registration and its latest batches together (the
  registration's `sk` sorts after every `b#…`, so a reverse Query returns it first);
- a new event joins the open batch (one write), or opens a batch (two writes: the batch, and
  its slot's marker if it is the slot's first batch — the marker carries it — else its entry in
  the slot's due index; a call or a delay of 0: the batch alone);
- a read (badge-only update) cancels the open batch: one conditional write, which is also its
  delivery-log record; a read that leaves nothing unread also opens a small retract item when a
  push was delivered since the last retraction (`mxpush.retraction`);
- the first batch of a slot also writes the slot marker that lets it start the slot's execution.

Every write is conditional on the batch's version, so a claim by a sender and a notify never
both win: a read that lands before the claim cancels, one after it finds the batch gone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from pynamodb.exceptions import PutError, PynamoDBException

from mxpush.errors import StoreUnavailable
from mxpush.events import EventSummary
from mxpush.ids import batch_id, dedup_key
from mxpush.implicit import IMPLICIT_BACKEND, IMPLICIT_OWNER
from mxpush.model import EventRef, Mode, Outcome, Registration, RegistrationOptions, Status
from mxpush.retraction import can_retract
from mxpush.store.base import StoreBase, registration_from_item
from mxpush.store.models import (
    BATCH_BUDGET_BYTES,
    BATCH_PREFIX,
    IMPLICIT_IDLE_SECONDS,
    KIND_RETRACT,
    MAX_KEYS,
    MAX_REFS,
    MAX_ROOMS,
    REGISTRATION_SK,
    SLOT_PREFIX,
    BatchItem,
    DueEntry,
    OpenState,
    RegistrationItem,
    batch_sk,
    channel_ref,
    covered_by_read,
    due_key,
    item_size,
    read_reason,
    ref_to_item,
    slot_partition,
)
from mxpush.store.raw import ConditionFailed, deserialize_item, error_code, serialize

# Batches a notify reads with the registration: the open one, and recent ones for duplicates.
# Synapse retries only its latest notification, so the latest batch holds any duplicate; eight
# cover at least a pushkey's last 8 events (a documented bound) for about 3 read units.
RECENT_BATCHES = 8
# An event joins the open batch only if its slot is at least this far away; closer, the
# delivery may already be claiming it, and the event opens the next batch instead.
JOIN_MARGIN_SECONDS = 0.5
_ATTEMPTS = 8


class SlotState:
    STARTED = "started"
    # StartExecution failed: the next batch of the slot (or the sweep) starts it.
    UNSTARTED = "unstarted"
    # The slot's delivery step ran: a batch put in this slot now would wait for nobody.
    DISPATCHED = "dispatched"


@dataclass(frozen=True)
class PushkeyView:
    registration: Registration | None
    batches: tuple[BatchItem, ...]  # newest first

    @property
    def open_batch(self) -> BatchItem | None:
        for batch in self.batches:
            if batch.st == OpenState.OPEN and not batch.immediate:
                return batch
        return None


@dataclass(frozen=True)
class Unknown:
    """No registration for this pushkey (never registered, or deleted)."""


@dataclass(frozen=True)
class IsRejected:
    """The registration exists but an earlier delivery found its token invalid."""


@dataclass(frozen=True)
class Opened:
    """The event opened a batch, due in its `due` slot (`immediate`: to be sent at once)."""

    batch: BatchItem


@dataclass(frozen=True)
class Joined:
    batch: BatchItem


@dataclass(frozen=True)
class Duplicate:
    """The event was accepted before, into `batch` (which may still need scheduling, if the
    earlier attempt failed half-way)."""

    batch: BatchItem


AcceptResult = Unknown | IsRejected | Opened | Joined | Duplicate


@dataclass(frozen=True)
class Cancelled:
    batch: BatchItem
    # A retract item the read opened too (to be handed to the sender), if any.
    retract: BatchItem | None = None
    # Escalations the read ended (delivered batches whose later channel is not sent).
    escalations: tuple[BatchItem, ...] = ()


@dataclass(frozen=True)
class NothingPending:
    retract: BatchItem | None = None
    escalations: tuple[BatchItem, ...] = ()


CancelResult = Unknown | IsRejected | Cancelled | NothingPending


class NotifySide(StoreBase):
    def read_pushkey(self, rid: str) -> PushkeyView:
        response = self._call(
            "Query",
            KeyConditionExpression="rid = :rid",
            ExpressionAttributeValues={":rid": {"S": rid}},
            ScanIndexForward=False,
            Limit=RECENT_BATCHES + 1,
            ConsistentRead=True,
        )
        registration = None
        batches = []
        for raw in response.get("Items", []):
            item = deserialize_item(raw)
            sk = str(item.get("sk", ""))
            if sk == REGISTRATION_SK:
                registration = registration_from_item(item)
            elif sk.startswith(BATCH_PREFIX):
                batches.append(BatchItem.from_item(item))
        return PushkeyView(registration, tuple(batches))

    def accept_event(
        self,
        rid: str,
        event: EventSummary,
        *,
        now: float,
        immediate: bool,
        default_delay: int,
    ) -> AcceptResult:
        """Record an event for delivery: join the open batch, or open one."""
        key = dedup_key(event.event_id)
        for _ in range(_ATTEMPTS):
            view = self.read_pushkey(rid)
            registration = view.registration
            if registration is None:
                return Unknown()
            if registration.status is not Status.ACTIVE:
                return IsRejected()
            for batch in view.batches:
                if key in batch.keys:
                    return Duplicate(batch)
            delay = registration.effective_delay(default_delay)
            at_once = immediate or delay <= 0
            open_batch = view.open_batch
            try:
                if not at_once and open_batch and open_batch.due > now + JOIN_MARGIN_SECONDS:
                    return Joined(self._join(open_batch, event, key, now))
                return Opened(
                    self._open(registration, event, key=key, now=now, delay=delay, at_once=at_once)
                )
            except ConditionFailed:
                continue  # a claim or another write came first: read again
        raise StoreUnavailable("could not accept the event: too much contention")

    def cancel_pending(self, rid: str, *, unread: int, now: float) -> CancelResult:
        """A badge-only update says the user read messages: cancel the open batch if the unread
        count is 0 or below the one it was queued with (one conditional write); end, by the same
        rule, every escalation still waiting (one write each: the batch stays `delivered`, its
        escalation channel `cancelled`); mark, by the same rule, a batch a sender holds
        (`sending`, `retrying`: one small write each, rare) so that neither its retry nor its
        fallback or escalation channel pushes it (`BatchItem.read_since_queued`); and if nothing
        is unread and a push was delivered since the last retraction, open a retract item (one
        small write) for the sender to take it back. At most two writes (and one per waiting
        escalation or held batch), none when there is nothing to cancel or retract. The retract
        item is one write unit; the cancel costs what the batch weighs (one unit under 1 KB, two
        for the largest bursts)."""
        reason = read_reason(unread)
        retract: BatchItem | None = None
        escalations: list[BatchItem] = []
        for _ in range(_ATTEMPTS):
            view = self.read_pushkey(rid)
            registration = view.registration
            if registration is None:
                return Unknown()
            if registration.status is not Status.ACTIVE:
                return IsRejected()
            if retract is None and unread == 0:
                channels = retract_channels(registration, view.batches)
                if channels:
                    retract = self._open_retract(registration, now, channels)
            for waiting in view.batches:
                if (
                    waiting.st == OpenState.WAITING
                    and covered_by_read(waiting.unread, unread)
                    and all(w.sk != waiting.sk for w in escalations)
                ):
                    ended = self._end_escalation(waiting, reason, now)
                    if ended is not None:
                        escalations.append(ended)
            held = [b for b in view.batches if _read_mark_needed(b, unread)]
            if not all(self._mark_read(b, unread) for b in held):
                continue  # one left its sender's hands meanwhile (or was marked): look again
            batch = view.open_batch
            if batch is None or not covered_by_read(batch.unread, unread):
                return NothingPending(retract, tuple(escalations))
            try:
                self._call(
                    "UpdateItem",
                    Key=_key(batch.rid, batch.sk),
                    UpdateExpression="SET st = :out, #at = :at, reason = :why, v = :next",
                    ConditionExpression="v = :v AND st = :open",
                    ExpressionAttributeNames={"#at": "at"},
                    ExpressionAttributeValues={
                        ":out": {"S": Outcome.CANCELLED.value},
                        ":at": {"N": repr(now)},
                        ":why": {"S": reason},
                        ":next": {"N": str(batch.v + 1)},
                        ":v": {"N": str(batch.v)},
                        ":open": {"S": OpenState.OPEN},
                    },
                )
            except ConditionFailed:
                continue  # claimed (or joined) meanwhile: look again
            cancelled = replace(batch, st=Outcome.CANCELLED.value, at=now, v=batch.v + 1)
            return Cancelled(cancelled, retract, tuple(escalations))
        raise StoreUnavailable("could not cancel: too much contention")

    def _mark_read(self, batch: BatchItem, unread: int) -> bool:
        """Record a read on a batch a sender holds (`rd`, the unread count). False if it is no
        longer held, or a read that covers as much was recorded first."""
        try:
            self._call(
                "UpdateItem",
                Key=_key(batch.rid, batch.sk),
                UpdateExpression="SET rd = :rd, v = v + :one",
                ConditionExpression=(
                    "st IN (:sending, :retrying) AND (attribute_not_exists(rd) OR rd > :rd)"
                ),
                ExpressionAttributeValues={
                    ":rd": {"N": str(unread)},
                    ":one": {"N": "1"},
                    ":sending": {"S": OpenState.SENDING},
                    ":retrying": {"S": OpenState.RETRYING},
                },
            )
        except ConditionFailed:
            return False
        return True

    def _end_escalation(self, batch: BatchItem, reason: str, now: float) -> BatchItem | None:
        """A read before an escalation's time: the batch ends `delivered` (by the channel that
        delivered it), its escalation channel `cancelled`. None if its sender took it first."""
        record = {"st": Outcome.CANCELLED.value, "b": batch.backend, "r": reason, "at": now}
        try:
            self._call(
                "UpdateItem",
                Key=_key(batch.rid, batch.sk),
                UpdateExpression="SET st = :delivered, #chs.#c = :rec, v = :next",
                ConditionExpression="v = :v AND st = :waiting",
                ExpressionAttributeNames={"#chs": "chs", "#c": str(batch.ch)},
                ExpressionAttributeValues={
                    ":delivered": {"S": Outcome.DELIVERED.value},
                    ":rec": serialize(record),
                    ":next": {"N": str(batch.v + 1)},
                    ":v": {"N": str(batch.v)},
                    ":waiting": {"S": OpenState.WAITING},
                },
            )
        except ConditionFailed:
            return None
        return replace(batch, st=Outcome.DELIVERED.value, v=batch.v + 1)

    def put_due_entry(self, batch: BatchItem | DueEntry) -> None:
        """A due entry in its slot's due index (idempotent): a batch's own, or one of a
        fan-out's per-channel entries (`due_entries_of`)."""
        for entry in [batch] if isinstance(batch, DueEntry) else due_entries_of(batch):
            self._put(
                {
                    "rid": due_key(entry.due, entry.rid),
                    "sk": f"{entry.rid}|{entry.sk}",
                    "backend": entry.backend,
                    "expires_at": entry.due + self.index_retention_seconds,
                }
            )

    def claim_slot_start(self, slot: int, first: BatchItem | None = None) -> str | None:
        """Whether this caller is the one to start the slot's execution: None if so (the marker
        now says `started`), else the marker's state. A read first, so that only the first batch
        of a slot pays a marker write.

        `first`: the batch being scheduled in the slot. The marker that creates the slot carries
        it (the slot's delivery step reads the marker), so the first batch of a slot writes no
        due entry of its own; any other batch of the slot gets its due entry here.
        """
        key = _key(slot_partition(slot), str(slot))
        found = self._call("GetItem", Key=key, ConsistentRead=True).get("Item")
        state = None if found is None else str(found.get("st", {}).get("S", SlotState.STARTED))
        if state is None:
            item = {
                **key,
                "st": {"S": SlotState.STARTED},
                "expires_at": {"N": str(slot + self.index_retention_seconds)},
            }
            entries = due_entries_of(first) if first is not None else []
            if entries:
                head = entries[0]
                item["first"] = {"S": f"{head.rid}|{head.sk}|{head.backend}"}
            try:
                self._call("PutItem", Item=item, ConditionExpression="attribute_not_exists(sk)")
            except ConditionFailed as failed:
                old = failed.old_item or {}
                state = str(old.get("st", {}).get("S", SlotState.STARTED))
            else:
                for entry in entries[1:]:
                    self.put_due_entry(entry)
                return None
        if first is not None:
            self.put_due_entry(first)
        if state != SlotState.UNSTARTED:
            return state
        try:
            self._call(
                "UpdateItem",
                Key=key,
                UpdateExpression="SET st = :started",
                ConditionExpression="st = :unstarted",
                ExpressionAttributeValues={
                    ":started": {"S": SlotState.STARTED},
                    ":unstarted": {"S": SlotState.UNSTARTED},
                },
            )
        except ConditionFailed as failed:
            return str((failed.old_item or {}).get("st", {}).get("S", SlotState.STARTED))
        return None

    def set_slot_state(self, slot: int, state: str) -> None:
        self._call(
            "UpdateItem",
            Key=_key(slot_partition(slot), str(slot)),
            UpdateExpression="SET st = :st, expires_at = if_not_exists(expires_at, :exp)",
            ExpressionAttributeValues={
                ":st": {"S": state},
                ":exp": {"N": str(slot + self.index_retention_seconds)},
            },
        )

    def create_implicit_registration(
        self, rid: str, *, pushkey: str, app_id: str, target: Mapping[str, Any], now: float
    ) -> None:
        """Create a stateless UnifiedPush registration unless one exists (a concurrent
        request may have made it: that is fine)."""
        item = RegistrationItem(
            rid=rid,
            sk=REGISTRATION_SK,
            pushkey=pushkey,
            owner=IMPLICIT_OWNER,
            backend=IMPLICIT_BACKEND,
            target=dict(target),
            app_id=app_id,
            created_at=now,
            options=RegistrationOptions().to_item(),
            status=Status.ACTIVE.value,
            expires_at=int(now) + IMPLICIT_IDLE_SECONDS,
        )
        try:
            item.save(condition=RegistrationItem.rid.does_not_exist())
        except PutError as exc:
            if exc.cause_response_code == "ConditionalCheckFailedException":
                return
            raise StoreUnavailable(
                f"could not store the registration ({error_code(exc)})"
            ) from None
        except PynamoDBException as exc:
            raise StoreUnavailable(
                f"could not store the registration ({error_code(exc)})"
            ) from None

    # --- internals ---------------------------------------------------------------------------

    def _open(
        self,
        registration: Registration,
        event: EventSummary,
        *,
        key: str,
        now: float,
        delay: int,
        at_once: bool,
    ) -> BatchItem:
        bid = batch_id(registration.rid, event.event_id)
        # Slot: the second the push is due in. At once: the next second is only the fallback
        # slot, used if the sender cannot be invoked directly.
        due = math.ceil(now) + 1 if at_once else math.ceil(now + delay)
        ref = EventRef(event.event_id, event.room_id, now, event.urgency)
        first, fan = start_channels(registration)
        batch = BatchItem(
            rid=registration.rid,
            sk=batch_sk(now, bid),
            bid=bid,
            st=OpenState.OPEN,
            backend=registration.channels[first].backend,
            ch=first,
            chs={} if registration.multi_channel else None,
            fan=fan,
            due=due,
            n=1,
            created=now,
            v=1,
            refs=(ref,),
            keys=(key,),
            rooms=(event.room_id,) if event.room_id else (),
            latest=event.to_item(),
            unread=event.unread,
            immediate=at_once,
        )
        self._put(
            _batch_record(batch, self.log_retention_seconds),
            ConditionExpression="attribute_not_exists(sk)",
        )
        expires = registration.expires_at or 0
        if registration.owner == IMPLICIT_OWNER and expires < now + IMPLICIT_IDLE_SECONDS - 86400:
            self._touch_implicit(registration.rid, now)  # at most daily: a write costs
        return batch

    def _open_retract(
        self, registration: Registration, now: float, channels: dict[str, str]
    ) -> BatchItem:
        """A retract item: no events, sent at once (its `due` is only the fallback slot). On
        several channels it is a fan-out of the channels to take back on."""
        bid = batch_id(registration.rid, f"retract\n{now!r}")
        multi = registration.multi_channel
        item = BatchItem(
            rid=registration.rid,
            sk=batch_sk(now, bid),
            bid=bid,
            st=OpenState.OPEN,
            backend=next(iter(channels.values())),
            chs={} if multi else None,
            fan=channels if multi else None,
            due=math.ceil(now) + 1,
            n=0,
            created=now,
            v=1,
            immediate=True,
            kind=KIND_RETRACT,
        )
        self._put(
            _batch_record(item, self.log_retention_seconds),
            ConditionExpression="attribute_not_exists(sk)",
        )
        return item

    def _join(self, batch: BatchItem, event: EventSummary, key: str, now: float) -> BatchItem:
        rooms = list(batch.rooms)
        if event.room_id and event.room_id not in rooms and len(rooms) < MAX_ROOMS:
            rooms.append(event.room_id)
        joined = replace(
            batch,
            n=batch.n + 1,
            v=batch.v + 1,
            refs=(*batch.refs, EventRef(event.event_id, event.room_id, now, event.urgency))[
                -MAX_REFS:
            ],
            keys=(*batch.keys, key)[-MAX_KEYS:],
            rooms=tuple(rooms),
            latest=event.to_item(),
            unread=event.unread,
        )
        record = _batch_record(joined, self.log_retention_seconds)
        while item_size(record) > BATCH_BUDGET_BYTES and len(joined.refs) > 1:
            joined = replace(joined, refs=joined.refs[1:])
            record = _batch_record(joined, self.log_retention_seconds)
        self._put(
            record,
            ConditionExpression="v = :v AND st = :open",
            ExpressionAttributeValues={
                ":v": {"N": str(batch.v)},
                ":open": {"S": OpenState.OPEN},
            },
        )
        return joined

    def _touch_implicit(self, rid: str, now: float) -> None:
        """Stateless registrations live as long as they are used."""
        self._call(
            "UpdateItem",
            Key=_key(rid, REGISTRATION_SK),
            UpdateExpression="SET expires_at = :exp",
            ExpressionAttributeValues={":exp": {"N": str(int(now) + IMPLICIT_IDLE_SECONDS)}},
        )


def _key(rid: str, sk: str) -> dict[str, Any]:
    return {"rid": {"S": rid}, "sk": {"S": sk}}


def _batch_record(batch: BatchItem, retention_seconds: int) -> dict[str, Any]:
    """A batch as stored. It is also its delivery-log record, so it lives as long as the log
    (and a day more: the log hides what is older than its retention)."""
    record: dict[str, Any] = {
        "rid": batch.rid,
        "sk": batch.sk,
        "bid": batch.bid,
        "st": batch.st,
        "backend": batch.backend,
        "due": batch.due,
        "n": batch.n,
        "created": batch.created,
        "v": batch.v,
        "refs": [ref_to_item(r) for r in batch.refs],
        "keys": list(batch.keys),
        "latest": batch.latest,
        "unread": batch.unread,
        "expires_at": int(batch.created) + retention_seconds + 24 * 3600,
    }
    if batch.rooms:
        record["rooms"] = list(batch.rooms)
    if batch.immediate:
        record["imm"] = True
    if batch.kind:
        record["kind"] = batch.kind
    if batch.chs is not None:
        record["chs"] = batch.chs
        record["ch"] = batch.ch
    if batch.fan:
        record["fan"] = batch.fan
    return record


def start_channels(registration: Registration) -> tuple[int, dict[str, str] | None]:
    """Where a new batch starts: the first channel not rejected (a fallback chain), or every
    such channel that is not an escalation (mode `all`: index -> backend)."""
    channels = registration.channels
    usable = [i for i in range(len(channels)) if not registration.channel_rejected(i)] or [0]
    if registration.mode is Mode.ALL and registration.multi_channel:
        fan = {str(i): channels[i].backend for i in usable if channels[i].after_seconds == 0}
        if fan:
            return int(next(iter(fan))), fan
    return usable[0], None


def due_entries_of(batch: BatchItem) -> list[DueEntry]:
    """What a slot hands to senders for `batch`: the batch for its current channel's sender,
    or, for a fan-out, one entry per channel."""
    if batch.fan:
        return [
            DueEntry(batch.rid, channel_ref(batch.sk, int(index)), backend, batch.due)
            for index, backend in batch.fan.items()
        ]
    return [DueEntry(batch.rid, batch.sk, batch.backend, batch.due)]


def _read_mark_needed(batch: BatchItem, unread: int) -> bool:
    """A push batch a sender holds that a read reporting `unread` covers, and that no read
    covering as much marked yet. (A fan-out's channels are claimed one by one: not marked.)"""
    return (
        batch.st in (OpenState.SENDING, OpenState.RETRYING)
        and not batch.is_retract
        and not batch.fan_out
        and covered_by_read(batch.unread, unread)
        and (batch.rd is None or batch.rd > unread)
    )


def retract_channels(registration: Registration, batches: tuple[BatchItem, ...]) -> dict[str, str]:
    """The channels (index -> backend) a read takes pushes back on: those that delivered (or
    are delivering) one of these items (newest first) since the last retraction that did not
    fail, that can take back, and have not turned retraction off. Empty: nothing to do."""
    shown: set[int] = set()
    for batch in batches:
        if batch.is_retract:
            if batch.st in (Outcome.FAILED.value, Outcome.CANCELLED.value):
                continue  # what it should have taken back is still shown
            break
        if batch.chs is None:
            if batch.st in (Outcome.DELIVERED.value, OpenState.SENDING):
                shown.add(0)
            continue
        for key, state in batch.chs.items():
            if state.get("st") in (Outcome.DELIVERED.value, OpenState.SENDING):
                shown.add(int(key))
        if batch.st == OpenState.SENDING and not batch.fan:
            shown.add(batch.ch)
    result: dict[str, str] = {}
    for index in sorted(shown):
        channel = registration.channel(index)
        if (
            channel is not None
            and channel.options.retract
            and can_retract(channel.backend, channel.target)
            and not registration.channel_rejected(index)
        ):
            result[str(index)] = channel.backend
    return result


__all__ = [
    "SLOT_PREFIX",
    "AcceptResult",
    "CancelResult",
    "Cancelled",
    "Duplicate",
    "IsRejected",
    "Joined",
    "NotifySide",
    "NothingPending",
    "Opened",
    "PushkeyView",
    "SlotState",
    "Unknown",
]
