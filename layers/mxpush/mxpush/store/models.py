"""What the table holds. One table, keyed by `rid` and `sk`:

- `rid = SHA-256(pushkey)`, `sk = "registration"`: the registration. Static but for its status:
  delivery never writes it (a rejection aside), so it stays well under 1 KB.
- `rid = SHA-256(pushkey)`, `sk = "b#<ms>#<id8>"`: one **batch** — the events one push covers,
  from the first event (`st = open`) through sending to its outcome. A finished batch *is* the
  delivery-log record: an outcome is written once, on the item that held the events, so an
  event can never end with two outcomes, and a cancel is one write. Bounded: the latest
  `MAX_REFS` events and their dedup keys, a count, the newest event's summary. TTL'd.
- `rid = "due#<slot>#<shard>"`, `sk = "<rid>|<batch sk>"`: the **due index** — which batches
  are due in a one-second slot, read by the slot's delivery step with one strongly consistent
  Query per shard. Written once per batch (not per event); TTL'd.
- `rid = "slots#<minute>"`, `sk = "<slot>"`: the **slot marker** — the conditional write that
  lets only the first batch of a slot start its execution, and what the sweep reads to find
  slots whose execution was lost. TTL'd.
- `rid = "claim#<hash>"`, `sk = "claim"`: which registration holds an Acrobits selector.

The owner index is KEYS_ONLY: only registrations carry `owner`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from pynamodb.attributes import (
    BooleanAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
)
from pynamodb.indexes import GlobalSecondaryIndex, KeysOnlyProjection
from pynamodb.models import Model

from mxpush.events import EventSummary
from mxpush.model import Batch, EventRef, Status

REGISTRATION_SK = "registration"
BATCH_PREFIX = "b#"
DUE_PREFIX = "due#"
SLOT_PREFIX = "slots#"
CLAIM_PREFIX = "claim#"
CLAIM_SK = "claim"
# Due-index partitions per slot: each takes at most a few hundred writes per second (a busy
# slot on a big homeserver spreads over all of them).
DUE_SHARDS = 4
# Events a batch lists by id (the log shows them; `n` counts all). Synapse retries only its
# latest notification, so the dedup keys of the latest events are enough.
MAX_REFS = 20
MAX_KEYS = 20
# A batch item's budget: two write units, whatever a chat's traffic (trimmed refs first).
BATCH_BUDGET_BYTES = 2000
# How many distinct rooms a batch remembers ("5 new messages in 3 rooms").
MAX_ROOMS = 20
# Unclaimed batches, due entries and slot markers are kept this long after their slot.
INDEX_RETENTION_SECONDS = 2 * 24 * 3600
# A registration made by a notify (stateless UnifiedPush) nobody pushed to for this long is
# deleted by TTL; its next notification creates it again.
IMPLICIT_IDLE_SECONDS = 30 * 24 * 3600


# A batch item's `kind`: absent for a push; `retract` for a retraction (README, "How it
# behaves"): an item with no events, claimed and finished by the sender like a batch, whose
# outcome (`retracted`) lists the rooms it covered.
KIND_RETRACT = "retract"


class OpenState:
    OPEN = "open"
    # A sender holds the batch (`claim` token) while it pushes.
    SENDING = "sending"
    # The first attempt failed transiently: a retry execution owns it.
    RETRYING = "retrying"


PENDING_STATES = frozenset({OpenState.OPEN, OpenState.SENDING, OpenState.RETRYING})


class OwnerIndex(GlobalSecondaryIndex["RegistrationItem"]):
    class Meta:
        index_name = "owner-index"
        projection = KeysOnlyProjection()

    owner = UnicodeAttribute(hash_key=True)
    created_at = NumberAttribute(range_key=True)


class _FailFastMeta:
    table_name = "mxpush"
    region = "us-east-1"
    # Fail fast: Synapse holds every later notification behind a slow answer.
    connect_timeout_seconds = 2
    read_timeout_seconds = 5
    max_retry_attempts = 2


class RegistrationItem(Model):
    class Meta(_FailFastMeta):
        pass

    rid = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True, default=REGISTRATION_SK)
    pushkey = UnicodeAttribute()
    owner = UnicodeAttribute()
    backend = UnicodeAttribute()
    target: MapAttribute[str, Any] = MapAttribute()
    app_id = UnicodeAttribute()
    created_at = NumberAttribute()
    delay_seconds = NumberAttribute(null=True)
    options: MapAttribute[str, Any] = MapAttribute(null=True)
    homeserver = UnicodeAttribute(null=True)
    pusher: MapAttribute[str, Any] = MapAttribute(null=True)
    pusher_registered = BooleanAttribute(default=False)
    status = UnicodeAttribute(default=Status.ACTIVE.value)
    status_reason = UnicodeAttribute(null=True)
    status_at = NumberAttribute(null=True)
    claim = UnicodeAttribute(null=True)
    # Only registrations the notify path made itself (stateless UnifiedPush) expire when idle.
    expires_at = NumberAttribute(null=True)

    owner_index = OwnerIndex()


class ClaimItem(Model):
    """Says which registration holds a claim."""

    class Meta(_FailFastMeta):
        pass

    rid = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True, default=CLAIM_SK)
    registration = UnicodeAttribute()


def claim_id(backend: str, owner: str, claim: str) -> str:
    """The key of a claim item: never a pushkey's hash (those have no prefix)."""
    digest = hashlib.sha256(f"{backend}\n{owner}\n{claim}".encode()).hexdigest()
    return CLAIM_PREFIX + digest


def batch_sk(created: float, bid: str) -> str:
    """Sorts by creation time, so the newest batches come first in a reverse Query."""
    return f"{BATCH_PREFIX}{int(created * 1000):013d}#{bid[:8]}"


def due_key(slot: int, rid: str) -> str:
    return f"{DUE_PREFIX}{slot}#{int(rid[:8], 16) % DUE_SHARDS}"


def due_partitions(slot: int) -> list[str]:
    return [f"{DUE_PREFIX}{slot}#{shard}" for shard in range(DUE_SHARDS)]


def slot_partition(slot: int) -> str:
    return f"{SLOT_PREFIX}{slot // 60}"


@dataclass(frozen=True)
class BatchItem:
    """A batch item, parsed. `v` is its version: every write checks and bumps it."""

    rid: str
    sk: str
    bid: str
    st: str
    backend: str
    due: int
    n: int
    created: float
    v: int
    refs: tuple[EventRef, ...] = ()
    keys: tuple[str, ...] = ()
    rooms: tuple[str, ...] = ()
    latest: dict[str, Any] = field(default_factory=dict)
    unread: int = 0
    immediate: bool = False
    claim: str | None = None
    claimed: float | None = None
    at: float | None = None
    reason: str | None = None
    # `KIND_RETRACT` for a retraction, else None (a push).
    kind: str | None = None
    # The backend's reference to the delivered message (Gotify's message id), written with
    # the outcome: what a retraction needs to take it back.
    ref: str | None = None

    @property
    def pending(self) -> bool:
        return self.st in PENDING_STATES

    @property
    def is_retract(self) -> bool:
        return self.kind == KIND_RETRACT

    def to_batch(self) -> Batch:
        return Batch(
            batch_id=self.bid,
            latest=EventSummary.from_item(self.latest),
            events=self.refs,
            created_at=self.created,
            total=self.n,
            rooms=frozenset(self.rooms),
        )

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> BatchItem:
        return cls(
            rid=str(item["rid"]),
            sk=str(item["sk"]),
            bid=str(item.get("bid", "")),
            st=str(item.get("st", "")),
            backend=str(item.get("backend", "")),
            due=int(item.get("due", 0)),
            n=int(item.get("n", 0)),
            created=float(item.get("created", 0)),
            v=int(item.get("v", 0)),
            refs=tuple(ref_from_item(r) for r in item.get("refs") or ()),
            keys=tuple(str(k) for k in item.get("keys") or ()),
            rooms=tuple(str(r) for r in item.get("rooms") or ()),
            latest=dict(item.get("latest") or {}),
            unread=int(item.get("unread", 0)),
            immediate=bool(item.get("imm", False)),
            claim=item.get("claim"),
            claimed=item.get("claimed"),
            at=item.get("at"),
            reason=item.get("reason"),
            kind=item.get("kind"),
            ref=None if item.get("ref") is None else str(item["ref"]),
        )


def ref_to_item(ref: EventRef) -> list[Any]:
    """Compact: [event_id, room_id or "", received (ms), urgency]."""
    return [ref.event_id, ref.room_id or "", int(ref.at * 1000), int(ref.urgency)]


def ref_from_item(item: Any) -> EventRef:
    if isinstance(item, dict):  # written by the registration API's test push
        return EventRef.from_item(item)
    event_id, room, at_ms, urgency = item
    from mxpush.events import Urgency  # noqa: PLC0415 - keeps this module's imports small

    return EventRef(str(event_id), str(room) or None, int(at_ms) / 1000, Urgency(int(urgency)))


def item_size(value: Any) -> int:
    """DynamoDB's size of an attribute value (close enough to budget writes)."""
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, int | float):
        return 8
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, dict):
        return 3 + sum(len(k) + 1 + item_size(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return 3 + sum(1 + item_size(v) for v in value)
    return 8
