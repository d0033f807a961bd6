"""The notify path: accept each device's notification durably, then answer Synapse.

Per device, in AWS calls:

- new delayed push: 1 UpdateItem (opens the batch) + 1 StartExecution;
- push joining a pending batch (coalesced): 1 UpdateItem;
- badge-only update that cancels: 1 UpdateItem + 1 StopExecution;
- unknown or rejected pushkey, duplicate: 1 UpdateItem (its condition fails).

No push backend is ever called here. A storage or scheduling failure raises, so the handler
answers 5xx and Synapse retries; a retry is recognised as a duplicate and never delivered twice.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from mxpush.errors import SchedulerUnavailable
from mxpush.events import EventSummary, summarize
from mxpush.ids import batch_id, pushkey_ref, registration_id
from mxpush.implicit import ImplicitRegistrations
from mxpush.notification import Device, Notification
from mxpush.store import (
    AcceptResult,
    Cancelled,
    CancelResult,
    Duplicate,
    IsRejected,
    Joined,
    NewBatch,
    NothingPending,
    Unknown,
)

log = logging.getLogger(__name__)

# A pending batch whose execution should have finished long ago (delay + retries): its
# execution was lost, so the next event gives it a new one rather than join it forever.
STALE_BATCH_GRACE_SECONDS = 15 * 60


class Disposition(enum.StrEnum):
    SCHEDULED = "scheduled"
    COALESCED = "coalesced"
    DUPLICATE = "duplicate"
    CANCELLED = "cancelled"
    NOTHING_PENDING = "nothing_pending"
    UNKNOWN = "unknown"
    REJECTED = "rejected"


class NotifyStore(Protocol):
    def accept_event(
        self, rid: str, event: EventSummary, *, now: float, immediate: bool
    ) -> AcceptResult: ...

    def cancel_pending(self, rid: str, *, unread: int, now: float) -> CancelResult: ...

    def create_implicit_registration(
        self, rid: str, *, pushkey: str, app_id: str, target: Mapping[str, Any], now: float
    ) -> None: ...

    def restart_stale_batch(
        self, rid: str, old_batch_id: str, new_batch_id: str, now: float
    ) -> bool: ...


class Scheduler(Protocol):
    def start(self, name: str, payload: Mapping[str, Any]) -> None: ...

    def stop(self, name: str, *, cause: str) -> None: ...


def handle_notification(
    notification: Notification,
    *,
    store: NotifyStore,
    scheduler: Scheduler,
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
                rid, notification.unread, store=store, scheduler=scheduler, now=now
            )
            if disposition is Disposition.UNKNOWN and stateless:
                disposition = Disposition.NOTHING_PENDING  # registered at its first event
        else:
            disposition = schedule_delivery(
                rid,
                summarize(notification, device),
                store=store,
                scheduler=scheduler,
                default_delay=default_delay,
                now=now,
                implicit_for=device if stateless else None,
                implicit=implicit,
            )
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
    scheduler: Scheduler,
    default_delay: int,
    now: float,
    implicit_for: Device | None = None,
    implicit: ImplicitRegistrations | None = None,
) -> Disposition:
    """Store the event in its registration's pending batch and make sure a delivery is scheduled.

    `implicit_for`: the device whose unknown pushkey may be registered on the fly.
    """
    immediate = event.is_call
    result = store.accept_event(rid, event, now=now, immediate=immediate)
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
            result = store.accept_event(rid, event, now=now, immediate=immediate)
    match result:
        case Unknown():
            return Disposition.UNKNOWN
        case IsRejected():
            return Disposition.REJECTED
        case NewBatch(bid, backend, delay, flush):
            effective = 0 if immediate else _delay(delay, default_delay)
            scheduler.start(bid, execution_input(rid, bid, backend, effective, flush=flush))
            return Disposition.SCHEDULED
        case Joined(bid, backend, delay, created):
            effective = _delay(delay, default_delay)
            if created + effective + STALE_BATCH_GRACE_SECONDS < now:
                _restart_stale(
                    rid,
                    bid,
                    event,
                    backend=backend,
                    delay=effective,
                    store=store,
                    scheduler=scheduler,
                    now=now,
                )
            return Disposition.COALESCED
        case Duplicate(bid, backend, delay, was_immediate):
            if bid is not None:
                # This event opened the batch; if our earlier answer was a 5xx because
                # StartExecution failed, this retry is what schedules it.
                effective = 0 if was_immediate else _delay(delay, default_delay)
                scheduler.start(bid, execution_input(rid, bid, backend, effective, flush=False))
            return Disposition.DUPLICATE
    raise AssertionError(f"unexpected accept result {result!r}")  # pragma: no cover


def cancel_pending(
    rid: str, unread: int, *, store: NotifyStore, scheduler: Scheduler, now: float
) -> Disposition:
    """A badge-only update: the user read messages elsewhere. Cancel the pending push if the
    unread count dropped to 0 or below the count the pending push was queued with."""
    result = store.cancel_pending(rid, unread=unread, now=now)
    match result:
        case Unknown():
            return Disposition.UNKNOWN
        case IsRejected():
            return Disposition.REJECTED
        case NothingPending():
            return Disposition.NOTHING_PENDING
        case Cancelled(bid):
            try:
                scheduler.stop(bid, cause="read on another device")
            except SchedulerUnavailable:
                # The state is already cleared: the sender re-checks and will not push.
                log.warning("could not stop a cancelled delivery", extra={"batch": bid})
            return Disposition.CANCELLED
    raise AssertionError(f"unexpected cancel result {result!r}")  # pragma: no cover


def execution_input(
    rid: str, bid: str, backend: str, delay_seconds: int, *, flush: bool
) -> dict[str, Any]:
    """The state machine's input. Carries no pushkey, token or message content."""
    return {
        "registration": rid,
        "batch": bid,
        "backend": backend,
        "delay_seconds": delay_seconds,
        "flush": flush,
    }


def _delay(stored: int | None, default: int) -> int:
    return default if stored is None else stored


def _restart_stale(
    rid: str,
    old_bid: str,
    event: EventSummary,
    *,
    backend: str,
    delay: int,
    store: NotifyStore,
    scheduler: Scheduler,
    now: float,
) -> None:
    new_bid = batch_id(rid, event.event_id)
    if store.restart_stale_batch(rid, old_bid, new_bid, now):
        log.warning("pending batch had no live execution; restarted", extra={"batch": new_bid})
        scheduler.start(new_bid, execution_input(rid, new_bid, backend, delay, flush=True))
