"""The notify path: accept each device's notification durably, then answer Synapse.

Per device, in AWS calls (each Query/GetItem reads, each Put/Update writes):

- new delayed push: Query + 2 writes (batch, due entry); the first batch of its one-second
  slot also reads and writes the slot marker and calls StartExecution — once per slot;
- push joining a pending batch (coalesced): Query + 1 write;
- badge-only update that cancels: Query + 1 conditional write (no Step Functions call);
- badge-only update with nothing unread after a delivered push: + 1 small write (the retract
  item) and an asynchronous Lambda invoke of the backend's sender;
- call or delay 0: Query + 2 writes + an asynchronous Lambda invoke of the backend's sender;
- unknown or rejected pushkey, duplicate, nothing to cancel: the Query alone.

No push backend is ever called here. A storage failure raises, so the handler answers 5xx and
Synapse retries; a retry is recognised as a duplicate and never delivered twice. A scheduling
failure (StartExecution throttled, Lambda invoke refused) does not: the push is stored, and the
slot's next batch or the sweep starts what was not started.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Protocol

from mxpush import metrics
from mxpush.errors import SchedulerUnavailable, StoreUnavailable
from mxpush.events import EventSummary, summarize
from mxpush.ids import pushkey_ref, registration_id
from mxpush.implicit import ImplicitRegistrations
from mxpush.model import Outcome
from mxpush.notification import Device, Notification
from mxpush.store.models import BatchItem, OpenState
from mxpush.store.notify_side import (
    AcceptResult,
    Cancelled,
    CancelResult,
    Duplicate,
    IsRejected,
    Joined,
    NothingPending,
    Opened,
    SlotState,
    Unknown,
    due_entries_of,
)

log = logging.getLogger(__name__)


class Disposition(enum.StrEnum):
    SCHEDULED = "scheduled"
    COALESCED = "coalesced"
    DUPLICATE = "duplicate"
    CANCELLED = "cancelled"
    # A read with nothing to cancel that takes back delivered pushes.
    RETRACT = "retract"
    NOTHING_PENDING = "nothing_pending"
    UNKNOWN = "unknown"
    REJECTED = "rejected"


class NotifyStore(Protocol):
    def accept_event(
        self, rid: str, event: EventSummary, *, now: float, immediate: bool, default_delay: int
    ) -> AcceptResult: ...

    def cancel_pending(self, rid: str, *, unread: int, now: float) -> CancelResult: ...

    def create_implicit_registration(
        self, rid: str, *, pushkey: str, app_id: str, target: Mapping[str, Any], now: float
    ) -> None: ...

    def claim_slot_start(self, slot: int, first: BatchItem | None = None) -> str | None: ...

    def set_slot_state(self, slot: int, state: str) -> None: ...


class SlotClaims(Protocol):
    def claim_slot_start(self, slot: int, first: BatchItem | None = None) -> str | None: ...

    def set_slot_state(self, slot: int, state: str) -> None: ...


class SlotScheduler(Protocol):
    def start_slot(self, slot: int) -> None: ...


class Senders(Protocol):
    def invoke(self, backend: str, batches: list[dict[str, str]]) -> None: ...


def handle_notification(
    notification: Notification,
    *,
    store: NotifyStore,
    scheduler: SlotScheduler,
    senders: Senders,
    default_delay: int,
    now: float,
    implicit: ImplicitRegistrations | None = None,
) -> list[str]:
    """Accept every device of `notification`; return the pushkeys to report as rejected.

    `implicit`: which unknown pushkeys may be registered on the fly (stateless UnifiedPush).
    """
    rejected: list[str] = []
    for device in notification.devices:
        rid = registration_id(device.pushkey)
        stateless = implicit is not None and implicit.target_for(device) is not None
        if notification.is_badge_only:
            disposition = cancel_pending(
                rid,
                notification.unread,
                store=store,
                scheduler=scheduler,
                senders=senders,
                now=now,
            )
            if disposition is Disposition.UNKNOWN and stateless:
                disposition = Disposition.NOTHING_PENDING  # registered at its first event
        else:
            disposition = schedule_delivery(
                rid,
                summarize(notification, device),
                store=store,
                scheduler=scheduler,
                senders=senders,
                default_delay=default_delay,
                now=now,
                implicit_for=device if stateless else None,
                implicit=implicit,
            )
        metrics.notification(disposition.value)
        log.info(
            "notification accepted",
            extra={
                "pushkey": pushkey_ref(device.pushkey),
                "disposition": disposition.value,
                "badge_only": notification.is_badge_only,
            },
        )
        if disposition in (Disposition.UNKNOWN, Disposition.REJECTED):
            rejected.append(device.pushkey)
    return rejected


def schedule_delivery(
    rid: str,
    event: EventSummary,
    *,
    store: NotifyStore,
    scheduler: SlotScheduler,
    senders: Senders,
    default_delay: int,
    now: float,
    implicit_for: Device | None = None,
    implicit: ImplicitRegistrations | None = None,
) -> Disposition:
    """Store the event in a batch and make sure the batch's delivery is scheduled.

    `implicit_for`: the device whose unknown pushkey may be registered on the fly.
    """
    immediate = event.is_call

    def accept() -> AcceptResult:
        return store.accept_event(
            rid, event, now=now, immediate=immediate, default_delay=default_delay
        )

    result = accept()
    if isinstance(result, Unknown) and implicit_for is not None and implicit is not None:
        target = implicit.target_for(implicit_for)
        if target is not None:
            store.create_implicit_registration(
                rid,
                pushkey=implicit_for.pushkey,
                app_id=implicit_for.app_id,
                target=target,
                now=now,
            )
            result = accept()
    match result:
        case Unknown():
            return Disposition.UNKNOWN
        case IsRejected():
            return Disposition.REJECTED
        case Opened(batch):
            schedule_batch(batch, store=store, scheduler=scheduler, senders=senders, now=now)
            return Disposition.SCHEDULED
        case Joined():
            return Disposition.COALESCED
        case Duplicate(batch):
            if batch.st == OpenState.OPEN:
                # An earlier attempt may have failed after storing the batch: finish its work
                # (idempotent: a second due entry or sender invoke changes nothing).
                schedule_batch(batch, store=store, scheduler=scheduler, senders=senders, now=now)
            return Disposition.DUPLICATE
    raise AssertionError(f"unexpected accept result {result!r}")  # pragma: no cover


def schedule_batch(
    batch: BatchItem,
    *,
    store: NotifyStore,
    scheduler: SlotScheduler,
    senders: Senders,
    now: float,
) -> None:
    """Make sure someone will deliver `batch`: its sender at once (calls, delay 0, or a slot
    already past), else its slot's execution, started by the slot's first batch."""
    if batch.immediate or batch.due <= now:
        send_now(batch, store=store, scheduler=scheduler, senders=senders, now=now)
        return
    state = ensure_slot(batch.due, store=store, scheduler=scheduler, batch=batch)
    if state == SlotState.DISPATCHED or (state is not None and batch.due <= time.time()):
        # The slot's delivery step ran, or may be running and have read its due index before
        # this batch's entry was written (a slow request, a busy container): the slot has come,
        # so send it now. (Before the slot, the step cannot have read the index yet.) If the
        # slot's step took it too, the sender's claim lets only one push go out.
        send_now(batch, store=store, scheduler=scheduler, senders=senders, now=now)


def ensure_slot(
    slot: int, *, store: SlotClaims, scheduler: SlotScheduler, batch: BatchItem | None = None
) -> str | None:
    """Put `batch` in the slot and start the slot's execution unless it was started. Only the
    caller whose conditional write created (or revived) the slot marker calls StartExecution;
    the others get the marker's state."""
    state = store.claim_slot_start(slot, batch)
    if state is not None:
        return state
    try:
        scheduler.start_slot(slot)
    except SchedulerUnavailable as exc:
        # The batch is stored: the slot's next batch, or the sweep, starts the slot later.
        log.warning("slot execution not started", extra={"slot": slot, "reason": str(exc)})
        try:
            store.set_slot_state(slot, SlotState.UNSTARTED)
        except StoreUnavailable:
            log.warning("slot left marked started; the sweep re-drives it", extra={"slot": slot})
        return SlotState.UNSTARTED
    return None


def send_now(
    batch: BatchItem,
    *,
    store: NotifyStore,
    scheduler: SlotScheduler,
    senders: Senders,
    now: float,
) -> None:
    """Hand one batch to its sender (asynchronous Lambda invoke). If that fails, a slot
    execution delivers it: its own slot, or the next one if that is past."""
    by_backend: dict[str, list[dict[str, str]]] = {}
    for entry in due_entries_of(batch):
        by_backend.setdefault(entry.backend, []).append(entry.to_event())
    try:
        for backend, events in by_backend.items():
            senders.invoke(backend, events)
    except SchedulerUnavailable as exc:
        log.warning("sender not invoked; using a slot", extra={"reason": str(exc)})
        if batch.due <= now:
            batch = replace(batch, due=math.ceil(now) + 1)
        ensure_slot(batch.due, store=store, scheduler=scheduler, batch=batch)


def cancel_pending(
    rid: str,
    unread: int,
    *,
    store: NotifyStore,
    scheduler: SlotScheduler,
    senders: Senders,
    now: float,
) -> Disposition:
    """A badge-only update: the user read messages elsewhere. Cancel the pending push if the
    unread count dropped to 0 or below the count the pending push was queued with. One
    conditional write, no Step Functions call: the slot's sender finds the batch cancelled.

    With nothing unread left, pushes already delivered are taken back: the store opens a
    retract item (one more small write) when there is something to take back, and it goes to
    the backend's sender like a call (an asynchronous invoke, no Step Functions)."""
    result = store.cancel_pending(rid, unread=unread, now=now)
    match result:
        case Unknown():
            return Disposition.UNKNOWN
        case IsRejected():
            return Disposition.REJECTED
        case NothingPending(retract, escalations):
            for escalation in escalations:
                metrics.push(escalation.backend, Outcome.CANCELLED.value)
            if retract is None:
                return Disposition.CANCELLED if escalations else Disposition.NOTHING_PENDING
            send_now(retract, store=store, scheduler=scheduler, senders=senders, now=now)
            return Disposition.RETRACT
        case Cancelled(batch, retract, escalations):
            for escalation in escalations:
                metrics.push(escalation.backend, Outcome.CANCELLED.value)
            metrics.push(batch.backend, Outcome.CANCELLED.value)
            if retract is not None:
                send_now(retract, store=store, scheduler=scheduler, senders=senders, now=now)
            return Disposition.CANCELLED
    raise AssertionError(f"unexpected cancel result {result!r}")  # pragma: no cover
