"""The restart's recovery pass (local/mxpush_local/recovery.py), in process. A push is stored
but its slot execution never runs (as after a `kill -9`: executions are not kept); the table
still says the push is pending, and recovery alone must deliver it, once, not before its time.
(The session gateway runs no sweep, so nothing else would.)"""

from __future__ import annotations

import time

import pytest

from mxpush import wiring
from mxpush.errors import SchedulerUnavailable
from mxpush.ids import registration_id
from mxpush.model import Outcome
from mxpush_local.aws import REGION
from mxpush_local.recovery import pending_batches, recover
from tests.conftest import Api, synapse_body, wait_until, with_event_id
from tests.fakes.gotify import FakeGotify

pytestmark = pytest.mark.slow


def outcomes(api: Api, pushkey: str) -> list[tuple[str, str]]:
    return [(d["outcome"], d["event_id"]) for d in api.deliveries(pushkey)]


def no_slot_execution(slot: int) -> None:
    raise SchedulerUnavailable("the process died")


def end_pending_batches_but(pushkey: str) -> None:
    """Recovery takes the whole table: earlier tests' leftovers (a batch whose retry was
    stopped when its test ended) must not go to their fake servers, long gone."""
    store = wiring.store()
    for batch in pending_batches(store.table_name, REGION):
        if batch.rid != registration_id(pushkey):
            store.finish_batch(
                batch.rid,
                batch.sk,
                token=None,
                outcome=Outcome.CANCELLED,
                reason="test ended",
                now=time.time(),
            )


@pytest.mark.parametrize("kind", ["scheduled", "sent_now"])
def test_a_stored_push_without_its_slot_execution_is_delivered_once(
    api: Api, gotify: FakeGotify, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    # sent_now: overdue by the time recovery runs - yet not due before the notify has
    # answered, or notify itself would hand it to its sender (a slow, busy CI machine).
    delay = 4 if kind == "scheduled" else 3
    pushkey = api.register(gotify, delay=delay)
    body = with_event_id(synapse_body("message_dm_2_members.1.full", pushkey), "$lost")
    with monkeypatch.context() as patch:
        patch.setattr(wiring.scheduler(), "start_slot", no_slot_execution)
        accepted = time.time()
        assert api.notify(body).status == 200
    if kind == "sent_now":
        time.sleep(accepted + delay + 1.5 - time.time())  # overdue when recovery runs
        if gotify.requests:
            # A slot execution an earlier test left running for the same second took it (its
            # marker said `started`): not the scenario. (Stopping those executions strands the
            # later tests' batches that join their slots.)
            pytest.skip("the push's second had another test's slot execution")
    end_pending_batches_but(pushkey)

    report = recover(now=time.time())

    assert getattr(report, kind) >= 1
    gotify.wait_for(1, timeout=delay + 10)
    assert time.time() >= accepted + delay  # never before its time
    wait_until(lambda: outcomes(api, pushkey), timeout=10)
    time.sleep(1)  # room for a second push
    assert len(gotify.requests) == 1
    assert outcomes(api, pushkey) == [("delivered", "$lost")]
