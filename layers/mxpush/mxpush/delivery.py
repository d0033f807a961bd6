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
- `conclude` (README, "Channels"): how an attempt on one channel of a registration of several
  ends - a fan-out channel's own outcome; in a fallback chain, the batch handed to its next
  channel (a fallback, or once delivered an escalation) and put in a slot, with the channel's
  outcome in the same write.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
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
from mxpush.model import Outcome, Registration, RegistrationOptions, Status
from mxpush.outbound import OutboundHttp
from mxpush.render import render_batch
from mxpush.retraction import Retraction, ShownPush, notification_key
from mxpush.store.delivery_side import (
    CLAIM_LEASE_SECONDS,
    Claimed,
    ClaimResult,
    SlotMarker,
)
from mxpush.store.models import (
    BatchItem,
    DueEntry,
    OpenState,
    on_channel_ref,
    parse_channel_ref,
    parse_on_channel_ref,
    read_reason,
)
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
        channel: int | None = None,
        record: Mapping[str, Any] | None = None,
        delivered_at: float | None = None,
        reject: bool = True,
    ) -> bool: ...

    def read_batch(self, rid: str, sk: str) -> tuple[Registration | None, BatchItem | None]: ...

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
    ) -> BatchItem | None: ...

    def finish_channel(
        self,
        rid: str,
        sk: str,
        channel: int,
        *,
        token: str | None,
        record: Mapping[str, Any],
        now: float,
    ) -> BatchItem | None: ...

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
    ) -> bool: ...

    def reject_channel(self, rid: str, channel: int, *, reason: str, now: float) -> bool: ...

    def claim_slot_start(self, slot: int, first: BatchItem | None = None) -> str | None: ...

    def set_slot_state(self, slot: int, state: str) -> None: ...


class DeliveryStore(RecordStore, Protocol):
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
    ) -> ClaimResult: ...

    def delivered_before(self, rid: str, sk: str, *, now: float) -> list[BatchItem]: ...

    def hand_to_retry(
        self, rid: str, sk: str, *, token: str, reason: str, channel: int | None = None
    ) -> bool: ...

    def reopen(self, rid: str, sk: str, *, token: str, channel: int | None = None) -> bool: ...


class SlotStore(Protocol):
    def due_entries(self, slot: int) -> list[DueEntry]: ...

    def set_slot_state(self, slot: int, state: str) -> None: ...

    def slot_markers(self, first_slot: int, last_slot: int) -> list[SlotMarker]: ...

    def batches(self, keys: Any) -> list[BatchItem]: ...


class RetryScheduler(Protocol):
    def start_retry(self, name: str, payload: Mapping[str, Any]) -> None: ...


class SlotStarter(Protocol):
    def start_slot(self, slot: int) -> None: ...


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
    refs = {entry: parse_channel_ref(entry.sk) for entry in entries}
    batches = {(b.rid, b.sk): b for b in store.batches((e.rid, refs[e][0]) for e in entries)}
    stale = now - CLAIM_LEASE_SECONDS
    left = []
    for entry in entries:
        sk, channel = refs[entry]
        batch = batches.get((entry.rid, sk))
        if batch is None:
            continue  # its registration was deleted
        if channel is not None:
            state = batch.channel_state(channel)
            if batch.st in (OpenState.OPEN, OpenState.SENDING) and (
                state.get("st") in (None, OpenState.OPEN)
                or (state.get("st") == OpenState.SENDING and (state.get("claimed") or 0) < stale)
            ):
                left.append(entry)
            continue
        if batch.backend != entry.backend:
            continue  # moved to another channel since: its own entry is elsewhere
        if (
            batch.st == OpenState.OPEN
            or (batch.st == OpenState.WAITING and batch.due <= entry.due)
            or (batch.st == OpenState.SENDING and (batch.claimed or 0) < stale)
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
    slots: SlotStarter | None = None,
) -> dict[str, Any]:
    """A sender's first attempt at each batch of `event["batches"]`, concurrently. `slots`:
    where a batch handed to its next channel is scheduled (a fallback or an escalation)."""
    refs = [(str(b["registration"]), str(b["batch"])) for b in event.get("batches") or ()]

    def one(ref: tuple[str, str]) -> str:
        return _first_attempt(
            ref[0],
            ref[1],
            backend=backend,
            store=store,
            http=http,
            retries=retries,
            clock=clock,
            slots=slots,
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
    ref: str,
    *,
    backend: Backend,
    store: DeliveryStore,
    http: OutboundHttp,
    retries: RetryScheduler,
    clock: Callable[[], float],
    slots: SlotStarter | None = None,
) -> str:
    started = clock()
    sk, channel = parse_channel_ref(ref)
    claim = store.claim_batch(rid, sk, now=started, channel=channel, backend=backend.name)
    if not isinstance(claim, Claimed):
        log.info("batch not sent", extra={"pushkey": log_ref(rid), "reason": claim.reason})
        return "skipped"
    if _read_while_held(store, claim, now=started):
        return Outcome.CANCELLED.value
    if not claim.batch.immediate:
        metrics.lateness(backend.name, started - claim.batch.due)
    attempt = _given_up(claim, push(claim, backend, http, store=store, now=started), started)
    if attempt.outcome is not None:
        _count(backend.name, claim.batch, attempt.outcome, answered=clock())
        conclude(store, claim, attempt, backend=backend.name, clock=clock, slots=slots)
        return attempt.outcome.value
    metrics.retry(backend.name)
    reason = attempt.reason or "temporary failure"
    if channel is None and claim.registration.multi_channel and claim.batch.chs is not None:
        ref = on_channel_ref(sk, claim.batch.ch)  # the retry is for this channel only
    payload = {
        "registration": rid,
        "batch": ref,
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
        store.reopen(rid, sk, token=claim.token, channel=channel)
        return "unscheduled"
    store.hand_to_retry(rid, sk, token=claim.token, reason=reason, channel=channel)
    return "retrying"


def send_retry(
    event: Mapping[str, Any],
    *,
    backend: Backend,
    store: DeliveryStore,
    http: OutboundHttp,
    clock: Callable[[], float] = time.time,
    slots: SlotStarter | None = None,
) -> dict[str, str]:
    """One more attempt, in a retry execution. Raises `TransientDeliveryError` for the state
    machine to retry with backoff (unless the channel's `give_up_after_seconds` has passed:
    then the batch goes on to its next channel, and the execution ends)."""
    rid, ref = str(event["registration"]), str(event["batch"])
    sk, channel = parse_channel_ref(ref)
    sk, on_channel = parse_on_channel_ref(sk)
    started = clock()
    claim = store.claim_batch(
        rid, sk, now=started, retry=True, channel=channel, on_channel=on_channel
    )
    if not isinstance(claim, Claimed):
        return {"outcome": "skipped", "reason": claim.reason}
    if _read_while_held(store, claim, now=started):
        return {"outcome": Outcome.CANCELLED.value}
    attempt = _given_up(claim, push(claim, backend, http, store=store, now=started), started)
    if attempt.outcome is not None:
        _count(backend.name, claim.batch, attempt.outcome, answered=clock())
        conclude(store, claim, attempt, backend=backend.name, clock=clock, slots=slots)
        return {"outcome": attempt.outcome.value}
    metrics.retry(backend.name)
    store.hand_to_retry(
        rid, sk, token=claim.token, reason=attempt.reason or "temporary failure", channel=channel
    )
    raise attempt.error or TransientDeliveryError("temporary failure")


def _read_while_held(store: RecordStore, claim: Claimed, *, now: float) -> bool:
    """A read came while the batch was in a sender's hands (a retry's backoff, a sender that
    died mid-push): end it instead of pushing it again. True if so (the claim is spent)."""
    batch = claim.batch
    if claim.channel is not None or batch.is_retract or not batch.read_since_queued:
        return False
    multi = claim.registration.multi_channel and batch.chs is not None
    _end_for_read(
        store,
        batch,
        channel=batch.ch if multi else None,
        backend=batch.backend,
        token=claim.token,
        now=now,
    )
    log.info(
        "batch not sent",
        extra={"pushkey": log_ref(batch.rid), "reason": "read while it was being sent"},
    )
    return True


def _end_for_read(
    store: RecordStore,
    batch: BatchItem,
    *,
    channel: int | None,
    backend: str,
    token: str | None,
    now: float,
) -> None:
    """End a batch a read covers (`read_since_queued`) where a sender would push it next:
    `delivered` if a channel delivered it already (the rest of its chain `cancelled`), else
    `cancelled`. `channel`: the chain's channel it is on (None: a one-channel registration)."""
    assert batch.rd is not None  # noqa: S101 - only batches a read covers get here
    reason = read_reason(batch.rd)
    delivered = batch.dat is not None
    metrics.push(backend, Outcome.CANCELLED.value)  # as the notify path counts its cancels
    store.finish_batch(
        batch.rid,
        batch.sk,
        token=token,
        outcome=Outcome.DELIVERED if delivered else Outcome.CANCELLED,
        reason=None if delivered else reason,
        now=now,
        channel=channel,
        record=None
        if channel is None
        else {"st": Outcome.CANCELLED.value, "b": backend, "r": reason, "at": now},
        reject=False,
    )


def _given_up(claim: Claimed, attempt: Attempt, now: float) -> Attempt:
    """A transient failure on a channel that has been failing longer than its
    `give_up_after_seconds`: failed for good, so that the next channel takes over."""
    if attempt.outcome is not None or claim.batch.is_retract:
        return attempt
    channel = claim.registration.channel(claim.index)
    give_up = None if channel is None else channel.give_up_after_seconds
    if give_up is None or now - claim.batch.channel_started() < give_up:
        return attempt
    return Attempt(
        Outcome.FAILED, f"{attempt.reason or 'temporary failure'} (gave up after {give_up} s)"
    )


# --- channels -----------------------------------------------------------------------------------


def conclude(
    store: RecordStore,
    claim: Claimed,
    attempt: Attempt,
    *,
    backend: str,
    clock: Callable[[], float],
    slots: SlotStarter | None,
    token: str | bool | None = True,
) -> None:
    """Write how an attempt on a channel ended, and what comes next (README, "Channels"):

    - one channel (a registration of one backend): the batch's outcome, as always;
    - a fan-out's channel: that channel's outcome; the last channel to end writes the batch's;
    - a fallback chain: delivered - the batch is done, unless an escalation channel is due
      later (the batch waits for it in its slot, and a read ends it); rejected or failed -
      the next channel that is not rejected takes the batch, in the next slot; none left -
      the batch's outcome (`delivered` if an earlier channel delivered it).

    `token=None`: written by whoever (the record function), on the channel the claim names."""
    owner = claim.token if token is True else None
    registration, batch = claim.registration, claim.batch
    outcome = attempt.outcome
    assert outcome is not None  # noqa: S101 - only finished attempts get here
    now = clock()
    if claim.channel is None and not (registration.multi_channel and batch.chs is not None):
        _finish(store, claim, attempt, clock, token=owner)
        return
    index = claim.index
    record: dict[str, Any] = {"st": outcome.value, "b": backend, "at": now}
    if attempt.reason:
        record["r"] = attempt.reason[:300]
    if attempt.ref:
        record["ref"] = attempt.ref[:200]
    if attempt.rooms is not None:
        record["rooms"] = list(attempt.rooms)[:50]
    if outcome is Outcome.REJECTED and not batch.is_retract:
        store.reject_channel(
            registration.rid, index, reason=attempt.reason or "rejected by the backend", now=now
        )
    if claim.channel is not None:
        written = store.finish_channel(
            registration.rid, batch.sk, index, token=owner, record=record, now=now
        )
        if written is not None:
            _end_fan_out_if_done(store, written, now)
        return
    delivered_at = now if outcome is Outcome.DELIVERED else None
    first_delivery = batch.dat if batch.dat is not None else delivered_at
    following = next_channel(registration, index, delivered=first_delivery is not None)
    if following is None:
        final = Outcome.DELIVERED if first_delivery is not None else outcome
        reason = attempt.reason
        if final is Outcome.DELIVERED and outcome is not Outcome.DELIVERED:
            reason = f"channel {index} ({backend}): {attempt.reason or outcome.value}"
        store.finish_batch(
            registration.rid,
            batch.sk,
            token=owner,
            outcome=final,
            reason=reason,
            now=now,
            ref=attempt.ref,
            channel=index,
            record=record,
            delivered_at=delivered_at,
            reject=False,
        )
        return
    channel = registration.channels[following]
    waiting = first_delivery is not None
    due = math.ceil(now) + 1
    if waiting and channel.after_seconds > 0:
        due = max(due, math.ceil(first_delivery + channel.after_seconds))  # type: ignore[operator]
    moved = store.move_batch(
        registration.rid,
        batch.sk,
        token=owner,
        from_channel=index,
        record=record,
        to_channel=following,
        backend=channel.backend,
        due=due,
        waiting=waiting,
        now=now,
        delivered_at=delivered_at,
        ref=attempt.ref,
    )
    if moved is None:
        return
    if moved.read_since_queued:
        # A read came while this channel was pushing: the next channel has nothing to do.
        _end_for_read(store, moved, channel=following, backend=channel.backend, token=None, now=now)
        return
    log.info(
        "escalation scheduled" if waiting else "falling back",
        extra={
            "pushkey": log_ref(registration.rid),
            "channel": following,
            "backend": channel.backend,
            "due": due,
        },
    )
    if slots is None:  # pragma: no cover - every sender passes its scheduler
        log.warning("no slot scheduler: the sweep delivers it")
        return
    put_in_slot(moved, store=store, slots=slots, clock=clock)


def put_in_slot(
    batch: BatchItem, *, store: RecordStore, slots: SlotStarter, clock: Callable[[], float]
) -> None:
    """Make sure a slot's execution hands `batch` to its sender: its own slot, or, if that slot
    has come meanwhile (its delivery step may have read the due index before this entry: a slow
    write, a busy container), the next one. (The notify path sends such a batch directly; a
    sender cannot invoke the other senders.)"""
    from mxpush.gateway import ensure_slot  # noqa: PLC0415 - the notify path's, shared

    slot = batch.due
    for _ in range(5):
        state = ensure_slot(slot, store=store, scheduler=slots, batch=replace(batch, due=slot))
        if state is None or (state != SlotState.DISPATCHED and slot > clock()):
            return
        slot = max(slot, math.ceil(clock())) + 1
    log.warning("no slot took the batch; the sweep re-drives it", extra={"slot": slot})


def next_channel(registration: Registration, index: int, *, delivered: bool) -> int | None:
    """The channel after `index` that takes a batch: the next one not rejected; once a
    channel delivered it, only an escalation (`after_seconds` > 0)."""
    channels = registration.channels
    for following in range(index + 1, len(channels)):
        if registration.channel_rejected(following):
            continue
        if delivered and channels[following].after_seconds <= 0:
            continue
        return following
    return None


def _end_fan_out_if_done(store: RecordStore, batch: BatchItem, now: float) -> None:
    """The last channel of a fan-out to end writes the batch's outcome: delivered (or, a
    retraction, retracted) if any channel did; rejected if every channel was; else failed."""
    states = {int(i): batch.channel_state(int(i)) for i in batch.fan or {}}
    if any(state.get("st") not in _OUTCOMES for state in states.values()):
        return
    done = [state["st"] for state in states.values()]
    failures = "; ".join(
        f"{state.get('b', i)}: {state.get('r') or state['st']}"
        for i, state in states.items()
        if state["st"] not in (Outcome.DELIVERED.value, Outcome.RETRACTED.value)
    )
    rooms: list[str] | None = None
    if batch.is_retract:
        outcome = Outcome.RETRACTED if Outcome.RETRACTED.value in done else Outcome.FAILED
        rooms = list(dict.fromkeys(r for s in states.values() for r in s.get("rooms") or ()))
    elif Outcome.DELIVERED.value in done:
        outcome = Outcome.DELIVERED
    elif all(state == Outcome.REJECTED.value for state in done):
        outcome = Outcome.REJECTED
    else:
        outcome = Outcome.FAILED
    delivered = [
        float(s["at"]) for s in states.values() if s["st"] == Outcome.DELIVERED.value and "at" in s
    ]
    store.end_fan_out(
        batch.rid,
        batch.sk,
        outcome=outcome,
        reason=failures or None,
        now=now,
        rooms=rooms,
        delivered_at=min(delivered) if delivered else None,
    )


_OUTCOMES = frozenset(o.value for o in Outcome)


def _count(backend: str, batch: BatchItem, outcome: Outcome, *, answered: float) -> None:
    """Metrics of a push that was made: its outcome; if delivered, the events it carried
    beyond the first (coalesced) and the time since the first was accepted."""
    metrics.push(backend, outcome.value)
    if outcome is Outcome.DELIVERED and not batch.is_retract:
        metrics.push(backend, Outcome.COALESCED.value, batch.n - 1)
        metrics.latency(backend, answered - batch.created)


def _finish(
    store: RecordStore,
    claim: Claimed,
    attempt: Attempt,
    clock: Callable[[], float],
    *,
    token: str | None,
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
                token=token,
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
    index = claim.index
    if registration.multi_channel and registration.channel_rejected(index):
        return Attempt(Outcome.FAILED, f"channel {index} was rejected earlier")
    view = registration.channel_view(index)
    if view is None or view.backend != backend.name:
        registered = view.backend if view is not None else "no such channel"
        return Attempt(Outcome.FAILED, f"routed to {backend.name} but registered for {registered}")
    # From here on, the registration as this channel sees it (its target and options).
    registration = view
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
    index = claim.index
    view = registration.channel_view(index)
    if view is None or view.backend != backend.name:
        registered = view.backend if view is not None else "no such channel"
        return Attempt(Outcome.FAILED, f"routed to {backend.name} but registered for {registered}")
    if registration.multi_channel and registration.channel_rejected(index):
        return Attempt(Outcome.FAILED, f"channel {index} was rejected: nothing is delivered to it")
    shown = store.delivered_before(rid, claim.batch.sk, now=now)
    if any(
        b.st == OpenState.SENDING and (b.claimed or 0) > now - CLAIM_LEASE_SECONDS for b in shown
    ):
        # A push is on its way (the read came while it was being sent): once it is delivered
        # it is shown, and this retraction is the one to take it back. Try again shortly.
        error = TransientDeliveryError("a push is still on its way to the backend")
        return Attempt(None, error.reason, error)
    retraction = build_retraction([b for b in shown if b.delivered_on(index)], view.options, index)
    rooms = tuple(retraction.room_ids)
    if not retraction.pushes:
        return Attempt(Outcome.RETRACTED, "nothing left to take back", rooms=())
    try:
        result = backend.retract(retraction, view.target, view.options, http)
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


def build_retraction(
    batches: Sequence[BatchItem], options: RegistrationOptions, channel: int = 0
) -> Retraction:
    """What delivered batches (newest first) left on the device through `channel`, named as
    their pushes were (`mxpush.retraction.notification_key`)."""
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
                ref=batch.channel_ref_of(channel),
            )
        )
    return Retraction(tuple(pushes))


# --- failures -----------------------------------------------------------------------------------


def record_outcome(
    event: Mapping[str, Any],
    *,
    store: RecordStore,
    now: float,
    slots: SlotStarter | None = None,
) -> dict[str, Any]:
    """Log `failed` for pushes that will not be tried again on their channel: a retry execution
    that ran out of retries (`{"registration", "batch", "error"}`), or a sender invocation
    Lambda gave up on (its on-failure destination record, with the original `requestPayload`).
    A batch with another channel to try goes on to it instead (README, "Channels")."""
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
    for rid, ref in refs:
        if _record_failure(store, rid, ref, backend=backend, reason=reason, now=now, slots=slots):
            logged += 1
    metrics.push(backend, Outcome.FAILED.value, logged)
    return {"outcome": Outcome.FAILED.value, "logged": logged}


def _record_failure(
    store: RecordStore,
    rid: str,
    ref: str,
    *,
    backend: str,
    reason: str,
    now: float,
    slots: SlotStarter | None,
) -> bool:
    sk, channel = parse_channel_ref(ref)
    sk, on_channel = parse_on_channel_ref(sk)
    registration, batch = store.read_batch(rid, sk)
    if registration is None or batch is None or (channel is None and batch.chs is None):
        # A registration of one channel (or gone): the batch's outcome, as always.
        return store.finish_batch(
            rid, sk, token=None, outcome=Outcome.FAILED, reason=reason, now=now
        )
    if channel is None and not _failed_here(batch, backend, on_channel):
        return False  # ended, or moved on to another channel meanwhile
    claim = Claimed(registration, batch, "", channel)
    conclude(
        store,
        claim,
        Attempt(Outcome.FAILED, reason),
        backend=backend or batch.backend,
        clock=lambda: now,
        slots=slots,
        token=None,
    )
    return True


def _failed_here(batch: BatchItem, backend: str, on_channel: int | None) -> bool:
    """Whether a failure record is about the channel the batch is on: a retry execution's
    (`<sk>@<channel>`) only while the batch is still on that channel; a sender invocation's only
    while the batch is on that sender's backend. Either only before the batch has ended or
    moved on: a record that comes twice, or late, changes nothing."""
    if on_channel is not None:
        return batch.ch == on_channel and batch.st in (OpenState.SENDING, OpenState.RETRYING)
    if not backend:
        return batch.st == OpenState.RETRYING
    return batch.backend == backend and batch.st in (OpenState.OPEN, OpenState.SENDING)


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
