"""The delivery log: a pushkey's finished batches, newest first. A batch item becomes its log
record when its outcome is written, so the log needs no writes of its own (a test push aside)."""

from __future__ import annotations

from typing import Any

from mxpush.model import ChannelHealth, DeliveryRecord, Outcome, iso_time
from mxpush.store.base import StoreBase
from mxpush.store.models import BATCH_PREFIX, BatchItem, OpenState, batch_sk, ref_to_item
from mxpush.store.raw import deserialize_item

_FINAL = frozenset(o.value for o in Outcome)
# Log items a registration's channel health looks back over.
HEALTH_SCAN = 50


class DeliveryLog(StoreBase):
    def list_deliveries(self, rid: str, *, now: float, limit: int = 100) -> list[DeliveryRecord]:
        """Finished batches, newest first (pending ones are not in the log yet)."""
        oldest = now - self.log_retention_seconds
        records: list[DeliveryRecord] = []
        start: dict[str, Any] | None = None
        while len(records) < limit:
            kwargs: dict[str, Any] = {
                "KeyConditionExpression": "rid = :rid AND begins_with(sk, :b)",
                "ExpressionAttributeValues": {":rid": {"S": rid}, ":b": {"S": BATCH_PREFIX}},
                "ScanIndexForward": False,
                "Limit": limit,
            }
            if start:
                kwargs["ExclusiveStartKey"] = start
            response = self._call("Query", **kwargs)
            for raw in response.get("Items", []):
                batch = BatchItem.from_item(deserialize_item(raw))
                record = _record(batch)
                # TTL deletes lazily (within days); hide what has expired already.
                if record is not None and record.at >= oldest:
                    records.append(record)
            start = response.get("LastEvaluatedKey")
            if not start:
                break
        records.sort(key=lambda r: r.at, reverse=True)
        return records[:limit]

    def channel_health(self, rid: str, *, now: float) -> dict[int, ChannelHealth]:
        """Each channel's latest success and failure among the pushkey's latest
        `HEALTH_SCAN` log items (one Query)."""
        oldest = now - self.log_retention_seconds
        response = self._call(
            "Query",
            KeyConditionExpression="rid = :rid AND begins_with(sk, :b)",
            ExpressionAttributeValues={":rid": {"S": rid}, ":b": {"S": BATCH_PREFIX}},
            ScanIndexForward=False,
            Limit=HEALTH_SCAN,
        )
        health: dict[int, ChannelHealth] = {}
        for raw in response.get("Items", []):
            batch = BatchItem.from_item(deserialize_item(raw))
            if batch.is_retract or batch.created < oldest:
                continue
            if batch.chs is None:
                if batch.st in _FINAL and batch.at is not None:
                    health[0] = health.get(0, ChannelHealth()).seen(
                        batch.st, float(batch.at), batch.reason
                    )
                continue
            for index, state in batch.chs.items():
                at = state.get("at")
                if at is not None:
                    channel = int(index)
                    health[channel] = health.get(channel, ChannelHealth()).seen(
                        str(state.get("st")), float(at), state.get("r")
                    )
        return health

    def log_delivery(self, rid: str, record: DeliveryRecord) -> None:
        """A log record without a batch behind it (a test push)."""
        bid = record.batch_id or f"x{int(record.at * 1000)}"
        item: dict[str, Any] = {
            "rid": rid,
            "sk": batch_sk(record.at, bid),
            "bid": bid,
            "st": record.outcome.value,
            "n": len(record.events),
            "created": record.at,
            "at": record.at,
            "v": 1,
            "refs": [ref_to_item(e) for e in record.events],
            "expires_at": int(record.at) + self.log_retention_seconds,
        }
        if record.reason:
            item["reason"] = record.reason
        self._put(item)


def _record(batch: BatchItem) -> DeliveryRecord | None:
    waiting = batch.st == OpenState.WAITING
    if (batch.st not in _FINAL and not waiting) or batch.at is None:
        return None
    return DeliveryRecord(
        at=float(batch.at),
        # Waiting for an escalation: delivered already (the escalation shows in `channels`).
        outcome=Outcome.DELIVERED if waiting else Outcome(batch.st),
        events=batch.refs,
        reason=batch.reason,
        batch_id=batch.bid,
        total=batch.n if batch.refs else None,
        kind=batch.kind,
        rooms=batch.rooms if batch.kind else (),
        channels=_channels(batch),
    )


def _channels(batch: BatchItem) -> tuple[dict[str, Any], ...]:
    """Each channel's outcome, in channel order; one still waiting for its escalation time
    says `waiting` (and when it is due)."""
    result = []
    for index, state in sorted((batch.chs or {}).items(), key=lambda kv: int(kv[0])):
        entry: dict[str, Any] = {
            "channel": int(index),
            "backend": state.get("b", ""),
            "outcome": state.get("st", ""),
        }
        if state.get("at") is not None:
            entry["time"] = iso_time(float(state["at"]))
        if state.get("r"):
            entry["reason"] = state["r"]
        result.append(entry)
    if batch.st == OpenState.WAITING:
        result.append(
            {
                "channel": batch.ch,
                "backend": batch.backend,
                "outcome": OpenState.WAITING,
                "due": iso_time(float(batch.due)),
            }
        )
    return tuple(result)
