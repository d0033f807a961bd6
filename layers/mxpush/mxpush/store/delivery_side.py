"""The delivery path's reads and writes: a slot's due batches, a sender's claim on a batch,
its outcome, and what the sweep needs to find work whose execution was lost.

A sender claims a batch with a conditional write (`open` → `sending`, with a claim token and
time); only the token's holder writes the outcome. A claim older than `CLAIM_LEASE_SECONDS` (the
sender died: Lambda's timeout is far shorter) may be taken over.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from mxpush.model import Outcome, Registration, Status
from mxpush.retraction import MAX_RETRACT_ROOMS, MAX_RETRACT_SCAN
from mxpush.store.base import StoreBase
from mxpush.store.models import (
    BATCH_PREFIX,
    MAX_ROOMS,
    PENDING_STATES,
    REGISTRATION_SK,
    BatchItem,
    OpenState,
    due_partitions,
    slot_partition,
)
from mxpush.store.raw import ConditionFailed, deserialize_item

CLAIM_LEASE_SECONDS = 90
_BATCH_GET_LIMIT = 100


@dataclass(frozen=True)
class DueEntry:
    rid: str
    sk: str
    backend: str

    def to_event(self) -> dict[str, str]:
        return {"registration": self.rid, "batch": self.sk}


@dataclass(frozen=True)
class Claimed:
    registration: Registration
    batch: BatchItem
    token: str


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
            entries.append(DueEntry(rid, sk, backend))
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
                    entry = DueEntry(rid, sk, str(item.get("backend", "")))
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

    def claim_batch(self, rid: str, sk: str, *, now: float, retry: bool = False) -> ClaimResult:
        """Take a batch for sending. A first attempt takes an `open` batch; a retry a batch
        handed to it (`retrying`); either takes over a claim whose lease has run out.

        A read first: a batch cancelled, finished or held (a read cancels a quarter of the
        pushes of a busy chat) costs that one read, no write. Then the registration (its
        target), and one conditional write that takes the batch and returns it as taken - what
        is pushed is exactly what was claimed (a join after the read fails its own condition
        and opens a new batch)."""
        batch = self._get_batch(rid, sk)
        if batch is None:
            return Skipped("registration deleted")
        takeable = OpenState.RETRYING if retry else OpenState.OPEN
        if not batch.pending:
            return Skipped(batch.st)
        stale = batch.st == OpenState.SENDING and (batch.claimed or 0) < now - CLAIM_LEASE_SECONDS
        if batch.st != takeable and not stale:
            return Skipped(f"held by another attempt ({batch.st})")
        registration = self._get_registration(rid)
        if registration is None:
            return Skipped("registration deleted")
        token = secrets.token_hex(8)
        try:
            response = self._call(
                "UpdateItem",
                Key=_key(rid, sk),
                UpdateExpression=(
                    "SET st = :sending, claim = :token, claimed = :now, v = v + :one"
                ),
                ConditionExpression=("st = :takeable OR (st = :sending AND claimed < :stale)"),
                ExpressionAttributeValues={
                    ":sending": {"S": OpenState.SENDING},
                    ":token": {"S": token},
                    ":now": {"N": repr(now)},
                    ":one": {"N": "1"},
                    ":takeable": {"S": takeable},
                    ":stale": {"N": repr(now - CLAIM_LEASE_SECONDS)},
                },
                ReturnValues="ALL_NEW",
            )
        except ConditionFailed as failed:
            return _not_taken(failed.old_item)
        return Claimed(
            registration, BatchItem.from_item(deserialize_item(response["Attributes"])), token
        )

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
    ) -> bool:
        """Write the batch's outcome: its delivery-log record. Only the claim's holder may
        (`token`); `token=None` (retries exhausted, or its sender never ran) ends it whoever
        holds it, if it has not ended. False when it had ended already.

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
        update = "SET " + ", ".join(sets) + " REMOVE claim"
        names = {"#at": "at"}
        if ref:
            names["#ref"] = "ref"
        if token is None:
            condition = "st IN (:open, :sending, :retrying)"
            values[":open"] = {"S": OpenState.OPEN}
            values[":sending"] = {"S": OpenState.SENDING}
            values[":retrying"] = {"S": OpenState.RETRYING}
        else:
            condition = "claim = :token"
            values[":token"] = {"S": token}
        if outcome is Outcome.REJECTED:
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
                if batch.st not in (Outcome.DELIVERED.value, OpenState.SENDING):
                    continue
                found.append(batch)
                rooms.update(r.room_id for r in batch.refs if r.room_id)
                rooms.update(batch.rooms)
                if len(rooms) >= MAX_RETRACT_ROOMS or scanned >= MAX_RETRACT_SCAN:
                    return found
            start = response.get("LastEvaluatedKey")
        return found

    def hand_to_retry(self, rid: str, sk: str, *, token: str, reason: str) -> bool:
        """The attempt failed transiently: a retry execution takes over the batch."""
        return self._release(rid, sk, token, OpenState.RETRYING, reason)

    def reopen(self, rid: str, sk: str, *, token: str) -> bool:
        """Give the batch back (no retry could be scheduled): the next attempt takes it."""
        return self._release(rid, sk, token, OpenState.OPEN, None)

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


def _key(rid: str, sk: str) -> dict[str, Any]:
    return {"rid": {"S": rid}, "sk": {"S": sk}}
