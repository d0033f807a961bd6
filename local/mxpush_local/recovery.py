"""After a restart with a kept state: re-drive every push that was still pending.

The table says what was under way; the executions and invokes that were carrying it died with
the process. Per pending batch (`mxpush.store.models`):

- `open`, due now or overdue (or a call): handed to its sender at once;
- `open`, due later: its due entry is written again (idempotent: a crash may have come between
  the batch and its entry) and its slot's execution started again;
- `sending`: its sender was pushing when the process died. Nobody holds the claim any more, so
  it is given back (`open`) and sent again: it may reach the backend twice (at-least-once for
  pushes in flight at the crash; `in_flight` counts them);
- `retrying`: its retry execution is started again (its backoff starts over);
- `waiting` (delivered on a channel, an escalation due later: README, "Channels"): like `open`;
- a fan-out (one claim per channel): each channel still `sending` is given back and sent again.

A batch whose outcome was written is not pending: it is never sent again.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import boto3

from mxpush import wiring
from mxpush.delivery import DEFAULT_FIRST_RETRY_SECONDS, FIRST_RETRY_SECONDS
from mxpush.errors import SchedulerUnavailable
from mxpush.gateway import ensure_slot
from mxpush.store import BatchItem, SlotState
from mxpush.store.models import BATCH_PREFIX, OpenState, channel_ref
from mxpush.store.notify_side import due_entries_of
from mxpush.store.raw import deserialize_item

log = logging.getLogger("mxpush_local")


@dataclass
class Recovery:
    """What a restart re-drove."""

    sent_now: int = 0
    scheduled: int = 0
    in_flight: int = 0
    retrying: int = 0

    @property
    def total(self) -> int:
        return self.sent_now + self.scheduled + self.in_flight + self.retrying


def pending_batches(table_name: str, region: str) -> list[BatchItem]:
    """Every batch not yet finished: a Scan (local mode's table is small)."""
    client = boto3.client("dynamodb", region_name=region)
    found: list[BatchItem] = []
    for page in client.get_paginator("scan").paginate(
        TableName=table_name,
        ConsistentRead=True,
        FilterExpression=("begins_with(sk, :b) AND st IN (:open, :sending, :retrying, :waiting)"),
        ExpressionAttributeValues={
            ":b": {"S": BATCH_PREFIX},
            ":open": {"S": OpenState.OPEN},
            ":sending": {"S": OpenState.SENDING},
            ":retrying": {"S": OpenState.RETRYING},
            ":waiting": {"S": OpenState.WAITING},
        },
    ):
        found.extend(BatchItem.from_item(deserialize_item(raw)) for raw in page.get("Items", []))
    return found


def recover(*, now: float) -> Recovery:
    """Re-drive every pending batch; call once the handlers' environment is set."""
    store = wiring.store()
    scheduler = wiring.scheduler()
    report = Recovery()
    send: dict[str, list[dict[str, str]]] = defaultdict(list)
    slots: set[int] = set()
    for batch in pending_batches(store.table_name, wiring.settings().region):
        ref = {"registration": batch.rid, "batch": batch.sk}
        if batch.fan and batch.st == OpenState.SENDING:
            for index, backend in batch.fan.items():
                state = batch.channel_state(int(index))
                token = state.get("claim")
                if (
                    state.get("st") == OpenState.SENDING
                    and token
                    and store.reopen(batch.rid, batch.sk, token=str(token), channel=int(index))
                ):
                    report.in_flight += 1
                    send[backend].append(
                        {"registration": batch.rid, "batch": channel_ref(batch.sk, int(index))}
                    )
        elif batch.fan and (batch.immediate or batch.due <= now):
            report.sent_now += 1
            for entry in due_entries_of(batch):
                send[entry.backend].append(entry.to_event())
        elif batch.st == OpenState.SENDING:
            if batch.claim is None or not store.reopen(batch.rid, batch.sk, token=batch.claim):
                continue
            report.in_flight += 1
            send[batch.backend].append(ref)
        elif batch.st == OpenState.RETRYING:
            _restart_retry(batch)
            report.retrying += 1
        elif batch.immediate or batch.due <= now:
            report.sent_now += 1
            send[batch.backend].append(ref)
        else:
            store.put_due_entry(batch)
            slots.add(batch.due)
            report.scheduled += 1
    for slot in sorted(slots):
        # Its marker says `started`, but the execution is gone: let ensure_slot start it again.
        store.set_slot_state(slot, SlotState.UNSTARTED)
        ensure_slot(slot, store=store, scheduler=scheduler)
    for backend, refs in send.items():
        try:
            wiring.senders().invoke(backend, refs)
        except SchedulerUnavailable as exc:
            # Their slots' markers are past and not dispatched: the sweep re-drives them.
            log.warning("recovery could not invoke the %s sender: %s", backend, exc)
    return report


def _restart_retry(batch: BatchItem) -> None:
    payload: dict[str, Any] = {
        "registration": batch.rid,
        "batch": batch.sk,
        "backend": batch.backend,
        "backoff_seconds": FIRST_RETRY_SECONDS.get(batch.backend, DEFAULT_FIRST_RETRY_SECONDS),
    }
    try:
        wiring.scheduler().start_retry(f"retry-{batch.bid[:32]}-recovered", payload)
    except SchedulerUnavailable as exc:
        log.warning("recovery could not restart a retry: %s", exc)
