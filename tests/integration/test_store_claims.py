"""Claims in the DynamoDB store (moto): at most one registration per owner, backend and claim
value (an Acrobits selector), found with one GetItem and updated with one UpdateItem."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import pytest

from mxpush import wiring
from mxpush.ids import new_pushkey, registration_id
from mxpush.model import Registration, Status
from mxpush.store import ClaimItem, ClaimTaken, DynamoStore, RegistrationItem, claim_id
from mxpush_local.gateway import LocalGateway
from tests.conftest import count_aws_calls

TARGET = {
    "device_token": "TokenMsgs1",
    "app_id": "com.cloudsoftphone.app",
    "selector": "SEL",
    "url": "https://pnm.cloudsoftphone.com/pnm2/send",
    "calls_device_token": "TokenCalls1",
    "calls_app_id": "com.cloudsoftphone.app.pushkit",
}


@pytest.fixture
def store(gateway: LocalGateway) -> DynamoStore:
    return wiring.store()


@pytest.fixture
def owner() -> str:
    """An owner of this test's own: the table is shared with the other tests."""
    return f"@claims-{uuid.uuid4().hex[:8]}:localhost"


def registration(owner: str, claim: str | None = "SEL", **changes: Any) -> Registration:
    pushkey = new_pushkey()
    base = Registration(
        rid=registration_id(pushkey),
        pushkey=pushkey,
        backend="acrobits",
        target=dict(TARGET),
        app_id="com.cloudsoftphone.app",
        owner=owner,
        created_at=1000.0,
        claim=claim,
    )
    return replace(base, **changes)


def test_a_claimed_registration_is_found_with_one_get(store: DynamoStore, owner: str) -> None:
    first = registration(owner)
    store.create_registration(first)

    with count_aws_calls() as calls:
        found = store.find_claimed("acrobits", owner, "SEL")

    assert found == first.rid
    assert calls.calls == ["GetItem"]
    stored = store.get_registration(first.rid)
    assert stored is not None and stored.claim == "SEL"
    assert store.find_claimed("acrobits", owner, "OTHER") is None
    assert store.find_claimed("gotify", owner, "SEL") is None
    assert store.find_claimed("acrobits", "@someone-else:localhost", "SEL") is None


def test_a_second_registration_with_the_same_claim_is_refused(
    store: DynamoStore, owner: str
) -> None:
    first = registration(owner)
    store.create_registration(first)
    second = registration(owner)

    with pytest.raises(ClaimTaken):
        store.create_registration(second)

    assert store.get_registration(second.rid) is None  # nothing half-written
    assert store.find_claimed("acrobits", owner, "SEL") == first.rid
    # Other owners, other values, and unclaimed registrations are not affected.
    store.create_registration(registration(f"{owner}-other"))
    store.create_registration(registration(owner, claim="SEL2"))
    store.create_registration(registration(owner, claim=None))
    store.create_registration(registration(owner, claim=None))
    assert len(store.list_registrations(owner)) == 4


def test_claim_items_stay_out_of_listings(store: DynamoStore, owner: str) -> None:
    store.create_registration(registration(owner))

    everything = store.list_registrations(None)

    assert all(not r.rid.startswith("claim#") for r in everything)
    assert [r.owner for r in store.list_registrations(owner)] == [owner]


def test_update_target_replaces_tokens_and_reactivates_in_one_call(
    store: DynamoStore, owner: str
) -> None:
    first = registration(owner)
    store.create_registration(first)
    store.mark_rejected(first.rid, reason="PNM answered code 404", now=2000.0)

    with count_aws_calls() as calls:
        updated = store.update_target(
            first.rid,
            claim="SEL",
            set_fields={"device_token": "TokenMsgs2", "app_id": "com.cloudsoftphone.app"},
            remove_fields=["calls_device_token", "calls_app_id"],
            pusher_registered=True,
        )

    assert calls.calls == ["UpdateItem"]
    assert updated is not None
    assert updated.target == {
        "device_token": "TokenMsgs2",
        "app_id": "com.cloudsoftphone.app",
        "selector": "SEL",
        "url": "https://pnm.cloudsoftphone.com/pnm2/send",
    }
    assert (updated.status, updated.status_reason, updated.status_at) == (Status.ACTIVE, None, None)
    assert updated.pusher_registered is True
    assert (updated.pushkey, updated.owner, updated.claim) == (first.pushkey, owner, "SEL")
    assert store.get_registration(first.rid) == updated


def test_update_target_of_a_deleted_registration_changes_nothing(
    store: DynamoStore, owner: str
) -> None:
    first = registration(owner)
    store.create_registration(first)
    store.delete_registration(first.rid)

    result = store.update_target(first.rid, claim="SEL", set_fields={"device_token": "X"})

    assert result is None
    assert store.get_registration(first.rid) is None  # not resurrected as a stub


def test_deleting_a_registration_frees_its_claim(store: DynamoStore, owner: str) -> None:
    first = registration(owner)
    store.create_registration(first)

    store.delete_registration(first.rid)

    assert store.find_claimed("acrobits", owner, "SEL") is None
    second = registration(owner)
    store.create_registration(second)
    assert store.find_claimed("acrobits", owner, "SEL") == second.rid


def test_a_claim_left_by_an_interrupted_delete_can_be_released(
    store: DynamoStore, owner: str
) -> None:
    first = registration(owner)
    store.create_registration(first)
    # The registration item is gone but its claim item was not removed.
    RegistrationItem(rid=first.rid, sk="registration").delete()
    assert store.find_claimed("acrobits", owner, "SEL") == first.rid
    assert store.update_target(first.rid, claim="SEL", set_fields={"app_id": "x"}) is None

    store.release_claim("acrobits", owner, "SEL", first.rid)

    assert store.find_claimed("acrobits", owner, "SEL") is None
    store.create_registration(registration(owner))


def test_release_claim_never_frees_another_registrations_claim(
    store: DynamoStore, owner: str
) -> None:
    first = registration(owner)
    store.create_registration(first)

    store.release_claim("acrobits", owner, "SEL", "some-other-rid")

    assert store.find_claimed("acrobits", owner, "SEL") == first.rid
    item = ClaimItem.get(claim_id("acrobits", owner, "SEL"), "claim")
    assert item.registration == first.rid
