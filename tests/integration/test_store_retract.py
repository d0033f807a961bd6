"""The store's side of a retraction (moto): what a read writes (at most two write units, none when
nothing was delivered since the last retraction), and what the sender reads back."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from mxpush import delivery, wiring
from mxpush.backends.base import Delivered, SendResult
from mxpush.backends.ntfy import NtfyBackend
from mxpush.errors import TransientDeliveryError
from mxpush.events import EventSummary
from mxpush.ids import registration_id
from mxpush.model import Outcome, Registration, RegistrationOptions
from mxpush.outbound import OutboundHttp
from mxpush.retraction import MAX_RETRACT_ROOMS, Retraction
from mxpush.store import Claimed, DynamoStore, NothingPending
from mxpush.store.models import BatchItem, item_size
from mxpush.store.notify_side import Cancelled
from mxpush.store.raw import deserialize_item
from mxpush.urlsafety import TargetPolicy
from mxpush_local.gateway import LocalGateway

DM_ROOM = "!YIkXvNfjndhc9gq49pm2feQdKxlW4LZTdsnotiA5TMg"


@pytest.fixture
def store(gateway: LocalGateway) -> DynamoStore:
    return wiring.store()


class Writes:
    """The write requests a store makes, each with the write units AWS bills for it (1 per
    started KB of the larger of the item before and after)."""

    def __init__(self, store: DynamoStore) -> None:
        self.store = store
        self.operations: list[str] = []
        self.units: list[int] = []

    def record(self, operation: str, kwargs: dict[str, Any], call: Any) -> Any:
        self.operations.append(operation)
        if operation not in ("PutItem", "UpdateItem"):
            return call(operation, **kwargs)
        key = kwargs.get("Key") or {k: kwargs["Item"][k] for k in ("rid", "sk")}

        def read() -> dict[str, Any]:
            found = call("GetItem", Key=key, ConsistentRead=True).get("Item")
            return deserialize_item(found)

        before = read()
        result = call(operation, **kwargs)
        size = max(item_size(before), item_size(read()))
        self.units.append(math.ceil(size / 1024))
        return result


@pytest.fixture
def writes(store: DynamoStore, monkeypatch: pytest.MonkeyPatch) -> Iterator[Writes]:
    recorder = Writes(store)
    original = store._call

    def counting(operation: str, **kwargs: Any) -> Any:
        return recorder.record(operation, kwargs, original)

    monkeypatch.setattr(store, "_call", counting)
    yield recorder


def registration(store: DynamoStore, **options: Any) -> Registration:
    pushkey = f"retract-{uuid.uuid4().hex}"
    made = Registration(
        rid=registration_id(pushkey),
        pushkey=pushkey,
        backend="ntfy",
        target={"url": "https://ntfy.example.org/bob"},
        app_id="org.mxpush.ntfy",
        owner="operator",
        created_at=time.time(),
        delay_seconds=60,
        options=RegistrationOptions(**options),
    )
    store.create_registration(made)
    return made


def event(n: int, room: str = DM_ROOM, body: str = "see you at five?") -> EventSummary:
    return EventSummary(
        event_id=f"$event{n}-{uuid.uuid4().hex[:6]}",
        room_id=room,
        type="m.room.message",
        sender="@alice:localhost",
        sender_name="alice",
        msgtype="m.text",
        body=body,
        unread=1,
    )


def deliver(store: DynamoStore, rid: str, summary: EventSummary, ref: str | None = None) -> None:
    """A push that went out: accepted at once, claimed, finished `delivered`."""
    opened = store.accept_event(rid, summary, now=time.time(), immediate=True, default_delay=0)
    batch: BatchItem = opened.batch  # type: ignore[union-attr]
    claim = store.claim_batch(rid, batch.sk, now=time.time())
    assert isinstance(claim, Claimed)
    store.finish_batch(
        rid,
        batch.sk,
        token=claim.token,
        outcome=Outcome.DELIVERED,
        reason=None,
        now=time.time(),
        ref=ref,
    )


def test_read_with_nothing_delivered_writes_nothing(store: DynamoStore, writes: Writes) -> None:
    reg = registration(store)

    result = store.cancel_pending(reg.rid, unread=0, now=time.time())

    assert result == NothingPending(None)
    assert writes.operations == ["Query"]


def test_read_after_a_delivered_push_writes_one_small_retract_item(
    store: DynamoStore, writes: Writes
) -> None:
    reg = registration(store)
    deliver(store, reg.rid, event(1), ref="17")
    writes.operations.clear()
    writes.units.clear()

    result = store.cancel_pending(reg.rid, unread=0, now=time.time())

    assert isinstance(result, NothingPending) and result.retract is not None
    assert result.retract.is_retract and result.retract.immediate
    assert writes.operations == ["Query", "PutItem"]
    assert writes.units == [1]
    # A second read before anything new is delivered: nothing more to take back.
    writes.operations.clear()
    assert store.cancel_pending(reg.rid, unread=0, now=time.time()) == NothingPending(None)
    assert writes.operations == ["Query"]


def test_read_that_cancels_and_retracts_costs_at_most_two_write_units(
    store: DynamoStore, writes: Writes
) -> None:
    reg = registration(store)
    deliver(store, reg.rid, event(1))
    store.accept_event(reg.rid, event(2), now=time.time(), immediate=False, default_delay=60)
    writes.operations.clear()
    writes.units.clear()

    result = store.cancel_pending(reg.rid, unread=0, now=time.time())

    assert isinstance(result, Cancelled) and result.retract is not None
    assert writes.operations == ["Query", "PutItem", "UpdateItem"]
    assert writes.units == [1, 1]


def test_the_retract_item_adds_one_write_unit_to_any_cancel(
    store: DynamoStore, writes: Writes
) -> None:
    """A cancel costs what the batch weighs (a burst of long messages: up to two units, as
    before retraction existed); the retract item adds one."""
    reg = registration(store)
    deliver(store, reg.rid, event(1))
    now = time.time()
    for n in range(2, 6):
        store.accept_event(
            reg.rid, event(n, body="x" * 200), now=now, immediate=False, default_delay=60
        )
    writes.operations.clear()
    writes.units.clear()

    result = store.cancel_pending(reg.rid, unread=0, now=time.time())

    assert isinstance(result, Cancelled) and result.retract is not None
    put, cancel = writes.units
    assert put == 1 and cancel <= 2


def test_lower_nonzero_unread_or_retract_false_opens_nothing(
    store: DynamoStore, writes: Writes
) -> None:
    kept = registration(store, retract=False)
    deliver(store, kept.rid, event(1))
    counted = registration(store)
    deliver(store, counted.rid, event(2))
    writes.operations.clear()

    assert store.cancel_pending(kept.rid, unread=0, now=time.time()) == NothingPending(None)
    assert store.cancel_pending(counted.rid, unread=1, now=time.time()) == NothingPending(None)
    assert writes.operations == ["Query", "Query"]


def test_the_sender_reads_back_to_the_previous_retraction(store: DynamoStore) -> None:
    reg = registration(store)
    deliver(store, reg.rid, event(1), ref="1")
    first = store.cancel_pending(reg.rid, unread=0, now=time.time()).retract  # type: ignore[union-attr]
    assert first is not None
    claim = store.claim_batch(reg.rid, first.sk, now=time.time())
    assert isinstance(claim, Claimed)
    assert [b.ref for b in store.delivered_before(reg.rid, first.sk, now=time.time())] == ["1"]
    store.finish_batch(
        reg.rid,
        first.sk,
        token=claim.token,
        outcome=Outcome.RETRACTED,
        reason=None,
        now=time.time(),
        rooms=[DM_ROOM],
    )
    deliver(store, reg.rid, event(2), ref="2")
    deliver(store, reg.rid, event(3, "!other:localhost"), ref="3")

    second = store.cancel_pending(reg.rid, unread=0, now=time.time()).retract  # type: ignore[union-attr]
    assert second is not None

    found = store.delivered_before(reg.rid, second.sk, now=time.time())
    assert [b.ref for b in found] == ["3", "2"]  # newest first, not past the first retraction
    [logged] = [r for r in store.list_deliveries(reg.rid, now=time.time()) if r.kind == "retract"]
    assert (logged.outcome, logged.rooms) == (Outcome.RETRACTED, (DM_ROOM,))


def test_a_failed_retraction_is_covered_by_the_next(store: DynamoStore) -> None:
    reg = registration(store)
    deliver(store, reg.rid, event(1), ref="1")
    first = store.cancel_pending(reg.rid, unread=0, now=time.time()).retract  # type: ignore[union-attr]
    assert first is not None
    store.finish_batch(
        reg.rid, first.sk, token=None, outcome=Outcome.FAILED, reason="gave up", now=time.time()
    )

    second = store.cancel_pending(reg.rid, unread=0, now=time.time()).retract  # type: ignore[union-attr]

    assert second is not None
    assert [b.ref for b in store.delivered_before(reg.rid, second.sk, now=time.time())] == ["1"]


def test_the_read_back_is_bounded_by_rooms(store: DynamoStore) -> None:
    reg = registration(store)
    for n in range(MAX_RETRACT_ROOMS + 5):
        deliver(store, reg.rid, event(n, f"!room{n}:localhost"))
    retract = store.cancel_pending(reg.rid, unread=0, now=time.time()).retract  # type: ignore[union-attr]
    assert retract is not None

    found = store.delivered_before(reg.rid, retract.sk, now=time.time())

    assert len(found) == MAX_RETRACT_ROOMS


class RecordingBackend(NtfyBackend):
    def __init__(self) -> None:
        self.retracted: list[Retraction] = []

    def retract(self, retraction: Retraction, target: Any, options: Any, http: Any) -> SendResult:
        self.retracted.append(retraction)
        return Delivered()


def test_a_push_on_its_way_at_the_read_makes_the_retraction_wait_for_it(
    store: DynamoStore,
) -> None:
    reg = registration(store)
    deliver(store, reg.rid, event(1))
    opened = store.accept_event(reg.rid, event(2), now=time.time(), immediate=True, default_delay=0)
    on_its_way = store.claim_batch(reg.rid, opened.batch.sk, now=time.time())  # type: ignore[union-attr]
    assert isinstance(on_its_way, Claimed)
    retract = store.cancel_pending(reg.rid, unread=0, now=time.time()).retract  # type: ignore[union-attr]
    assert retract is not None
    claim = store.claim_batch(reg.rid, retract.sk, now=time.time())
    assert isinstance(claim, Claimed)
    backend = RecordingBackend()
    http = OutboundHttp(TargetPolicy(allow_private=True))

    waiting = delivery.retract(claim, backend, http, store=store, now=time.time())

    assert waiting.outcome is None and isinstance(waiting.error, TransientDeliveryError)
    assert backend.retracted == []
    store.finish_batch(
        reg.rid,
        on_its_way.batch.sk,
        token=on_its_way.token,
        outcome=Outcome.DELIVERED,
        reason=None,
        now=time.time(),
    )
    done = delivery.retract(claim, backend, http, store=store, now=time.time())
    assert done.outcome is Outcome.RETRACTED and done.rooms == (DM_ROOM,)
    [retraction] = backend.retracted
    assert len(retraction.pushes) == 2 and retraction.keys == [DM_ROOM]
