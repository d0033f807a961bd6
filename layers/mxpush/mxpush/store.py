"""The DynamoDB store (pynamodb): registrations, the pending batch, and the delivery log.

One table, keyed by `rid` (SHA-256 of the pushkey) and `sk`:

- `sk = "registration"`: the registration, plus all per-pushkey delivery state, so the notify
  path needs a single conditional UpdateItem per device:
  - `p_*`: the open (pending) batch: events wait here during the delay and new ones join it;
  - `sending.<batch>`: batches a sender has claimed (moved out of `p_*`) or calls sent at once;
  - `p_ids` and `recent`: the duplicate filter, as short event hashes: those of the pending
    batch, and the last `MAX_RECENT` events claimed, sent or cancelled. Both stay small, because
    DynamoDB bills every update by the size of the whole item;
  - `unlogged.<key>`: batches cancelled on the notify path, waiting to be written to the log
    (the cancel path has room for one write only; the state machine flushes them).
- `sk = "log#<ms>#<id>"`: one delivery-log record per batch, removed by DynamoDB TTL.

A registration with a `claim` (an Acrobits selector) also owns a claim item,
`rid = "claim#" + SHA-256(backend, owner, claim)`, `sk = "claim"`, naming its registration: the
one lookup by claim, and the guard (written in one transaction with the registration) that no
owner gets two registrations for one claim.

The owner index is KEYS_ONLY, so the frequent updates of delivery state never write to it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.attributes import (
    BooleanAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
)
from pynamodb.connection import TableConnection
from pynamodb.exceptions import PutError, PynamoDBException, TransactWriteError
from pynamodb.expressions.condition import Condition, size
from pynamodb.expressions.update import Action
from pynamodb.indexes import GlobalSecondaryIndex, KeysOnlyProjection
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from mxpush.errors import StoreUnavailable
from mxpush.events import EventSummary
from mxpush.ids import batch_id, dedup_key
from mxpush.implicit import IMPLICIT_BACKEND, IMPLICIT_OWNER
from mxpush.model import (
    Batch,
    DeliveryRecord,
    EventRef,
    Outcome,
    Registration,
    RegistrationOptions,
    Status,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

REGISTRATION_SK = "registration"
LOG_PREFIX = "log#"
# A stateless UnifiedPush registration nobody pushed to for this long is deleted by TTL; the
# next notification for its pushkey creates it again.
IMPLICIT_IDLE_SECONDS = 30 * 24 * 3600
CLAIM_PREFIX = "claim#"
CLAIM_SK = "claim"
# Synapse retries one notification at a time per pusher, so duplicates are of recent events.
MAX_RECENT = 64
SENDING_RETENTION_SECONDS = 24 * 3600
# Removals per UpdateItem in housekeeping: well inside the 4 KB expression limit.
HOUSEKEEPING_BATCH = 25
_CANCELLED_PREFIX = "cancelled:"
_PENDING_ATTRIBUTES = (
    "p_id",
    "p_count",
    "p_ids",
    "p_events",
    "p_latest",
    "p_unread",
    "p_created",
)


class OwnerIndex(GlobalSecondaryIndex["RegistrationItem"]):
    class Meta:
        index_name = "owner-index"
        projection = KeysOnlyProjection()

    owner = UnicodeAttribute(hash_key=True)
    created_at = NumberAttribute(range_key=True)


class _FailFastMeta:
    """Table settings for the items the notify path reads and writes."""

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
    recent: ListAttribute[str] = ListAttribute(null=True)
    sending: MapAttribute[str, Any] = MapAttribute(default=dict)
    unlogged: MapAttribute[str, Any] = MapAttribute(default=dict)
    p_id = UnicodeAttribute(null=True)
    p_count = NumberAttribute(null=True)
    p_ids: ListAttribute[str] = ListAttribute(null=True)
    p_events: ListAttribute[Any] = ListAttribute(null=True)
    p_latest: MapAttribute[str, Any] = MapAttribute(null=True)
    p_unread = NumberAttribute(null=True)
    p_created = NumberAttribute(null=True)
    # Only registrations the notify path made itself (stateless UnifiedPush) expire when idle.
    expires_at = NumberAttribute(null=True)

    owner_index = OwnerIndex()


class ClaimItem(Model):
    """Says which registration holds a claim (see the module docstring)."""

    class Meta(_FailFastMeta):
        pass

    rid = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True, default=CLAIM_SK)
    registration = UnicodeAttribute()


class LogItem(Model):
    class Meta:
        table_name = "mxpush"
        region = "us-east-1"

    rid = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    at = NumberAttribute()
    outcome = UnicodeAttribute()
    reason = UnicodeAttribute(null=True)
    batch = UnicodeAttribute(null=True)
    events: ListAttribute[Any] = ListAttribute(default=list)
    expires_at = NumberAttribute()


# --- Results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unknown:
    """No registration for this pushkey (never registered, or deleted)."""


@dataclass(frozen=True)
class IsRejected:
    """The registration exists but an earlier delivery found its token invalid."""


@dataclass(frozen=True)
class NewBatch:
    """The event opened a batch: the caller starts its execution."""

    batch_id: str
    backend: str
    delay_seconds: int | None
    flush: bool


@dataclass(frozen=True)
class Joined:
    """The event joined the pending batch; its execution is already running."""

    batch_id: str
    backend: str
    delay_seconds: int | None
    batch_created: float


@dataclass(frozen=True)
class Duplicate:
    """The event was accepted before. `batch_id` is set when this event opened a batch that may
    still lack its execution (the earlier StartExecution may have failed): start it again."""

    batch_id: str | None
    backend: str
    delay_seconds: int | None
    immediate: bool


AcceptResult = Unknown | IsRejected | NewBatch | Joined | Duplicate


@dataclass(frozen=True)
class Cancelled:
    batch_id: str


@dataclass(frozen=True)
class NothingPending:
    pass


CancelResult = Unknown | IsRejected | Cancelled | NothingPending


@dataclass(frozen=True)
class Claimed:
    registration: Registration
    batch: Batch


@dataclass(frozen=True)
class Skipped:
    """The batch is no longer to be sent (cancelled, superseded, or the registration is gone)."""

    reason: str


ClaimResult = Claimed | Skipped


@dataclass(frozen=True)
class Removed:
    registration: Registration
    # Executions that may still be running for this registration.
    batch_ids: tuple[str, ...]


class ClaimTaken(Exception):
    """Another registration of the same owner and backend holds this claim."""


class _ConditionFailed(Exception):
    def __init__(self, old_item: Mapping[str, Any] | None) -> None:
        super().__init__("conditional check failed")
        self.old_item = old_item


# --- The store ----------------------------------------------------------------------------------


class DynamoStore:
    """All reads and writes of mxpush state. Methods raise `StoreUnavailable` on AWS errors."""

    def __init__(self, table_name: str, region: str, *, log_retention_days: int = 7) -> None:
        for model in (RegistrationItem, LogItem, ClaimItem):
            model.Meta.table_name = table_name
            model.Meta.region = region
            model._connection = None
        self.table_name = table_name
        self.log_retention_seconds = log_retention_days * 24 * 3600

    # --- notify path -------------------------------------------------------------------------

    def accept_event(
        self, rid: str, event: EventSummary, *, now: float, immediate: bool
    ) -> AcceptResult:
        """Record an event for delivery in one conditional UpdateItem.

        `immediate` (calls): the event becomes its own batch in `sending` and goes out at once.
        Otherwise it opens the pending batch or joins the one that is open.
        """
        R = RegistrationItem  # noqa: N806 - short alias for expression building
        bid = batch_id(rid, event.event_id)
        key = dedup_key(event.event_id)
        ref = EventRef(event.event_id, event.room_id, now, event.urgency).to_item()
        condition = (R.status == Status.ACTIVE.value) & ~R.recent.contains(key)
        actions: list[Action]
        if immediate:
            actions = [R.sending[bid].set(_batch_item(bid, event.to_item(), [ref], now, now))]
            condition &= R.sending[bid].does_not_exist()
        else:
            actions = [
                R.p_id.set(R.p_id | bid),
                R.p_count.set((R.p_count | 0) + 1),
                R.p_ids.set((R.p_ids | []).append([key])),
                R.p_events.set((R.p_events | []).append([ref])),
                R.p_latest.set(event.to_item()),
                R.p_unread.set(event.unread),
                R.p_created.set(R.p_created | now),
            ]
            condition &= ~R.p_ids.contains(key)
        try:
            new = self._update(rid, actions, condition, return_values="ALL_NEW")
        except _ConditionFailed as failed:
            return self._why_not_accepted(failed.old_item, bid)
        backend = _s(new, "backend")
        delay = _n_or_none(new, "delay_seconds")
        if immediate:
            return NewBatch(bid, backend, 0, flush=bool(_m(new, "unlogged")))
        if _s(new, "p_id") == bid:
            return NewBatch(bid, backend, delay, flush=bool(_m(new, "unlogged")))
        return Joined(_s(new, "p_id"), backend, delay, float(_n(new, "p_created")))

    def _why_not_accepted(self, old: Mapping[str, Any] | None, bid: str) -> AcceptResult:
        if old is None:
            return Unknown()
        if _s(old, "status") != Status.ACTIVE.value:
            return IsRejected()
        # The only other conditions are the duplicate filter's: accepted before.
        backend = _s(old, "backend")
        delay = _n_or_none(old, "delay_seconds")
        if old.get("p_id", {}).get("S") == bid:
            return Duplicate(bid, backend, delay, immediate=False)
        if bid in _m(old, "sending"):
            return Duplicate(bid, backend, 0, immediate=True)
        return Duplicate(None, backend, delay, immediate=False)

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
            sending={},
            unlogged={},
            expires_at=int(now) + IMPLICIT_IDLE_SECONDS,
        )
        try:
            item.save(condition=RegistrationItem.rid.does_not_exist())
        except PutError as exc:
            if exc.cause_response_code == "ConditionalCheckFailedException":
                return
            raise StoreUnavailable(f"could not store the registration ({_code(exc)})") from None
        except PynamoDBException as exc:
            raise StoreUnavailable(f"could not store the registration ({_code(exc)})") from None

    def restart_stale_batch(
        self, rid: str, old_batch_id: str, new_batch_id: str, now: float
    ) -> bool:
        """Give a pending batch whose execution was lost a new id (its events are kept)."""
        R = RegistrationItem  # noqa: N806
        try:
            self._update(
                rid,
                [R.p_id.set(new_batch_id), R.p_created.set(now)],
                R.p_id == old_batch_id,
                return_values="NONE",
            )
        except _ConditionFailed:
            return False
        return True

    def cancel_pending(self, rid: str, *, unread: int, now: float) -> CancelResult:
        """Cancel the pending batch after a badge update says the user read messages.

        One UpdateItem: the batch's events move to `unlogged` (the log is written later, off this
        path) and the old item tells the caller which execution to stop.
        """
        R = RegistrationItem  # noqa: N806
        condition = R.p_id.exists()
        if unread > 0:
            # The user read something: fewer rooms are unread than when the push was queued.
            condition &= R.p_unread > unread
        entry_key = f"{_CANCELLED_PREFIX}{int(now * 1000)}:{unread}"
        actions: list[Action] = [
            R.unlogged[entry_key].set(R.p_events),
            # A late duplicate of a cancelled event must not be pushed either.
            R.recent.set((R.recent | []).append(R.p_ids)),
        ]
        actions += [getattr(R, name).remove() for name in _PENDING_ATTRIBUTES]
        try:
            old = self._update(rid, actions, condition, return_values="ALL_OLD")
        except _ConditionFailed as failed:
            if failed.old_item is None:
                return Unknown()
            if _s(failed.old_item, "status") != Status.ACTIVE.value:
                return IsRejected()
            return NothingPending()
        return Cancelled(_s(old, "p_id"))

    # --- delivery (state machine) ------------------------------------------------------------

    def claim_batch(self, rid: str, bid: str, *, now: float) -> ClaimResult:
        """Take a batch for sending: move it out of `p_*` so new events start a new batch.

        Idempotent: a retried sender finds the batch already in `sending` and sends it again.
        """
        R = RegistrationItem  # noqa: N806
        for _ in range(10):
            item = self._get(rid)
            if item is None:
                return Skipped("registration deleted")
            registration = _registration(item)
            sending = _plain(item.sending)
            if bid in sending:
                return Claimed(registration, _batch_from_item(sending[bid]))
            if item.p_id != bid:
                return Skipped("cancelled")
            batch_map = _batch_item(
                bid,
                _plain(item.p_latest),
                list(item.p_events or []),
                item.p_created or now,
                now,
            )
            recent = _trimmed(list(item.recent or []) + list(item.p_ids or []))
            actions: list[Action] = [R.sending[bid].set(batch_map), R.recent.set(recent)]
            actions += [getattr(R, name).remove() for name in _PENDING_ATTRIBUTES]
            try:
                # If an event joined since we read, read again rather than lose it.
                self._update(rid, actions, (R.p_id == bid) & (R.p_count == item.p_count), "NONE")
            except _ConditionFailed:
                continue
            return Claimed(registration, _batch_from_item(batch_map))
        raise StoreUnavailable("could not claim the batch: too much contention")

    def finish_batch(
        self, rid: str, bid: str, *, outcome: Outcome | None, reason: str | None, now: float
    ) -> None:
        """Record how a batch ended, release it, and do the registration's housekeeping.

        `outcome=None`: nothing to log for this batch (it was cancelled, already logged).
        """
        R = RegistrationItem  # noqa: N806
        actions: list[Action] = [R.sending[bid].remove()]
        if outcome is Outcome.REJECTED:
            actions += [
                R.status.set(Status.REJECTED.value),
                R.status_reason.set(reason or "rejected by the backend"),
                R.status_at.set(now),
            ]
        try:
            old = self._update(rid, actions, R.rid.exists(), return_values="ALL_OLD")
        except _ConditionFailed:
            return  # the registration was deleted; its log went with it
        events = _batch_events(old, bid)
        if events is None and old.get("p_id", {}).get("S") == bid:
            # Failed before it was claimed: release the pending batch too.
            events = self._release_pending(rid, bid)
        if outcome is not None:
            self._put_log(rid, DeliveryRecord(now, outcome, tuple(events or ()), reason, bid))
        # Calls never pass through `p_ids`: their events join the filter here.
        keys = [dedup_key(e.event_id) for e in events or ()]
        self._housekeeping(rid, old, now, add_recent=keys)

    def flush_unlogged(self, rid: str, *, now: float) -> None:
        item = self._get(rid)
        if item is not None:
            self._housekeeping(rid, _raw(item), now)

    def log_delivery(self, rid: str, record: DeliveryRecord) -> None:
        self._put_log(rid, record)

    def mark_rejected(self, rid: str, *, reason: str, now: float) -> None:
        R = RegistrationItem  # noqa: N806
        try:
            self._update(
                rid,
                [
                    R.status.set(Status.REJECTED.value),
                    R.status_reason.set(reason),
                    R.status_at.set(now),
                ],
                R.rid.exists(),
                return_values="NONE",
            )
        except _ConditionFailed:
            return

    # --- registrations -----------------------------------------------------------------------

    def create_registration(self, registration: Registration) -> None:
        item = RegistrationItem(
            rid=registration.rid,
            sk=REGISTRATION_SK,
            pushkey=registration.pushkey,
            owner=registration.owner,
            backend=registration.backend,
            target=dict(registration.target),
            app_id=registration.app_id,
            created_at=registration.created_at,
            delay_seconds=registration.delay_seconds,
            options=registration.options.to_item(),
            homeserver=registration.homeserver,
            pusher=dict(registration.pusher) if registration.pusher else None,
            pusher_registered=registration.pusher_registered,
            status=registration.status.value,
            claim=registration.claim,
            sending={},
            unlogged={},
        )
        if registration.claim is None:
            try:
                item.save(condition=RegistrationItem.rid.does_not_exist())
            except PynamoDBException as exc:
                raise StoreUnavailable(f"could not store the registration ({_code(exc)})") from None
            return
        claim = ClaimItem(
            rid=claim_id(registration.backend, registration.owner, registration.claim),
            sk=CLAIM_SK,
            registration=registration.rid,
        )
        try:
            with TransactWrite(connection=self._connection().connection) as transaction:
                transaction.save(item, condition=RegistrationItem.rid.does_not_exist())
                transaction.save(claim, condition=ClaimItem.rid.does_not_exist())
        except TransactWriteError as exc:
            reasons = exc.cancellation_reasons
            claim_reason = reasons[1] if len(reasons) == 2 else None
            if claim_reason is not None and claim_reason.code == "ConditionalCheckFailed":
                raise ClaimTaken(registration.claim) from None
            raise StoreUnavailable(f"could not store the registration ({_code(exc)})") from None
        except PynamoDBException as exc:
            raise StoreUnavailable(f"could not store the registration ({_code(exc)})") from None

    def find_claimed(self, backend: str, owner: str, claim: str) -> str | None:
        """The rid of `owner`'s `backend` registration holding `claim`, if any (one GetItem).

        The registration may be gone if its deletion was interrupted: `update_target` then
        returns None, and `release_claim` frees the claim.
        """
        try:
            item = ClaimItem.get(claim_id(backend, owner, claim), CLAIM_SK, consistent_read=True)
        except ClaimItem.DoesNotExist:
            return None
        except PynamoDBException as exc:
            raise StoreUnavailable(f"DynamoDB GetItem failed ({_code(exc)})") from None
        return item.registration

    def release_claim(self, backend: str, owner: str, claim: str, rid: str) -> None:
        """Free a claim if registration `rid` still holds it."""
        self._drop_claim(claim_id(backend, owner, claim), rid)

    def update_target(
        self,
        rid: str,
        *,
        claim: str,
        set_fields: Mapping[str, Any],
        remove_fields: Iterable[str] = (),
        pusher_registered: bool | None = None,
    ) -> Registration | None:
        """Replace some target fields of the registration holding `claim` and make it active
        again (new tokens: an old rejection no longer applies). One UpdateItem.

        Returns the updated registration, or None if it no longer holds the claim (deleted).
        """
        R = RegistrationItem  # noqa: N806
        actions: list[Action] = [R.target[k].set(v) for k, v in set_fields.items()]
        actions += [R.target[k].remove() for k in remove_fields if k not in set_fields]
        actions += [
            R.status.set(Status.ACTIVE.value),
            R.status_reason.remove(),
            R.status_at.remove(),
        ]
        if pusher_registered is not None:
            actions.append(R.pusher_registered.set(pusher_registered))
        try:
            new = self._update(rid, actions, R.claim == claim, return_values="ALL_NEW")
        except _ConditionFailed:
            return None
        return _registration(RegistrationItem.from_raw_data(new))

    def set_pusher_registered(self, rid: str, registered: bool) -> None:
        R = RegistrationItem  # noqa: N806
        try:
            self._update(rid, [R.pusher_registered.set(registered)], R.rid.exists(), "NONE")
        except _ConditionFailed:
            return

    def get_registration(self, rid: str) -> Registration | None:
        item = self._get(rid, consistent=False)
        return None if item is None else _registration(item)

    def list_registrations(self, owner: str | None) -> list[Registration]:
        """The registrations of `owner`, or all of them (`None`, operator only), oldest first."""
        try:
            if owner is None:
                items: Iterable[RegistrationItem] = RegistrationItem.scan(
                    RegistrationItem.sk == REGISTRATION_SK
                )
                found = [_registration(i) for i in items]
            else:
                keys = [(k.rid, REGISTRATION_SK) for k in RegistrationItem.owner_index.query(owner)]
                found = [_registration(i) for i in RegistrationItem.batch_get(keys)]
        except PynamoDBException as exc:
            raise StoreUnavailable(f"could not list registrations ({_code(exc)})") from None
        return sorted(found, key=lambda r: r.created_at)

    def delete_registration(self, rid: str) -> Removed | None:
        try:
            item = self._get(rid)
            if item is None:
                return None
            item.delete()
            with LogItem.batch_write() as batch:
                for log in LogItem.query(rid, LogItem.sk.startswith(LOG_PREFIX)):
                    batch.delete(log)
        except PynamoDBException as exc:
            raise StoreUnavailable(f"could not delete the registration ({_code(exc)})") from None
        if item.claim:
            self._drop_claim(claim_id(item.backend, item.owner, item.claim), rid)
        running = tuple(filter(None, [item.p_id, *_plain(item.sending)]))
        return Removed(_registration(item), running)

    def list_deliveries(self, rid: str, *, now: float, limit: int = 100) -> list[DeliveryRecord]:
        """The delivery log, newest first, including cancellations not yet flushed to it."""
        oldest = now - self.log_retention_seconds
        try:
            item = self._get(rid, consistent=False)
            logs = list(
                LogItem.query(
                    rid,
                    LogItem.sk.startswith(LOG_PREFIX),
                    scan_index_forward=False,
                    limit=limit,
                )
            )
        except PynamoDBException as exc:
            raise StoreUnavailable(f"could not read the delivery log ({_code(exc)})") from None
        records = [_record_from_log(log) for log in logs]
        if item is not None:
            # The item is read before the log: a flush in between shows its cancellations in
            # both (never in neither), so skip those the log already holds.
            logged = {r.batch_id for r in records}
            records += [
                r for r in _unlogged_records(_plain(item.unlogged)) if r.batch_id not in logged
            ]
        # TTL deletes lazily (within days); hide what has expired already.
        records = [r for r in records if r.at >= oldest]
        records.sort(key=lambda r: r.at, reverse=True)
        return records[:limit]

    # --- internals ---------------------------------------------------------------------------

    def _connection(self) -> TableConnection:
        return RegistrationItem._get_connection()

    def _update(
        self,
        rid: str,
        actions: list[Action],
        condition: Condition,
        return_values: str,
    ) -> dict[str, Any]:
        """UpdateItem that reports the old item when the condition fails.

        pynamodb 6.1 builds the expression, but its `update` cannot ask for
        ReturnValuesOnConditionCheckFailure, so the request goes through its botocore client.
        That is what lets one request tell "unknown", "rejected" and "duplicate" apart.
        """
        connection = self._connection()
        kwargs = connection.get_operation_kwargs(
            rid,
            range_key=REGISTRATION_SK,
            key="Key",
            actions=actions,
            condition=condition,
            return_values=return_values,
        )
        kwargs["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        client = cast("DynamoDBClient", connection.connection.client)
        try:
            response = client.update_item(**kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                old = cast("Mapping[str, Any] | None", exc.response.get("Item"))
                raise _ConditionFailed(old) from None
            raise StoreUnavailable(f"DynamoDB UpdateItem failed ({_code(exc)})") from None
        except BotoCoreError as exc:
            raise StoreUnavailable(f"DynamoDB UpdateItem failed ({type(exc).__name__})") from None
        attributes: dict[str, Any] = response.get("Attributes", {})
        return attributes

    def _get(self, rid: str, *, consistent: bool = True) -> RegistrationItem | None:
        try:
            return RegistrationItem.get(rid, REGISTRATION_SK, consistent_read=consistent)
        except RegistrationItem.DoesNotExist:
            return None
        except PynamoDBException as exc:
            raise StoreUnavailable(f"DynamoDB GetItem failed ({_code(exc)})") from None

    def _drop_claim(self, key: str, rid: str) -> None:
        """Delete a claim item if it still names `rid` (another may have taken it since)."""
        try:
            ClaimItem(rid=key, sk=CLAIM_SK, registration=rid).delete(
                condition=ClaimItem.registration == rid
            )
        except PynamoDBException as exc:
            if exc.cause_response_code == "ConditionalCheckFailedException":
                return
            raise StoreUnavailable(f"could not delete a claim ({_code(exc)})") from None

    def _release_pending(self, rid: str, bid: str) -> list[EventRef] | None:
        R = RegistrationItem  # noqa: N806
        try:
            old = self._update(
                rid,
                [getattr(R, name).remove() for name in _PENDING_ATTRIBUTES],
                R.p_id == bid,
                "ALL_OLD",
            )
        except _ConditionFailed:
            return None
        return [EventRef.from_item(e) for e in _deserialize_list(old.get("p_events"))]

    def _put_log(self, rid: str, record: DeliveryRecord) -> None:
        try:
            self._log_item(rid, record).save()
        except PynamoDBException as exc:
            raise StoreUnavailable(f"could not write the delivery log ({_code(exc)})") from None

    def _put_logs(self, rid: str, records: Sequence[DeliveryRecord]) -> None:
        if len(records) == 1:
            self._put_log(rid, records[0])
            return
        try:
            with LogItem.batch_write() as batch:  # 25 items per request, retried by pynamodb
                for record in records:
                    batch.save(self._log_item(rid, record))
        except PynamoDBException as exc:
            raise StoreUnavailable(f"could not write the delivery log ({_code(exc)})") from None

    def _log_item(self, rid: str, record: DeliveryRecord) -> LogItem:
        ms = int(record.at * 1000)
        suffix = (record.batch_id or "x")[:12]
        return LogItem(
            rid=rid,
            sk=f"{LOG_PREFIX}{ms:013d}#{suffix}",
            at=record.at,
            outcome=record.outcome.value,
            reason=record.reason,
            batch=record.batch_id,
            events=[e.to_item() for e in record.events],
            expires_at=int(record.at) + self.log_retention_seconds,
        )

    def _housekeeping(
        self,
        rid: str,
        raw_item: Mapping[str, Any],
        now: float,
        *,
        add_recent: Sequence[str] = (),
    ) -> None:
        """Trim the duplicate filter, write cancelled batches to the log, drop stuck claims.

        Idempotent: log keys derive from the entry, so a repeat overwrites. The filter is
        rewritten only if no cancel appended to it meanwhile (else: read again, retry). However
        many cancellations are parked, the work goes in bounded requests: an UpdateItem's
        expression is limited to 4 KB.
        """
        R = RegistrationItem  # noqa: N806
        for _ in range(3):
            old_recent = [v["S"] for v in (raw_item.get("recent") or {}).get("L", [])]
            new_recent = _trimmed(old_recent + list(add_recent))
            actions: list[Action] = []
            condition = R.rid.exists()
            if raw_item.get("owner", {}).get("S") == IMPLICIT_OWNER:
                actions.append(R.expires_at.set(int(now) + IMPLICIT_IDLE_SECONDS))
            if new_recent != old_recent:
                actions.append(R.recent.set(new_recent))
                condition &= (
                    size(R.recent) == len(old_recent) if old_recent else R.recent.does_not_exist()
                )
            if not actions:
                break
            try:
                self._update(rid, actions, condition, "NONE")
                break
            except _ConditionFailed as failed:
                if failed.old_item is None:
                    return  # deleted meanwhile
                raw_item = failed.old_item
        removals: list[Action] = []
        records: list[DeliveryRecord] = []
        for entry_key, value in _m(raw_item, "unlogged").items():
            record = _unlogged_record(entry_key, value)
            if record is not None:
                records.append(record)
            removals.append(R.unlogged[entry_key].remove())
        for key, value in _m(raw_item, "sending").items():
            claimed = float(value.get("M", {}).get("claimed", {}).get("N", now))
            if claimed < now - SENDING_RETENTION_SECONDS:
                removals.append(R.sending[key].remove())
        self._put_logs(rid, records)  # before the removals: a crash in between loses nothing
        for start in range(0, len(removals), HOUSEKEEPING_BATCH):
            try:
                self._update(
                    rid, removals[start : start + HOUSEKEEPING_BATCH], R.rid.exists(), "NONE"
                )
            except _ConditionFailed:
                return


# --- conversions --------------------------------------------------------------------------------


def claim_id(backend: str, owner: str, claim: str) -> str:
    """The key of a claim item: never a pushkey's hash (those have no prefix)."""
    digest = hashlib.sha256(f"{backend}\n{owner}\n{claim}".encode()).hexdigest()
    return CLAIM_PREFIX + digest


def _batch_item(
    bid: str, latest: Mapping[str, Any], events: list[Any], created: float, claimed: float
) -> dict[str, Any]:
    return {
        "id": bid,
        "latest": dict(latest),
        "events": [_plain(e) for e in events],
        "created": created,
        "claimed": claimed,
    }


def _batch_from_item(item: Any) -> Batch:
    data = _plain(item)
    return Batch(
        batch_id=str(data["id"]),
        latest=EventSummary.from_item(data.get("latest") or {}),
        events=tuple(EventRef.from_item(e) for e in data.get("events") or ()),
        created_at=float(data.get("created", 0)),
    )


def _registration(item: RegistrationItem) -> Registration:
    return Registration(
        rid=item.rid,
        pushkey=item.pushkey,
        backend=item.backend,
        target=_plain(item.target),
        app_id=item.app_id,
        owner=item.owner,
        created_at=float(item.created_at),
        delay_seconds=None if item.delay_seconds is None else int(item.delay_seconds),
        options=RegistrationOptions.from_item(_plain(item.options) if item.options else None),
        homeserver=item.homeserver,
        pusher=_plain(item.pusher) if item.pusher else None,
        pusher_registered=bool(item.pusher_registered),
        status=Status(item.status),
        status_reason=item.status_reason,
        status_at=item.status_at,
        claim=item.claim,
    )


def _plain(value: Any) -> dict[str, Any]:
    """pynamodb hands raw maps back as MapAttribute; the domain wants plain dicts."""
    if isinstance(value, MapAttribute):
        result: dict[str, Any] = value.as_dict()
        return result
    return dict(value or {})


def _record_from_log(log: LogItem) -> DeliveryRecord:
    return DeliveryRecord(
        at=float(log.at),
        outcome=Outcome(log.outcome),
        events=tuple(EventRef.from_item(_plain(e)) for e in log.events or ()),
        reason=log.reason,
        batch_id=log.batch,
    )


def _unlogged_records(unlogged: Mapping[str, Any]) -> list[DeliveryRecord]:
    records = []
    for key, value in unlogged.items():
        events = value if isinstance(value, list) else []
        record = _cancel_record(key, [_plain(e) for e in events])
        if record is not None:
            records.append(record)
    return records


def _unlogged_record(key: str, raw_value: Mapping[str, Any]) -> DeliveryRecord | None:
    return _cancel_record(key, _deserialize_list(raw_value))


def _cancel_record(key: str, events: Sequence[Mapping[str, Any]]) -> DeliveryRecord | None:
    if not key.startswith(_CANCELLED_PREFIX):
        return None
    try:
        ms, unread = key[len(_CANCELLED_PREFIX) :].split(":")
        at = int(ms) / 1000
    except ValueError:
        return None
    reason = (
        "read on another device (no unread rooms left)"
        if unread == "0"
        else f"read on another device (unread rooms down to {unread})"
    )
    return DeliveryRecord(
        at=at,
        outcome=Outcome.CANCELLED,
        events=tuple(EventRef.from_item(e) for e in events),
        reason=reason,
        batch_id=f"c{ms}",
    )


def _batch_events(raw_old: Mapping[str, Any], bid: str) -> list[EventRef] | None:
    batch = _m(raw_old, "sending").get(bid)
    if batch is None:
        return None
    events = _deserialize_list(batch.get("M", {}).get("events"))
    return [EventRef.from_item(e) for e in events]


# Raw DynamoDB JSON helpers (UpdateItem answers are not deserialized by pynamodb).


def _raw(item: RegistrationItem) -> dict[str, Any]:
    serialized: dict[str, Any] = item.serialize()
    return serialized


def _s(raw: Mapping[str, Any], key: str) -> str:
    return str(raw[key]["S"])


def _n(raw: Mapping[str, Any], key: str) -> float:
    return float(raw[key]["N"])


def _n_or_none(raw: Mapping[str, Any], key: str) -> int | None:
    value = raw.get(key)
    if value is None or "N" not in value:
        return None
    return int(float(value["N"]))


def _m(raw: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key) or {}
    result: dict[str, Any] = value.get("M", {})
    return result


def _deserialize_list(raw: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    if not raw:
        return []
    return [_deserialize_value(v) for v in raw.get("L", [])]


def _deserialize_value(raw: Mapping[str, Any]) -> Any:
    ((kind, value),) = raw.items()
    if kind == "M":
        return {k: _deserialize_value(v) for k, v in value.items()}
    if kind == "L":
        return [_deserialize_value(v) for v in value]
    if kind == "N":
        number = float(value)
        return int(number) if number.is_integer() else number
    if kind == "NULL":
        return None
    return value


def _trimmed(keys: Sequence[str]) -> list[str]:
    """The last `MAX_RECENT` distinct keys, oldest first."""
    result: list[str] = []
    for key in reversed(keys):
        if key not in result:
            result.append(key)
        if len(result) == MAX_RECENT:
            break
    return result[::-1]


def _code(exc: Exception) -> str:
    if isinstance(exc, PynamoDBException):
        return exc.cause_response_code or type(exc.cause).__name__
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    return type(exc).__name__
