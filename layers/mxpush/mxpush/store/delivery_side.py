"""The delivery path's reads and writes: a slot's due batches, a sender's claim on a batch,
its outcome, and what the sweep needs to find work whose execution was lost.

A sender claims a batch with a conditional write (`open` → `sending`, with a claim token and
time); only the token's holder writes the outcome. A claim older than `CLAIM_LEASE_SECONDS` (the
sender died: Lambda's timeout is far shorter) may be taken over.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mxpush.model import Outcome, Registration, Status
from mxpush.retraction import MAX_RETRACT_ROOMS, MAX_RETRACT_SCAN
from mxpush.store.base import StoreBase
from mxpush.store.models import (
    BATCH_PREFIX,
    CHANNEL_PENDING,
    MAX_ROOMS,
    PENDING_STATES,
    REGISTRATION_SK,
    BatchItem,
    DueEntry,
    OpenState,
    due_partitions,
    slot_partition,
)
from mxpush.store.raw import ConditionFailed, deserialize_item, serialize

CLAIM_LEASE_SECONDS = 90
# What a retraction takes back: batches delivered (`waiting`: delivered, an escalation due
# later) or on their way.
SHOWN_STATES = frozenset({Outcome.DELIVERED.value, OpenState.SENDING, OpenState.WAITING})
_BATCH_GET_LIMIT = 100


@dataclass(frozen=True)
class Claimed:
    registration: Registration
    batch: BatchItem
    token: str
    # A per-channel claim (fan-out, or a retraction on several channels): the channel. None:
    # the batch itself, on its current channel (`batch.ch`).
    channel: int | None = None

    @property
    def index(self) -> int:
        """The channel this claim pushes on."""
        return self.batch.ch if self.channel is None else self.channel


@dataclass(frozen=True)
class Skipped:
    """The batch is not to be sent by this caller (cancelled, finished, held by another
    sender, or the registration is gone)."""

    reason: str


ClaimResult = Claimed | Skipped


@dataclass(frozen=True)
class SlotMarker:
    slot: int
    st: str


class DeliverySide(StoreBase):
    def due_entries(self, slot: int) -> list[DueEntry]:
        """Every batch due in `slot`: the one its marker carries (the slot's first), and one
        strongly consistent Query per due-index shard for the others."""
        entries = []
        marker = self._get_raw(slot_partition(slot), str(slot))
        if marker and marker.get("first"):
            rid, sk, backend = str(marker["first"]).split("|", 2)
            entries.append(DueEntry(rid, sk, backend, slot))
        for partition in due_partitions(slot):
            start: dict[str, Any] | None = None
            while True:
                kwargs: dict[str, Any] = {
                    "KeyConditionExpression": "rid = :p",
                    "ExpressionAttributeValues": {":p": {"S": partition}},
                    "ConsistentRead": True,
                }
                if start:
                    kwargs["ExclusiveStartKey"] = start
                response = self._call("Query", **kwargs)
                for raw in response.get("Items", []):
                    item = deserialize_item(raw)
                    rid, _, sk = str(item["sk"]).partition("|")
                    entry = DueEntry(rid, sk, str(item.get("backend", "")), slot)
                    if entry not in entries:
                        entries.append(entry)
                start = response.get("LastEvaluatedKey")
                if not start:
                    break
        return entries

    def slot_markers(self, first_slot: int, last_slot: int) -> list[SlotMarker]:
        """The slot markers between two slots (inclusive), one Query per minute."""
        markers = []
        for minute in range(first_slot // 60, last_slot // 60 + 1):
            response = self._call(
                "Query",
                KeyConditionExpression="rid = :p",
                ExpressionAttributeValues={":p": {"S": slot_partition(minute * 60)}},
                ConsistentRead=True,
            )
            for raw in response.get("Items", []):
                item = deserialize_item(raw)
                slot = int(item["sk"])
                if first_slot <= slot <= last_slot:
                    markers.append(SlotMarker(slot, str(item.get("st", ""))))
        return markers

    def batches(self, keys: Iterable[tuple[str, str]]) -> list[BatchItem]:
        """Batch items by key (BatchGetItem), for the sweep's check of a dispatched slot."""
        wanted = list(dict.fromkeys(keys))
        found: list[BatchItem] = []
        for start in range(0, len(wanted), _BATCH_GET_LIMIT):
            request: dict[str, Any] = {
                self.table_name: {
                    "Keys": [
                        {"rid": {"S": rid}, "sk": {"S": sk}}
                        for rid, sk in wanted[start : start + _BATCH_GET_LIMIT]
                    ],
                    "ConsistentRead": True,
                }
            }
            for _ in range(5):
                response = self._call_batch("BatchGetItem", RequestItems=request)
                for raw in response.get("Responses", {}).get(self.table_name, []):
                    found.append(BatchItem.from_item(deserialize_item(raw)))
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
        return found

    def claim_batch(
        self,
        rid: str,
        sk: str,
        *,
        now: float,
        retry: bool = False,
        channel: int | None = None,
        backend: str | None = None,
        on_channel: int | None = None,
    ) -> ClaimResult:
        """Take a batch for sending. A first attempt takes an `open` batch (or one `waiting`
        for its escalation); a retry a batch handed to it (`retrying`); either takes over a
        claim whose lease has run out. `backend`: the sender's, which must be the batch's
        current channel's (a stale due entry of a batch that moved to another channel is
        skipped). `channel`: claim that channel of a fan-out only (`claim_channel`).
        `on_channel`: only while the batch is on that channel (a retry of a fallback chain's).

        A read first: a batch cancelled, finished or held (a read cancels a quarter of the
        pushes of a busy chat), or on another channel, costs that one read, no write. Then the
        registration (its target), and one conditional write that takes the batch and returns it
        as taken - what is pushed is exactly what was claimed (a join after the read fails its
        own condition and opens a new batch)."""
        batch = self._get_batch(rid, sk)
        if batch is None:
            return Skipped("registration deleted")
        not_now = _not_takeable(
            batch, now=now, retry=retry, channel=channel, backend=backend, on_channel=on_channel
        )
        if not_now is not None:
            return not_now
        registration = self._get_registration(rid)
        if registration is None:
            return Skipped("registration deleted")
        if channel is not None:
            return self._claim_channel(registration, sk, channel, now=now, retry=retry)
        token = secrets.token_hex(8)
        values: dict[str, Any] = {
            ":sending": {"S": OpenState.SENDING},
            ":token": {"S": token},
            ":now": {"N": repr(now)},
            ":one": {"N": "1"},
            ":stale": {"N": repr(now - CLAIM_LEASE_SECONDS)},
        }
        if retry:
            takeable = "st = :retrying"
            values[":retrying"] = {"S": OpenState.RETRYING}
        else:
            takeable = "st IN (:open, :waiting)"
            values[":open"] = {"S": OpenState.OPEN}
            values[":waiting"] = {"S": OpenState.WAITING}
        condition = f"({takeable} OR (st = :sending AND claimed < :stale))"
        if backend is not None and registration.multi_channel:
            condition += " AND backend = :backend"
            values[":backend"] = {"S": backend}
        if on_channel is not None:
            condition += " AND " + _on_channel(on_channel, values)
        try:
            response = self._call(
                "UpdateItem",
                Key=_key(rid, sk),
                UpdateExpression=(
                    "SET st = :sending, claim = :token, claimed = :now, v = v + :one"
                ),
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ConditionFailed as failed:
            return _not_taken(failed.old_item)
        return Claimed(
            registration, BatchItem.from_item(deserialize_item(response["Attributes"])), token
        )

    def _claim_channel(
        self, registration: Registration, sk: str, channel: int, *, now: float, retry: bool
    ) -> ClaimResult:
        """Claim one channel of a fan-out batch (or of a retraction on several channels):
        `chs.<i>` takes the claim, and the batch becomes `sending` if it was `open` (a read
        can no longer cancel it: some channel is pushing)."""
        token = secrets.token_hex(8)
        path = _channel_path(channel)
        takeable = OpenState.RETRYING if retry else OpenState.OPEN
        values: dict[str, Any] = {
            ":sending": {"S": OpenState.SENDING},
            ":open": {"S": OpenState.OPEN},
            ":takeable": {"S": takeable},
            ":now": {"N": repr(now)},
            ":one": {"N": "1"},
            ":stale": {"N": repr(now - CLAIM_LEASE_SECONDS)},
            ":chan": {
                "M": {
                    "st": {"S": OpenState.SENDING},
                    "claim": {"S": token},
                    "claimed": {"N": repr(now)},
                }
            },
        }
        first_attempt = "" if retry else "attribute_not_exists(#chs.#c) OR "
        try:
            response = self._call(
                "UpdateItem",
                Key=_key(registration.rid, sk),
                UpdateExpression=(
                    "SET st = :sending, claimed = :now, #chs.#c = :chan, v = v + :one"
                ),
                ConditionExpression=(
                    "st IN (:open, :sending) AND attribute_exists(#chs) AND ("
                    + first_attempt
                    + "#chs.#c.st = :takeable"
                    + " OR (#chs.#c.st = :sending AND #chs.#c.claimed < :stale))"
                ),
                ExpressionAttributeNames=path,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ConditionFailed as failed:
            return _channel_not_taken(failed.old_item, channel)
        batch = BatchItem.from_item(deserialize_item(response["Attributes"]))
        return Claimed(registration, batch, token, channel)

    def finish_batch(
        self,
        rid: str,
        sk: str,
        *,
        token: str | None,
        outcome: Outcome,
        reason: str | None,
        now: float,
        ref: str | None = None,
        rooms: Sequence[str] | None = None,
        channel: int | None = None,
        record: Mapping[str, Any] | None = None,
        delivered_at: float | None = None,
        reject: bool = True,
    ) -> bool:
        """Write the batch's outcome: its delivery-log record. Only the claim's holder may
        (`token`); `token=None` (retries exhausted, or its sender never ran) ends it whoever
        holds it, if it has not ended (and, with `channel`, only if it is still on that
        channel). False when it had ended already.

        Several channels: `record` is channel `channel`'s own outcome (`chs.<i>`),
        `delivered_at` when a channel first delivered the batch; `reject=False`: the outcome
        `rejected` says no more than that (the channel's rejection is written apart).

        `ref`: the backend's reference to the delivered message (kept for a retraction);
        `rooms`: the rooms a retraction covered (its log record). Same write, no extra cost."""
        values: dict[str, Any] = {
            ":out": {"S": outcome.value},
            ":at": {"N": repr(now)},
        }
        sets = ["st = :out", "#at = :at"]
        if reason:
            sets.append("reason = :why")
            values[":why"] = {"S": reason[:500]}
        if ref:
            sets.append("#ref = :ref")
            values[":ref"] = {"S": ref[:200]}
        if rooms is not None:
            sets.append("rooms = :rooms")
            values[":rooms"] = {"L": [{"S": r} for r in list(rooms)[:MAX_ROOMS]]}
        names = {"#at": "at"}
        if record is not None and channel is not None:
            sets.append("#chs.#c = :rec")
            values[":rec"] = serialize(dict(record))
            names.update(_channel_path(channel))
        if delivered_at is not None:
            sets.append("dat = if_not_exists(dat, :dat)")
            values[":dat"] = {"N": repr(delivered_at)}
        update = "SET " + ", ".join(sets) + " REMOVE claim"
        if ref:
            names["#ref"] = "ref"
        if token is None:
            condition = "st IN (:open, :sending, :retrying, :waiting)"
            values[":open"] = {"S": OpenState.OPEN}
            values[":sending"] = {"S": OpenState.SENDING}
            values[":retrying"] = {"S": OpenState.RETRYING}
            values[":waiting"] = {"S": OpenState.WAITING}
            if channel is not None:
                condition += " AND " + _on_channel(channel, values)
        else:
            condition = "claim = :token"
            values[":token"] = {"S": token}
        if outcome is Outcome.REJECTED and reject:
            # First: once the log says `rejected`, the registration says so too (the backend's
            # answer stands, whoever writes the batch's outcome).
            self.mark_rejected(rid, reason=reason or "rejected by the backend", now=now)
        try:
            self._call(
                "UpdateItem",
                Key=_key(rid, sk),
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ConditionFailed:
            return False
        return True

    def read_batch(self, rid: str, sk: str) -> tuple[Registration | None, BatchItem | None]:
        """A registration and one of its batches (two GetItems: the record function's look
        before it ends a channel)."""
        registration = self._get_registration(rid)
        if registration is None:
            return None, None
        return registration, self._get_batch(rid, sk)

    def move_batch(
        self,
        rid: str,
        sk: str,
        *,
        token: str | None,
        from_channel: int,
        record: Mapping[str, Any],
        to_channel: int,
        backend: str,
        due: int,
        waiting: bool,
        now: float,
        delivered_at: float | None = None,
        ref: str | None = None,
    ) -> BatchItem | None:
        """Hand the batch from one channel to the next (a fallback, `open` for its sender at
        `due`), or, once delivered, to an escalation channel (`waiting` until `due`, when a
        read has not ended it): one conditional write, the channel's outcome in the same.
        Returns the batch as moved, or None if the claim was lost (or, `token=None`, it was no
        longer on `from_channel`)."""
        values: dict[str, Any] = {
            ":st": {"S": OpenState.WAITING if waiting else OpenState.OPEN},
            ":ch": {"N": str(to_channel)},
            ":backend": {"S": backend},
            ":due": {"N": str(due)},
            ":now": {"N": repr(now)},
            ":one": {"N": "1"},
            ":rec": serialize(dict(record)),
        }
        sets = [
            "st = :st",
            "ch = :ch",
            "backend = :backend",
            "due = :due",
            "cht = :now",
            "v = v + :one",
            "#chs.#c = :rec",
        ]
        names = _channel_path(from_channel)
        if delivered_at is not None:
            # The log shows the delivery at once (`waiting` reads as delivered).
            sets += ["dat = if_not_exists(dat, :dat)", "#at = :dat"]
            values[":dat"] = {"N": repr(delivered_at)}
            names["#at"] = "at"
        if ref:
            sets.append("#ref = :ref")
            values[":ref"] = {"S": ref[:200]}
            names["#ref"] = "ref"
        if token is None:
            values[":sending"] = {"S": OpenState.SENDING}
            values[":retrying"] = {"S": OpenState.RETRYING}
            values[":open"] = {"S": OpenState.OPEN}
            condition = "st IN (:open, :sending, :retrying) AND " + _on_channel(
                from_channel, values
            )
        else:
            condition = "claim = :token"
            values[":token"] = {"S": token}
        try:
            response = self._call(
                "UpdateItem",
                Key=_key(rid, sk),
                UpdateExpression="SET " + ", ".join(sets) + " REMOVE claim",
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ConditionFailed:
            return None
        return BatchItem.from_item(deserialize_item(response["Attributes"]))

    def finish_channel(
        self,
        rid: str,
        sk: str,
        channel: int,
        *,
        token: str | None,
        record: Mapping[str, Any],
        now: float,
    ) -> BatchItem | None:
        """Write one fan-out channel's outcome (`chs.<i>`); the holder of its claim only, or
        (`token=None`) whoever, if the channel has not ended. Returns the batch as written (the
        caller ends it when every channel has), or None when the condition failed."""
        values: dict[str, Any] = {
            ":rec": serialize(dict(record)),
            ":now": {"N": repr(now)},
        }
        names = _channel_path(channel)
        if token is None:
            values[":open"] = {"S": OpenState.OPEN}
            values[":sending"] = {"S": OpenState.SENDING}
            values[":retrying"] = {"S": OpenState.RETRYING}
            condition = (
                "st IN (:open, :sending) AND attribute_exists(#chs) AND "
                "(attribute_not_exists(#chs.#c) OR #chs.#c.st IN (:open, :sending, :retrying))"
            )
        else:
            values[":token"] = {"S": token}
            condition = "#chs.#c.claim = :token"
        try:
            response = self._call(
                "UpdateItem",
                Key=_key(rid, sk),
                UpdateExpression="SET #chs.#c = :rec, claimed = :now",
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ConditionFailed:
            return None
        return BatchItem.from_item(deserialize_item(response["Attributes"]))

    def end_fan_out(
        self,
        rid: str,
        sk: str,
        *,
        outcome: Outcome,
        reason: str | None,
        now: float,
        rooms: Sequence[str] | None = None,
        delivered_at: float | None = None,
    ) -> bool:
        """Every channel of a fan-out has ended: the batch's own outcome (its log record)."""
        values: dict[str, Any] = {
            ":out": {"S": outcome.value},
            ":at": {"N": repr(now)},
            ":open": {"S": OpenState.OPEN},
            ":sending": {"S": OpenState.SENDING},
        }
        sets = ["st = :out", "#at = :at"]
        if reason:
            sets.append("reason = :why")
            values[":why"] = {"S": reason[:500]}
        if rooms is not None:
            sets.append("rooms = :rooms")
            values[":rooms"] = {"L": [{"S": r} for r in list(rooms)[:MAX_ROOMS]]}
        if delivered_at is not None:
            sets.append("dat = :dat")
            values[":dat"] = {"N": repr(delivered_at)}
        try:
            self._call(
                "UpdateItem",
                Key=_key(rid, sk),
                UpdateExpression="SET " + ", ".join(sets) + " REMOVE claim",
                ConditionExpression="st IN (:open, :sending)",
                ExpressionAttributeNames={"#at": "at"},
                ExpressionAttributeValues=values,
            )
        except ConditionFailed:
            return False
        return True

    def reject_channel(self, rid: str, channel: int, *, reason: str, now: float) -> bool:
        """A backend rejected channel `channel` of a registration of several: it is skipped
        from then on. Marks the registration itself `rejected` (what Synapse is told) only when
        every channel is. Returns whether it did. Two or three writes, once per rejection."""
        registration = self._get_registration(rid)
        if registration is None:
            return False
        if not registration.multi_channel:
            self.mark_rejected(rid, reason=reason, now=now)
            return True
        key = _key(rid, REGISTRATION_SK)
        try:
            self._call(
                "UpdateItem",
                Key=key,
                UpdateExpression="SET chrej = if_not_exists(chrej, :empty)",
                ConditionExpression="attribute_exists(rid)",
                ExpressionAttributeValues={":empty": {"M": {}}},
            )
            response = self._call(
                "UpdateItem",
                Key=key,
                UpdateExpression="SET chrej.#c = if_not_exists(chrej.#c, :rej)",
                ConditionExpression="attribute_exists(rid)",
                ExpressionAttributeNames={"#c": str(channel)},
                ExpressionAttributeValues={
                    ":rej": {"M": {"why": {"S": reason[:500]}, "at": {"N": repr(now)}}}
                },
                ReturnValues="ALL_NEW",
            )
        except ConditionFailed:
            return False  # deleted meanwhile
        rejected = deserialize_item(response.get("Attributes")).get("chrej") or {}
        if all(str(index) in rejected for index in range(len(registration.channels))):
            self.mark_rejected(rid, reason=f"every channel rejected (last: {reason})", now=now)
            return True
        return False

    def reject_backend_channels(self, rid: str, backend: str, *, reason: str, now: float) -> bool:
        """Reject every channel of `backend` (an email unsubscribe: the person asked for no more
        mail, not for no more pushes). A registration of one channel is rejected as before; one
        of several only when no other channel is left. Returns whether the registration is."""
        registration = self._get_registration(rid)
        if registration is None:
            return False
        if not registration.multi_channel:
            if registration.backend == backend:
                self.mark_rejected(rid, reason=reason, now=now)
                return True
            return False
        rejected = False
        for index, channel in enumerate(registration.channels):
            if channel.backend == backend:
                rejected = self.reject_channel(rid, index, reason=reason, now=now)
        return rejected

    def delivered_before(self, rid: str, sk: str, *, now: float) -> list[BatchItem]:
        """The pushes a retraction at `sk` takes back: the pushkey's batches delivered (or being
        sent: `sending`) before it, newest first, back to the previous retraction that did not
        fail (one that is still pending covers them too), at most `MAX_RETRACT_SCAN` items and
        `MAX_RETRACT_ROOMS` rooms, within the log's retention. One or two Queries."""
        oldest = now - self.log_retention_seconds
        found: list[BatchItem] = []
        rooms: set[str] = set()
        scanned = 0
        start: dict[str, Any] | None = _key(rid, sk)
        while start and scanned < MAX_RETRACT_SCAN:
            response = self._call(
                "Query",
                KeyConditionExpression="rid = :rid AND begins_with(sk, :b)",
                ExpressionAttributeValues={":rid": {"S": rid}, ":b": {"S": BATCH_PREFIX}},
                ScanIndexForward=False,
                ExclusiveStartKey=start,
                Limit=100,
                ConsistentRead=True,
            )
            for raw in response.get("Items", []):
                scanned += 1
                batch = BatchItem.from_item(deserialize_item(raw))
                if batch.created < oldest:
                    return found
                if batch.is_retract:
                    if batch.st in (Outcome.FAILED.value, Outcome.CANCELLED.value):
                        continue
                    return found
                if batch.st not in SHOWN_STATES:
                    continue
                found.append(batch)
                rooms.update(r.room_id for r in batch.refs if r.room_id)
                rooms.update(batch.rooms)
                if len(rooms) >= MAX_RETRACT_ROOMS or scanned >= MAX_RETRACT_SCAN:
                    return found
            start = response.get("LastEvaluatedKey")
        return found

    def hand_to_retry(
        self, rid: str, sk: str, *, token: str, reason: str, channel: int | None = None
    ) -> bool:
        """The attempt failed transiently: a retry execution takes over the batch (or, with
        `channel`, that channel of a fan-out)."""
        if channel is not None:
            return self._release_channel(rid, sk, channel, token, OpenState.RETRYING, reason)
        return self._release(rid, sk, token, OpenState.RETRYING, reason)

    def reopen(self, rid: str, sk: str, *, token: str, channel: int | None = None) -> bool:
        """Give the batch back (no retry could be scheduled): the next attempt takes it."""
        if channel is not None:
            return self._release_channel(rid, sk, channel, token, OpenState.OPEN, None)
        return self._release(rid, sk, token, OpenState.OPEN, None)

    def _release_channel(  # noqa: PLR0917 - _release's, and the channel
        self, rid: str, sk: str, channel: int, token: str, state: str, reason: str | None
    ) -> bool:
        values: dict[str, Any] = {":st": {"S": state}, ":token": {"S": token}}
        update = "SET #chs.#c.st = :st REMOVE #chs.#c.claim"
        if reason:
            update = "SET #chs.#c.st = :st, #chs.#c.r = :why REMOVE #chs.#c.claim"
            values[":why"] = {"S": reason[:500]}
        try:
            self._call(
                "UpdateItem",
                Key=_key(rid, sk),
                UpdateExpression=update,
                ConditionExpression="#chs.#c.claim = :token",
                ExpressionAttributeNames=_channel_path(channel),
                ExpressionAttributeValues=values,
            )
        except ConditionFailed:
            return False
        return True

    def mark_rejected(self, rid: str, *, reason: str, now: float) -> None:
        try:
            self._call(
                "UpdateItem",
                Key=_key(rid, REGISTRATION_SK),
                UpdateExpression="SET #s = :rejected, status_reason = :why, status_at = :now",
                ConditionExpression="attribute_exists(rid)",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":rejected": {"S": Status.REJECTED.value},
                    ":why": {"S": reason[:500]},
                    ":now": {"N": repr(now)},
                },
            )
        except ConditionFailed:
            return  # deleted meanwhile

    def _release(self, rid: str, sk: str, token: str, state: str, reason: str | None) -> bool:
        values: dict[str, Any] = {":st": {"S": state}, ":token": {"S": token}}
        update = "SET st = :st REMOVE claim"
        if reason:
            update = "SET st = :st, reason = :why REMOVE claim"
            values[":why"] = {"S": reason[:500]}
        try:
            self._call(
                "UpdateItem",
                Key=_key(rid, sk),
                UpdateExpression=update,
                ConditionExpression="claim = :token",
                ExpressionAttributeValues=values,
            )
        except ConditionFailed:
            return False
        return True


def _not_taken(old: Any) -> Skipped:
    """Why a claim's condition failed, from the batch as it was."""
    if not old:
        return Skipped("registration deleted")
    state = str(old.get("st", {}).get("S", ""))
    if state not in PENDING_STATES:
        return Skipped(state)
    return Skipped(f"held by another attempt ({state})")


def _not_takeable(
    batch: BatchItem,
    *,
    now: float,
    retry: bool,
    channel: int | None,
    backend: str | None,
    on_channel: int | None,
) -> Skipped | None:
    """Why this caller cannot claim `batch` as read (None: try the conditional write)."""
    stale_before = now - CLAIM_LEASE_SECONDS
    if channel is not None:
        if batch.st not in (OpenState.OPEN, OpenState.SENDING):
            return Skipped(batch.st)
        state = batch.channel_state(channel)
        chan_state = state.get("st")
        takeable = chan_state == OpenState.RETRYING if retry else chan_state in (None, "open")
        stale = chan_state == OpenState.SENDING and (state.get("claimed") or 0) < stale_before
        if not (takeable or stale):
            return Skipped(f"channel {channel}: {chan_state}")
        return None
    if not batch.pending:
        return Skipped(batch.st)
    takeable_states = (OpenState.RETRYING,) if retry else (OpenState.OPEN, OpenState.WAITING)
    stale = batch.st == OpenState.SENDING and (batch.claimed or 0) < stale_before
    if batch.st not in takeable_states and not stale:
        return Skipped(f"held by another attempt ({batch.st})")
    if backend is not None and batch.chs is not None and batch.backend != backend:
        return Skipped(f"on another channel ({batch.backend})")
    if on_channel is not None and batch.ch != on_channel:
        return Skipped(f"moved on to channel {batch.ch}")
    return None


def _channel_not_taken(old: Any, channel: int) -> Skipped:
    if not old:
        return Skipped("registration deleted")
    state = str(old.get("st", {}).get("S", ""))
    if state not in (OpenState.OPEN, OpenState.SENDING):
        return Skipped(state)
    chan = old.get("chs", {}).get("M", {}).get(str(channel), {}).get("M", {})
    chan_state = str(chan.get("st", {}).get("S", ""))
    if chan_state in CHANNEL_PENDING:
        return Skipped(f"channel {channel} held by another attempt ({chan_state})")
    return Skipped(f"channel {channel}: {chan_state or 'not a fan-out'}")


def _channel_path(channel: int) -> dict[str, str]:
    return {"#chs": "chs", "#c": str(channel)}


def _on_channel(channel: int, values: dict[str, Any]) -> str:
    """A condition: the batch is on channel `channel` (an item written before channels is on
    channel 0)."""
    values[":onch"] = {"N": str(channel)}
    if channel == 0:
        return "(ch = :onch OR attribute_not_exists(ch))"
    return "ch = :onch"


def _key(rid: str, sk: str) -> dict[str, Any]:
    return {"rid": {"S": rid}, "sk": {"S": sk}}
