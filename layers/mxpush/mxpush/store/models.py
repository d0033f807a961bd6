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

A registration of several channels (README, "Channels") keeps its first channel where a
registration of one backend keeps its backend (`backend`, `target`, `options`), the others in
`more_channels`, and the channels a backend rejected in `chrej`. Its batches carry `ch` (the
channel a fallback chain is on), `chs` (each channel's outcome: the per-channel log) and, for a
fan-out or a retraction on several channels, `fan` (channel index -> backend): those are
claimed per channel (`chs.<i>.claim`), and due entries name `<batch sk>~<i>`.

The owner index is KEYS_ONLY: only registrations carry `owner`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from pynamodb.attributes import (
    BooleanAttribute,
    ListAttribute,
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
    # Delivered on a channel, and an escalation channel is due later (`due`) unless a read
    # comes first. Not joinable; a read ends it (`delivered`, the escalation `cancelled`).
    WAITING = "waiting"


PENDING_STATES = frozenset(
    {OpenState.OPEN, OpenState.SENDING, OpenState.RETRYING, OpenState.WAITING}
)
# A channel's own states in `chs` (fan-out): besides these, its outcome.
CHANNEL_PENDING = frozenset({OpenState.OPEN, OpenState.SENDING, OpenState.RETRYING})
# Separates a batch's sort key from a channel index in a sender's event and a due entry: `~`
# for a fan-out's channel (claimed per channel), `@` for the channel a fallback chain's batch
# was on when its retry execution started (a retry or a failure record for it changes nothing
# once the batch has moved on).
CHANNEL_SEPARATOR = "~"
ON_CHANNEL_SEPARATOR = "@"


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
    # Channels after the first (`mxpush.model.Channel.to_item`), the mode, the first channel's
    # give-up time, and the channels rejected so far (index -> {"why", "at"}).
    more_channels = ListAttribute(null=True)  # type: ignore[var-annotated]
    mode = UnicodeAttribute(null=True)
    give_up_after_seconds = NumberAttribute(null=True)
    chrej: MapAttribute[str, Any] = MapAttribute(null=True)

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


def channel_ref(sk: str, channel: int | None) -> str:
    """How a sender's event or a due entry names a batch: its sort key, and for a per-channel
    claim (fan-out) the channel."""
    return sk if channel is None else f"{sk}{CHANNEL_SEPARATOR}{channel}"


def parse_channel_ref(ref: str) -> tuple[str, int | None]:
    sk, separator, channel = ref.partition(CHANNEL_SEPARATOR)
    if not separator or not channel.isdigit():
        return ref, None
    return sk, int(channel)


def on_channel_ref(sk: str, channel: int) -> str:
    return f"{sk}{ON_CHANNEL_SEPARATOR}{channel}"


def parse_on_channel_ref(ref: str) -> tuple[str, int | None]:
    sk, separator, channel = ref.partition(ON_CHANNEL_SEPARATOR)
    if not separator or not channel.isdigit():
        return ref, None
    return sk, int(channel)


def due_partitions(slot: int) -> list[str]:
    return [f"{DUE_PREFIX}{slot}#{shard}" for shard in range(DUE_SHARDS)]


def slot_partition(slot: int) -> str:
    return f"{SLOT_PREFIX}{slot // 60}"


@dataclass(frozen=True)
class DueEntry:
    """A batch due in a slot (`due`), for the sender of `backend`. `sk` may name a channel
    (`<sk>~<i>`: a fan-out's per-channel entry, `channel_ref`)."""

    rid: str
    sk: str
    backend: str
    due: int = 0

    def to_event(self) -> dict[str, str]:
        return {"registration": self.rid, "batch": self.sk}


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
    # Channels (README, "Channels"): the one a fallback chain is on, each channel's record
    # (`{"st", "b", "r"?, "at"?, "ref"?, "claim"?, "claimed"?}` by index), the fan-out's
    # channels (index -> backend), when a channel first delivered it, when the current channel
    # was handed the batch.
    ch: int = 0
    chs: dict[str, dict[str, Any]] | None = None
    fan: dict[str, str] | None = None
    dat: float | None = None
    cht: float | None = None
    # A read that came while the batch was being sent (`sending`, `retrying`): the unread count
    # it reported (the lowest, if several). Honoured by the next claim or channel move
    # (`read_since_queued`), since a read cannot cancel a batch a sender holds.
    rd: int | None = None

    @property
    def fan_out(self) -> bool:
        return bool(self.fan)

    def channel_state(self, channel: int) -> dict[str, Any]:
        return dict((self.chs or {}).get(str(channel)) or {})

    def delivered_on(self, channel: int) -> bool:
        """Whether channel `channel` delivered this batch (a batch of a one-channel
        registration: whether it was delivered)."""
        if self.chs is None:
            return channel == 0 and self.st == "delivered"
        return self.channel_state(channel).get("st") == "delivered"

    def channel_ref_of(self, channel: int) -> str | None:
        if self.chs is None:
            return self.ref if channel == 0 else None
        value = self.channel_state(channel).get("ref")
        return None if value is None else str(value)

    def channel_started(self) -> float:
        """When the current channel was handed the batch (its give-up time counts from it)."""
        if self.cht is not None:
            return self.cht
        return self.created if self.immediate else float(self.due)

    @property
    def pending(self) -> bool:
        return self.st in PENDING_STATES

    @property
    def read_since_queued(self) -> bool:
        """Whether a read recorded while the batch was in a sender's hands covers it."""
        return self.rd is not None and covered_by_read(self.unread, self.rd)

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
            ch=int(item.get("ch", 0)),
            chs=None
            if item.get("chs") is None
            else {str(k): dict(v) for k, v in item["chs"].items()},
            fan=None if not item.get("fan") else {str(k): str(v) for k, v in item["fan"].items()},
            dat=None if item.get("dat") is None else float(item["dat"]),
            cht=None if item.get("cht") is None else float(item["cht"]),
            rd=None if item.get("rd") is None else int(item["rd"]),
        )


def covered_by_read(queued_unread: int, unread: int) -> bool:
    """A read reporting `unread` unread rooms covers a batch queued with `queued_unread`: none
    left, or fewer than when it was queued (the user read what it was about)."""
    return unread == 0 or queued_unread > unread


def read_reason(unread: int) -> str:
    """What the delivery log says of a push a read made unnecessary."""
    if unread == 0:
        return "read on another device (no unread rooms left)"
    return f"read on another device (unread rooms down to {unread})"


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
