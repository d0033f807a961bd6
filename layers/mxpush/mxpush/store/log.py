"""The delivery log: a pushkey's finished batches, newest first. A batch item becomes its log
record when its outcome is written, so the log needs no writes of its own (a test push aside)."""

from __future__ import annotations

from typing import Any

from mxpush.model import DeliveryRecord, Outcome
from mxpush.store.base import StoreBase
from mxpush.store.models import BATCH_PREFIX, BatchItem, batch_sk, ref_to_item
from mxpush.store.raw import deserialize_item

_FINAL = frozenset(o.value for o in Outcome)


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
    if batch.st not in _FINAL or batch.at is None:
        return None
    return DeliveryRecord(
        at=float(batch.at),
        outcome=Outcome(batch.st),
        events=batch.refs,
        reason=batch.reason,
        batch_id=batch.bid,
        total=batch.n if batch.refs else None,
        kind=batch.kind,
        rooms=batch.rooms if batch.kind else (),
    )
