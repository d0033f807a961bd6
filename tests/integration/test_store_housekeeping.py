"""Housekeeping under load: however many cancellations are parked in a registration item (a user
whose client marks everything read at once can stop every execution before its FlushLog), one
flush writes them all to the log and leaves the item small. Local mode enforces DynamoDB's 4 KB
expression limit, which a single UpdateItem removing them all would exceed."""

from __future__ import annotations

from typing import Any

from mxpush import wiring
from mxpush.ids import registration_id
from mxpush.store import LOG_PREFIX, MAX_RECENT, LogItem, RegistrationItem
from mxpush_local.gateway import LocalGateway
from tests.conftest import Api
from tests.fakes.gotify import FakeGotify

PARKED = 400  # ~16 bytes of expression per removal: one request would be ~6.4 KB


def unlogged(rid: str) -> dict[str, Any]:
    item = RegistrationItem.get(rid, "registration", consistent_read=True)
    value: dict[str, Any] = item.unlogged.as_dict() if item.unlogged else {}  # type: ignore[no-untyped-call]
    return value


def test_one_flush_logs_every_parked_cancellation(
    api: Api, gateway: LocalGateway, gotify: FakeGotify
) -> None:
    pushkey = api.register(gotify, delay=3600)
    rid = registration_id(pushkey)
    start_ms = 1_800_000_000_000
    # The state cancel_pending leaves behind, PARKED times over, without an execution to flush.
    item = RegistrationItem.get(rid, "registration")
    item.unlogged = {
        f"cancelled:{start_ms + i}:0": [{"id": f"$parked-{i}", "room": "!r:x", "at": 1.0, "u": 2}]
        for i in range(PARKED)
    }
    item.recent = [f"{i:016x}" for i in range(PARKED)]
    item.save()

    wiring.store().flush_unlogged(rid, now=start_ms / 1000 + PARKED)

    assert unlogged(rid) == {}
    logs = list(LogItem.query(rid, LogItem.sk.startswith(LOG_PREFIX)))
    assert len(logs) == PARKED
    assert {log.outcome for log in logs} == {"cancelled"}
    assert sorted(e["id"] for log in logs for e in log.events) == sorted(
        f"$parked-{i}" for i in range(PARKED)
    )
    trimmed = RegistrationItem.get(rid, "registration", consistent_read=True).recent
    assert trimmed == [f"{i:016x}" for i in range(PARKED - MAX_RECENT, PARKED)]


def test_a_cancellation_both_parked_and_logged_is_listed_once(
    api: Api, gateway: LocalGateway, gotify: FakeGotify
) -> None:
    """A flush writes the log before it removes the parked entry: between the two (or if it
    crashed there, until the next flush) the cancellation is in both places."""
    pushkey = api.register(gotify, delay=3600)
    rid = registration_id(pushkey)
    at_ms = 1_800_000_000_000
    item = RegistrationItem.get(rid, "registration")
    item.unlogged = {
        f"cancelled:{at_ms}:0": [{"id": "$both", "room": "!r:x", "at": 1.0, "u": 2}],
        f"cancelled:{at_ms + 1}:0": [{"id": "$parked", "room": "!r:x", "at": 1.0, "u": 2}],
    }
    item.save()
    store = wiring.store()
    [logged, _parked] = sorted(store.list_deliveries(rid, now=at_ms / 1000), key=lambda r: r.at)
    store.log_delivery(rid, logged)

    records = store.list_deliveries(rid, now=at_ms / 1000 + 1)

    assert sorted(e.event_id for r in records for e in r.events) == ["$both", "$parked"]
    assert {r.outcome.value for r in records} == {"cancelled"}
