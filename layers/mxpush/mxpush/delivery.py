"""The delivery path.

- `deliver_slot` (a slot execution's one Task, after its Wait): hands every batch due in the
  slot to its backend's sender, asynchronously, and marks the slot dispatched.
- `send_batches` (a sender Lambda's first attempt, for a list of batches): claims each batch
  with a conditional write, pushes it, and writes its outcome on the batch item — the delivery
  log. A transient failure hands the batch to a retry execution (only then does a push cost more
  than its share of a slot's execution).
- `send_retry` (the retry execution's Task): one more attempt; a transient failure raises, and
  the state machine retries it with the backend's backoff.
- `record_outcome` (the record Lambda): a push that ran out of retries, or whose sender never
  ran (Lambda's on-failure destination), is logged `failed`.
- `sweep` (every minute): re-drives slots whose execution was never started, failed or lost,
  and checks that every batch of a past slot was taken.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from mxpush import metrics
from mxpush.backends.base import Backend, Rejected
from mxpush.errors import (
    PermanentDeliveryError,
    SchedulerUnavailable,
    StoreUnavailable,
    TransientDeliveryError,
)
from mxpush.events import EventSummary
from mxpush.ids import log_ref
from mxpush.model import Outcome, RegistrationOptions, Status
from mxpush.outbound import OutboundHttp
from mxpush.render import render_batch
from mxpush.retraction import Retraction, ShownPush, notification_key
from mxpush.store.delivery_side import (
    CLAIM_LEASE_SECONDS,
    Claimed,
    ClaimResult,
    DueEntry,
    SlotMarker,
)
from mxpush.store.models import BatchItem, OpenState
from mxpush.store.notify_side import SlotState

log = logging.getLogger(__name__)

# A slot whose execution should have dispatched it this long ago is re-driven by the sweep.
REDRIVE_AFTER_SECONDS = 10
# How far back the sweep looks for slots that were never dispatched.
SWEEP_WINDOW_SECONDS = 15 * 60
# A dispatched slot is checked once its batches' first attempts are surely over (a sender's
# claim lease), by the one sweep whose minute-wide window it passes through.
VERIFY_AFTER_SECONDS = 5 * 60
VERIFY_WINDOW_SECONDS = 60
# Seconds before a retry execution's first attempt, per backend (the state machine's Retry
# takes over from there; see statemachine/retry.asl.json).
FIRST_RETRY_SECONDS: Mapping[str, int] = {"webhook": 3, "email": 30}
DEFAULT_FIRST_RETRY_SECONDS = 2
_PARALLEL_SENDS = 8


class RecordStore(Protocol):
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
    ) -> bool: ...


class DeliveryStore(RecordStore, Protocol):
    def claim_batch(self, rid: str, sk: str, *, now: float, retry: bool = False) -> ClaimResult: ...

    def delivered_before(self, rid: str, sk: str, *, now: float) -> list[BatchItem]: ...

    def hand_to_retry(self, rid: str, sk: str, *, token: str, reason: str) -> bool: ...

    def reopen(self, rid: str, sk: str, *, token: str) -> bool: ...


class SlotStore(Protocol):
    def due_entries(self, slot: int) -> list[DueEntry]: ...

    def set_slot_state(self, slot: int, state: str) -> None: ...

    def slot_markers(self, first_slot: int, last_slot: int) -> list[SlotMarker]: ...

    def batches(self, keys: Any) -> list[BatchItem]: ...


class RetryScheduler(Protocol):
    def start_retry(self, name: str, payload: Mapping[str, Any]) -> None: ...


class Senders(Protocol):
    def invoke(self, backend: str, batches: list[dict[str, str]]) -> None: ...


@dataclass(frozen=True)
class Attempt:
    """How one push attempt ended: an outcome, or `None` for a transient failure."""

    outcome: Outcome | None
    reason: str | None = None
    # The transient failure itself: a retry re-raises it for the state machine (its message
    # never carries what a receiver answered; `reason` may, for the owner's log).
    error: TransientDeliveryError | None = None
    # Delivered: the backend's reference to the message (kept for a retraction).
    ref: str | None = None
    # A retraction: the rooms it covered (its log record).
    rooms: tuple[str, ...] | None = None


# --- slots --------------------------------------------------------------------------------------


def deliver_slot(
    event: Mapping[str, Any],
    *,
    store: SlotStore,
    senders: Senders,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, int]:
    """Hand every batch due in the slot to its sender. Never before the slot: a Wait may wake
    a little early (whole seconds), and a batch due in it could still be on its way."""
    slot = int(event["slot"])
    early = slot - clock()
    if early > 0:
        sleep(min(early, 1.0))
    entries = store.due_entries(slot)
    dispatch(entries, senders=senders)
    store.set_slot_state(slot, SlotState.DISPATCHED)
    return {"slot": slot, "batches": len(entries)}


def dispatch(entries: list[DueEntry], *, senders: Senders) -> None:
    by_backend: dict[str, list[dict[str, str]]] = defaultdict(list)
    for entry in entries:
        by_backend[entry.backend].append(entry.to_event())
    failed = []
    for backend, batches in by_backend.items():
        try:
            senders.invoke(backend, batches)
        except SchedulerUnavailable as exc:
            log.error("sender not invoked", extra={"backend": backend, "reason": str(exc)})  # noqa: TRY400 - an outage, not a bug
            failed.append(backend)
    if failed:
        # The state machine retries the step; a repeated invoke is harmless (claims).
        raise SchedulerUnavailable(f"could not invoke the senders of {', '.join(failed)}")


def sweep(
    *, store: SlotStore, senders: Senders, now: float, since: int | None = None
) -> dict[str, int]:
    """Re-drive what a lost, failed or never-started slot execution left, and check past slots.
    Costs one Query per minute of the window when nothing is due. `since`: ignore older slots
    (tests, which share one table)."""
    redriven = checked = stuck = 0
    first = int(now) - SWEEP_WINDOW_SECONDS
    markers = store.slot_markers(
        first if since is None else max(first, since), int(now) - REDRIVE_AFTER_SECONDS
    )
    for marker in markers:
        if marker.st in (SlotState.STARTED, SlotState.UNSTARTED):
            log.warning(
                "re-driving a slot its execution did not deliver", extra={"slot": marker.slot}
            )
            deliver_slot({"slot": marker.slot}, store=store, senders=senders, clock=lambda: now)
            redriven += 1
        elif (
            marker.st == SlotState.DISPATCHED
            and now - VERIFY_AFTER_SECONDS - VERIFY_WINDOW_SECONDS
            < marker.slot
            <= now - VERIFY_AFTER_SECONDS
        ):
            checked += 1
            left = _untaken(store.due_entries(marker.slot), store, now)
            if left:
                log.warning("re-driving batches nobody took", extra={"slot": marker.slot})
                dispatch(left, senders=senders)
                stuck += len(left)
    return {"redriven_slots": redriven, "checked_slots": checked, "redriven_batches": stuck}


def _untaken(entries: list[DueEntry], store: SlotStore, now: float) -> list[DueEntry]:
    if not entries:
        return []
    batches = {(b.rid, b.sk): b for b in store.batches((e.rid, e.sk) for e in entries)}
    left = []
    for entry in entries:
        batch = batches.get((entry.rid, entry.sk))
        if batch is None:
            continue  # its registration was deleted
        if batch.st == OpenState.OPEN or (
            batch.st == OpenState.SENDING and (batch.claimed or 0) < now - CLAIM_LEASE_SECONDS
        ):
            left.append(entry)
    return left


# --- senders ------------------------------------------------------------------------------------


def send_batches(
    event: Mapping[str, Any],
    *,
    backend: Backend,
    store: DeliveryStore,
    http: OutboundHttp,
    retries: RetryScheduler,
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """A sender's first attempt at each batch of `event["batches"]`, concurrently."""
    refs = [(str(b["registration"]), str(b["batch"])) for b in event.get("batches") or ()]

    def one(ref: tuple[str, str]) -> str:
        return _first_attempt(
            ref[0], ref[1], backend=backend, store=store, http=http, retries=retries, clock=clock
        )

    if len(refs) == 1:
        results = [one(refs[0])]
    else:
        with ThreadPoolExecutor(max_workers=min(_PARALLEL_SENDS, len(refs))) as pool:
            results = list(pool.map(one, refs))
    summary: dict[str, Any] = defaultdict(int)
    for result in results:
        summary[result] += 1
    if summary.get("unscheduled"):
        # Lambda runs the event again (at most twice); the batches that went out skip.
        raise SchedulerUnavailable("could not schedule a retry for every failed push")
    return dict(summary)


def _first_attempt(
    rid: str,
    sk: str,
    *,
    backend: Backend,
    store: DeliveryStore,
    http: OutboundHttp,
    retries: RetryScheduler,
    clock: Callable[[], float],
) -> str:
    started = clock()
    claim = store.claim_batch(rid, sk, now=started)
    if not isinstance(claim, Claimed):
        log.info("batch not sent", extra={"pushkey": log_ref(rid), "reason": claim.reason})
        return "skipped"
    if not claim.batch.immediate:
        metrics.lateness(backend.name, started - claim.batch.due)
    attempt = push(claim, backend, http, store=store, now=started)
    if attempt.outcome is not None:
        _count(backend.name, claim.batch, attempt.outcome, answered=clock())
        _finish(store, claim, attempt, clock)
        return attempt.outcome.value
    metrics.retry(backend.name)
    reason = attempt.reason or "temporary failure"
    payload = {
        "registration": rid,
        "batch": sk,
        "backend": backend.name,
        "backoff_seconds": FIRST_RETRY_SECONDS.get(backend.name, DEFAULT_FIRST_RETRY_SECONDS),
    }
    try:
        # Started before the hand-over: its first attempt comes after the backoff, by when
        # the batch is `retrying`.
        retries.start_retry(f"retry-{claim.batch.bid[:32]}-{claim.token}", payload)
    except SchedulerUnavailable as exc:
        log.warning("retry not scheduled", extra={"pushkey": log_ref(rid), "reason": str(exc)})
        # Back to `open`: Lambda's next run of this event takes it again.
        store.reopen(rid, sk, token=claim.token)
        return "unscheduled"
    store.hand_to_retry(rid, sk, token=claim.token, reason=reason)
    return "retrying"


def send_retry(
    event: Mapping[str, Any],
    *,
    backend: Backend,
    store: DeliveryStore,
    http: OutboundHttp,
    clock: Callable[[], float] = time.time,
) -> dict[str, str]:
    """One more attempt, in a retry execution. Raises `TransientDeliveryError` for the state
    machine to retry with backoff."""
    rid, sk = str(event["registration"]), str(event["batch"])
    started = clock()
    claim = store.claim_batch(rid, sk, now=started, retry=True)
    if not isinstance(claim, Claimed):
        return {"outcome": "skipped", "reason": claim.reason}
    attempt = push(claim, backend, http, store=store, now=started)
    if attempt.outcome is not None:
        _count(backend.name, claim.batch, attempt.outcome, answered=clock())
        _finish(store, claim, attempt, clock)
        return {"outcome": attempt.outcome.value}
    metrics.retry(backend.name)
    store.hand_to_retry(rid, sk, token=claim.token, reason=attempt.reason or "temporary failure")
    raise attempt.error or TransientDeliveryError("temporary failure")


def _count(backend: str, batch: BatchItem, outcome: Outcome, *, answered: float) -> None:
    """Metrics of a push that was made: its outcome; if delivered, the events it carried
    beyond the first (coalesced) and the time since the first was accepted."""
    metrics.push(backend, outcome.value)
    if outcome is Outcome.DELIVERED and not batch.is_retract:
        metrics.push(backend, Outcome.COALESCED.value, batch.n - 1)
        metrics.latency(backend, answered - batch.created)


def _finish(
    store: DeliveryStore,
    claim: Claimed,
    attempt: Attempt,
    clock: Callable[[], float],
) -> None:
    """Write the outcome of a push that was made. Tried a few times: if it cannot be written,
    the batch stays claimed until its lease runs out, and is then pushed again."""
    rid, sk = claim.batch.rid, claim.batch.sk
    assert attempt.outcome is not None  # noqa: S101 - only finished attempts get here
    for pause in (0.2, 0.5, 1.0, None):
        try:
            store.finish_batch(
                rid,
                sk,
                token=claim.token,
                outcome=attempt.outcome,
                reason=attempt.reason,
                now=clock(),
                ref=attempt.ref,
                rooms=attempt.rooms,
            )
        except StoreUnavailable:
            if pause is None:
                raise
            time.sleep(pause)
        else:
            return


def push(
    claim: Claimed,
    backend: Backend,
    http: OutboundHttp,
    *,
    store: DeliveryStore | None = None,
    now: float | None = None,
) -> Attempt:
    """Render and send one claimed batch (or take back what earlier ones showed, for a retract
    item); classify how it went."""
    registration = claim.registration
    rid = registration.rid
    if claim.batch.is_retract:
        if store is None:  # pragma: no cover - every sender passes its store
            raise ValueError("a retraction needs the store")
        return retract(claim, backend, http, store=store, now=time.time() if now is None else now)
    if registration.status is Status.REJECTED:
        return Attempt(Outcome.REJECTED, registration.status_reason or "registration rejected")
    if registration.backend != backend.name:
        return Attempt(
            Outcome.FAILED, f"routed to {backend.name} but registered for {registration.backend}"
        )
    batch = claim.batch.to_batch()
    message = render_batch(batch, registration.options)
    try:
        result = backend.send_to(message, registration, http)
    except TransientDeliveryError as exc:
        log.info("delivery failed for now", extra={"pushkey": log_ref(rid), "reason": exc.reason})
        return Attempt(None, exc.reason, exc)
    except PermanentDeliveryError as exc:
        log.warning("delivery failed", extra={"pushkey": log_ref(rid), "reason": exc.reason})
        return Attempt(Outcome.FAILED, exc.reason)
    if isinstance(result, Rejected):
        log.warning("backend rejected the token", extra={"pushkey": log_ref(rid)})
        return Attempt(Outcome.REJECTED, result.reason)
    log.info(
        "delivered",
        extra={"pushkey": log_ref(rid), "backend": backend.name, "count": batch.count},
    )
    return Attempt(Outcome.DELIVERED, ref=result.ref)


def retract(
    claim: Claimed, backend: Backend, http: OutboundHttp, *, store: DeliveryStore, now: float
) -> Attempt:
    """A retract item: take back the pushes delivered since the previous retraction."""
    registration = claim.registration
    rid = registration.rid
    if registration.status is Status.REJECTED:
        return Attempt(Outcome.FAILED, "registration rejected: nothing is delivered to it")
    if registration.backend != backend.name:
        return Attempt(
            Outcome.FAILED, f"routed to {backend.name} but registered for {registration.backend}"
        )
    shown = store.delivered_before(rid, claim.batch.sk, now=now)
    if any(
        b.st == OpenState.SENDING and (b.claimed or 0) > now - CLAIM_LEASE_SECONDS for b in shown
    ):
        # A push is on its way (the read came while it was being sent): once it is delivered
        # it is shown, and this retraction is the one to take it back. Try again shortly.
        error = TransientDeliveryError("a push is still on its way to the backend")
        return Attempt(None, error.reason, error)
    retraction = build_retraction(
        [b for b in shown if b.st == Outcome.DELIVERED.value], registration.options
    )
    rooms = tuple(retraction.room_ids)
    if not retraction.pushes:
        return Attempt(Outcome.RETRACTED, "nothing left to take back", rooms=())
    try:
        result = backend.retract(retraction, registration.target, registration.options, http)
    except TransientDeliveryError as exc:
        log.info("retraction failed for now", extra={"pushkey": log_ref(rid), "reason": exc.reason})
        return Attempt(None, exc.reason, exc)
    except PermanentDeliveryError as exc:
        log.warning("retraction failed", extra={"pushkey": log_ref(rid), "reason": exc.reason})
        return Attempt(Outcome.FAILED, exc.reason, rooms=rooms)
    if isinstance(result, Rejected):
        log.warning("backend rejected the token", extra={"pushkey": log_ref(rid)})
        return Attempt(Outcome.REJECTED, result.reason, rooms=rooms)
    log.info(
        "retracted",
        extra={"pushkey": log_ref(rid), "backend": backend.name, "pushes": len(retraction.pushes)},
    )
    return Attempt(Outcome.RETRACTED, rooms=rooms)


def build_retraction(batches: Sequence[BatchItem], options: RegistrationOptions) -> Retraction:
    """What delivered batches (newest first) left on the device, named as their pushes were
    (`mxpush.retraction.notification_key`)."""
    pushes = []
    for batch in batches:
        latest = batch.latest
        event_id = latest.get("event_id")
        if not event_id:
            continue  # a test push: nothing to name it by
        room_id = latest.get("room_id")
        summary = EventSummary.from_item(latest)
        key = notification_key(
            room_id, event_id, is_call=summary.is_call, group_by_room=options.group_by_room
        )
        if key is None:  # pragma: no cover - an event id is always there
            continue
        rooms = tuple(dict.fromkeys([*batch.rooms, *(r.room_id for r in batch.refs if r.room_id)]))
        pushes.append(
            ShownPush(
                key=key,
                room_id=room_id,
                event_id=event_id,
                rooms=rooms,
                event_ids=tuple(r.event_id for r in batch.refs),
                ref=batch.ref,
            )
        )
    return Retraction(tuple(pushes))


# --- failures -----------------------------------------------------------------------------------


def record_outcome(event: Mapping[str, Any], *, store: RecordStore, now: float) -> dict[str, Any]:
    """Log `failed` for pushes that will not be tried again: a retry execution that ran out of
    retries (`{"registration", "batch", "error"}`), or a sender invocation Lambda gave up on
    (its on-failure destination record, with the original `requestPayload`)."""
    if "requestPayload" in event:
        payload = event.get("requestPayload") or {}
        response = event.get("responsePayload") or {}
        reason = describe_failure(
            {"Error": response.get("errorType", "Lambda"), "Cause": json.dumps(response)}
        )
        refs = [(str(b["registration"]), str(b["batch"])) for b in payload.get("batches") or ()]
        backend = str(payload.get("backend") or "")
    else:
        reason = describe_failure(event.get("error"))
        refs = [(str(event["registration"]), str(event["batch"]))]
        backend = str(event.get("backend") or "")
    logged = 0
    for rid, sk in refs:
        if store.finish_batch(rid, sk, token=None, outcome=Outcome.FAILED, reason=reason, now=now):
            logged += 1
    metrics.push(backend, Outcome.FAILED.value, logged)
    return {"outcome": Outcome.FAILED.value, "logged": logged}


def describe_failure(error: Any) -> str:
    """Turn a state-machine Catch (`{"Error", "Cause"}`) into a short reason."""
    if not isinstance(error, Mapping):
        return "delivery failed"
    name = str(error.get("Error", "Error"))
    cause = error.get("Cause")
    message = None
    if isinstance(cause, str):
        try:
            parsed = json.loads(cause)
            message = parsed.get("errorMessage") if isinstance(parsed, dict) else None
        except ValueError:
            message = cause
    if name == "TransientDeliveryError":
        return f"{message or 'temporary failure'} (gave up after retries)"
    return f"{name}: {message}" if message else name
