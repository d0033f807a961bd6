"""The channel engine against the DynamoDB store (moto), driven step by step: what the record
function does when a channel runs out of retries, per-channel claims of a fan-out, the sweep's
check of per-channel and moved batches, and a registration of one channel left as it was."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from mxpush import wiring
from mxpush.delivery import Attempt, _untaken, conclude, record_outcome
from mxpush.events import EventSummary
from mxpush.ids import new_pushkey, registration_id
from mxpush.model import Channel, Mode, Outcome, Registration, Status
from mxpush.store import Claimed, DynamoStore, Opened, Skipped, SlotState
from mxpush.store.models import (
    DueEntry,
    OpenState,
    channel_ref,
    on_channel_ref,
    parse_channel_ref,
)
from mxpush_local.gateway import LocalGateway

GOTIFY = {"url": "http://127.0.0.1:1", "token": "AppToken.Valid1"}
NTFY = {"url": "http://127.0.0.1:2/topic_x"}
HOOK = {"url": "http://127.0.0.1:3/hook"}


@dataclass
class Slots:
    started: list[int] = field(default_factory=list)

    def start_slot(self, slot: int) -> None:
        self.started.append(slot)


@pytest.fixture
def store(gateway: LocalGateway) -> Iterator[DynamoStore]:
    """The gateway's store. These tests write slot markers without starting executions, and
    leave batches pending: when they end, their slots are marked unstarted (the next batch of
    such a slot starts it, as after a failed StartExecution) and their batches cancelled, so
    that no later test's batch waits in a slot nobody runs."""
    store = wiring.store()
    since = int(time.time())
    yield store
    now = time.time()
    for marker in store.slot_markers(since - 1, int(now) + 120):
        if marker.st == SlotState.STARTED:
            for entry in store.due_entries(marker.slot):
                sk = parse_channel_ref(entry.sk)[0]
                store.finish_batch(
                    entry.rid, sk, token=None, outcome=Outcome.CANCELLED, reason="test", now=now
                )
            store.set_slot_state(marker.slot, SlotState.UNSTARTED)


def register(store: DynamoStore, *more: Channel, mode: Mode = Mode.FALLBACK) -> Registration:
    pushkey = new_pushkey()
    registration = Registration(
        rid=registration_id(pushkey),
        pushkey=pushkey,
        backend="gotify",
        target=dict(GOTIFY),
        app_id="org.mxpush.gotify",
        owner=f"@engine-{uuid.uuid4().hex[:8]}:localhost",
        created_at=time.time(),
        delay_seconds=60,
        more_channels=more,
        mode=mode,
    )
    store.create_registration(registration)
    return registration


def open_batch(store: DynamoStore, registration: Registration) -> Any:
    event = EventSummary(event_id=f"$e-{uuid.uuid4().hex[:8]}", room_id="!room:localhost")
    result = store.accept_event(
        registration.rid, event, now=time.time(), immediate=False, default_delay=60
    )
    assert isinstance(result, Opened)
    return result.batch


def test_a_fallback_chain_starts_on_its_first_channel_that_is_not_rejected(
    store: DynamoStore,
) -> None:
    registration = register(store, Channel("ntfy", NTFY), Channel("webhook", HOOK))
    store.reject_channel(registration.rid, 0, reason="401", now=time.time())
    batch = open_batch(store, registration)
    assert (batch.ch, batch.backend, batch.chs, batch.fan) == (1, "ntfy", {}, None)
    stored = store.get_registration(registration.rid)
    assert stored is not None and stored.status is Status.ACTIVE
    assert stored.channel_rejected(0) and not stored.channel_rejected(1)


def test_retries_exhausted_on_a_channel_hand_the_batch_to_the_next(store: DynamoStore) -> None:
    registration = register(store, Channel("ntfy", NTFY))
    batch = open_batch(store, registration)
    claim = store.claim_batch(registration.rid, batch.sk, now=time.time(), backend="gotify")
    assert isinstance(claim, Claimed)
    store.hand_to_retry(registration.rid, batch.sk, token=claim.token, reason="503")
    slots = Slots()

    answer = record_outcome(
        {
            "registration": registration.rid,
            "batch": on_channel_ref(batch.sk, 0),  # as the retry execution's input names it
            "error": {"Error": "TransientDeliveryError", "Cause": '{"errorMessage": "503"}'},
        },
        store=store,
        now=time.time(),
        slots=slots,
    )

    assert answer["logged"] == 1
    moved = store._get_batch(registration.rid, batch.sk)
    assert moved is not None
    assert (moved.st, moved.ch, moved.backend) == (OpenState.OPEN, 1, "ntfy")
    assert moved.channel_state(0)["st"] == Outcome.FAILED.value
    assert "gave up after retries" in moved.channel_state(0)["r"]
    assert moved.due <= math.ceil(time.time()) + 1
    # In the next slot: its marker (which carries it) and an execution, or a due entry.
    [entry] = [e for e in store.due_entries(moved.due) if e.rid == registration.rid]
    assert entry == DueEntry(registration.rid, batch.sk, "ntfy", moved.due)
    # A stale due entry of the first channel no longer takes it.
    stale = store.claim_batch(registration.rid, batch.sk, now=time.time(), backend="gotify")
    assert isinstance(stale, Skipped)
    # Nor a retry of the first channel's, nor a second record of its failure.
    late = store.claim_batch(registration.rid, batch.sk, now=time.time(), retry=True, on_channel=0)
    assert isinstance(late, Skipped)
    for ref in (batch.sk, on_channel_ref(batch.sk, 0)):
        assert (
            record_outcome(
                {"registration": registration.rid, "batch": ref, "error": None},
                store=store,
                now=time.time(),
                slots=slots,
            )["logged"]
            == 0
        )


def test_the_last_channel_failing_fails_the_batch(store: DynamoStore) -> None:
    registration = register(store, Channel("ntfy", NTFY))
    batch = open_batch(store, registration)
    claim = store.claim_batch(registration.rid, batch.sk, now=time.time(), backend="gotify")
    assert isinstance(claim, Claimed)
    conclude(
        store,
        claim,
        Attempt(Outcome.FAILED, "400"),
        backend="gotify",
        clock=time.time,
        slots=Slots(),
    )
    claim = store.claim_batch(registration.rid, batch.sk, now=time.time(), backend="ntfy")
    assert isinstance(claim, Claimed) and claim.index == 1
    conclude(
        store, claim, Attempt(Outcome.FAILED, "413"), backend="ntfy", clock=time.time, slots=None
    )
    done = store._get_batch(registration.rid, batch.sk)
    assert done is not None and done.st == Outcome.FAILED.value
    [record] = store.list_deliveries(registration.rid, now=time.time())
    assert [(c["channel"], c["outcome"]) for c in record.channels] == [(0, "failed"), (1, "failed")]


def test_a_fan_out_is_claimed_per_channel(store: DynamoStore) -> None:
    registration = register(store, Channel("ntfy", NTFY), Channel("webhook", HOOK), mode=Mode.ALL)
    batch = open_batch(store, registration)
    assert batch.fan == {"0": "gotify", "1": "ntfy", "2": "webhook"}
    store.claim_slot_start(batch.due, batch)  # what the notify path does next
    entries = [e for e in store.due_entries(batch.due) if e.rid == registration.rid]
    assert sorted(e.sk for e in entries) == sorted(channel_ref(batch.sk, i) for i in range(3))
    now = time.time()
    first = store.claim_batch(registration.rid, batch.sk, now=now, channel=0)
    again = store.claim_batch(registration.rid, batch.sk, now=now, channel=0)
    second = store.claim_batch(registration.rid, batch.sk, now=now, channel=1)
    assert isinstance(first, Claimed) and isinstance(second, Claimed)
    assert isinstance(again, Skipped)
    # Some channel took it: a read no longer cancels it.
    assert store.read_pushkey(registration.rid).open_batch is None
    # Channel 2 was never taken: the sweep hands it over again; 0 and 1 are held.
    left = _untaken(entries, store, now)
    assert [e.sk for e in left] == [channel_ref(batch.sk, 2)]

    conclude(
        store, first, Attempt(Outcome.DELIVERED), backend="gotify", clock=time.time, slots=None
    )
    store.hand_to_retry(registration.rid, batch.sk, token=second.token, reason="503", channel=1)
    # Channel 1 ran out of retries (the record function, by its channel reference).
    record_outcome(
        {"registration": registration.rid, "batch": channel_ref(batch.sk, 1), "error": None},
        store=store,
        now=time.time(),
    )
    pending = store._get_batch(registration.rid, batch.sk)
    assert pending is not None and pending.st == OpenState.SENDING
    third = store.claim_batch(registration.rid, batch.sk, now=time.time(), channel=2)
    assert isinstance(third, Claimed)
    conclude(
        store,
        third,
        Attempt(Outcome.REJECTED, "410"),
        backend="webhook",
        clock=time.time,
        slots=None,
    )
    done = store._get_batch(registration.rid, batch.sk)
    assert done is not None and done.st == Outcome.DELIVERED.value
    assert {i: done.channel_state(i)["st"] for i in range(3)} == {
        0: "delivered",
        1: "failed",
        2: "rejected",
    }
    stored = store.get_registration(registration.rid)
    assert stored is not None and stored.status is Status.ACTIVE and stored.channel_rejected(2)


def test_every_channel_rejected_rejects_the_registration(store: DynamoStore) -> None:
    registration = register(store, Channel("ntfy", NTFY))
    assert not store.reject_channel(registration.rid, 1, reason="401", now=time.time())
    assert store.reject_channel(registration.rid, 0, reason="403", now=time.time())
    stored = store.get_registration(registration.rid)
    assert stored is not None and stored.status is Status.REJECTED
    assert stored.status_reason == "every channel rejected (last: 403)"


def test_rejecting_a_backend_rejects_only_its_channels(store: DynamoStore) -> None:
    """What an email unsubscribe does (by backend): the other channels go on."""
    registration = register(store, Channel("ntfy", NTFY), Channel("webhook", HOOK))
    assert not store.reject_backend_channels(
        registration.rid, "ntfy", reason="unsubscribed", now=time.time()
    )
    stored = store.get_registration(registration.rid)
    assert stored is not None and stored.status is Status.ACTIVE
    assert [stored.channel_rejected(i) for i in range(3)] == [False, True, False]
    single = register(store)
    assert not store.reject_backend_channels(single.rid, "ntfy", reason="x", now=time.time())
    assert store.reject_backend_channels(single.rid, "gotify", reason="x", now=time.time())
    stored = store.get_registration(single.rid)
    assert stored is not None and stored.status is Status.REJECTED


def claimed_batch(store: DynamoStore, registration: Registration, unread: int) -> Claimed:
    event = EventSummary(
        event_id=f"$e-{uuid.uuid4().hex[:8]}", room_id="!r:localhost", unread=unread
    )
    opened = store.accept_event(
        registration.rid, event, now=time.time(), immediate=True, default_delay=0
    )
    assert isinstance(opened, Opened)
    claim = store.claim_batch(registration.rid, opened.batch.sk, now=time.time(), backend="gotify")
    assert isinstance(claim, Claimed)
    return claim


def test_a_read_keeps_the_lowest_unread_count_on_a_batch_being_sent(store: DynamoStore) -> None:
    registration = register(store, Channel("ntfy", NTFY, after_seconds=60))
    claim = claimed_batch(store, registration, unread=3)
    rid, sk = registration.rid, claim.batch.sk

    def mark() -> int | None:
        batch = store._get_batch(rid, sk)
        assert batch is not None and batch.st == OpenState.SENDING
        return batch.rd

    store.cancel_pending(rid, unread=3, now=time.time())
    assert mark() is None  # as many unread as when it was queued: not a read of it
    store.cancel_pending(rid, unread=1, now=time.time())
    assert mark() == 1
    store.cancel_pending(rid, unread=2, now=time.time())
    assert mark() == 1
    store.cancel_pending(rid, unread=0, now=time.time())
    assert mark() == 0


def test_a_read_that_races_the_move_to_the_escalation_still_ends_it(
    store: DynamoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read sees the batch `sending`; before its mark is written the sender moves the batch
    to its escalation (`waiting`). The mark's condition fails, the read looks again and ends the
    escalation as it ends any waiting one."""
    registration = register(store, Channel("ntfy", NTFY, after_seconds=60))
    claim = claimed_batch(store, registration, unread=1)
    mark_read = store._mark_read
    slots = Slots()

    def sender_first(batch: Any, unread: int) -> bool:
        conclude(
            store, claim, Attempt(Outcome.DELIVERED), backend="gotify", clock=time.time, slots=slots
        )
        monkeypatch.setattr(store, "_mark_read", mark_read)
        return mark_read(batch, unread)

    monkeypatch.setattr(store, "_mark_read", sender_first)
    result = store.cancel_pending(registration.rid, unread=0, now=time.time())

    assert [b.sk for b in result.escalations] == [claim.batch.sk]  # type: ignore[union-attr]
    ended = store._get_batch(registration.rid, claim.batch.sk)
    assert ended is not None and ended.st == Outcome.DELIVERED.value
    assert ended.channel_state(1)["st"] == Outcome.CANCELLED.value


def test_a_fan_out_being_sent_is_not_marked(store: DynamoStore) -> None:
    """Its channels are claimed one by one, each its own state: the read mark is for a batch
    one sender holds."""
    registration = register(store, Channel("ntfy", NTFY), mode=Mode.ALL)
    batch = open_batch(store, registration)
    claim = store.claim_batch(
        registration.rid, batch.sk, now=time.time(), channel=0, backend="gotify"
    )
    assert isinstance(claim, Claimed)
    store.cancel_pending(registration.rid, unread=0, now=time.time())
    fan_out = store._get_batch(registration.rid, batch.sk)
    assert fan_out is not None and fan_out.st == OpenState.SENDING and fan_out.rd is None
