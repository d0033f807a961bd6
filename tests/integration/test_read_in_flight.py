"""A read that comes while a push is in flight (its sender holds the batch): it cannot stop that
push, but nothing after it goes out - not the escalation due later, not the fallback channel if
the push fails, not the retry of a push that failed for now. Through local mode, with the fake
Gotify holding its answer until the read notify has been answered."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest

from mxpush_local.gateway import LocalGateway
from tests.conftest import Api, synapse_body, wait_until
from tests.fakes.gotify import FakeGotify, gotify_error
from tests.fakes.ntfy import FakeNtfy
from tests.fakes.server import Reply
from tests.fakes.smtp import FakeSmtp
from tests.integration.flow_support import outcomes, wait_for_outcome
from tests.integration.test_channels_flow import (
    DM,
    READ_ALL,
    channel_outcomes,
    gotify_channel,
    ntfy_channel,
    register_channels,
)
from tests.integration.test_metrics import moved, scrape

pytestmark = pytest.mark.slow


@pytest.fixture
def held(gotify: FakeGotify) -> Iterator[FakeGotify]:
    """The fake Gotify, answering nothing until the test releases it."""
    gotify.hold()
    yield gotify
    gotify.release()


def read_while_pushing(api: Api, gotify: FakeGotify, pushkey: str) -> None:
    """Notify a DM, and answer a read of everything while Gotify has the push unanswered."""
    assert api.notify(synapse_body(DM, pushkey)).body == {"rejected": []}
    gotify.wait_for(1, timeout=10)
    assert api.notify(synapse_body(READ_ALL, pushkey)).body == {"rejected": []}
    assert api.deliveries(pushkey) == [], "the push must still be in flight"
    gotify.release()


def test_a_read_during_the_first_push_cancels_the_escalation(
    api: Api, held: FakeGotify, smtp: FakeSmtp
) -> None:
    address = f"bob.{secrets.token_hex(4)}@example.org"
    after = 3
    email = {"backend": "email", "target": {"to": address}, "after_seconds": after}
    pushkey = register_channels(api, [gotify_channel(held), email])

    read_while_pushing(api, held, pushkey)

    # (`waiting` for a moment: the move to the email channel, then its end.)
    [entry] = wait_until(
        lambda: [e for e in api.deliveries(pushkey) if channel_outcomes(e)[-1][2] != "waiting"]
    )
    assert channel_outcomes(entry) == [(0, "gotify", "delivered"), (1, "email", "cancelled")]
    assert entry["outcome"] == "delivered"
    assert entry["channels"][1]["reason"] == "read on another device (no unread rooms left)"
    time.sleep(after + 2.0)  # past the escalation's due time
    assert smtp.to(address) == []
    assert len(held.requests) == 1


def test_a_read_during_a_push_that_fails_cancels_the_fallback(
    api: Api, held: FakeGotify, ntfy: FakeNtfy
) -> None:
    held.queue(gotify_error(400, "bad request"))
    pushkey = register_channels(api, [gotify_channel(held), ntfy_channel(ntfy)])

    read_while_pushing(api, held, pushkey)

    [entry] = wait_for_outcome(api, pushkey, "cancelled")
    assert channel_outcomes(entry) == [(0, "gotify", "failed"), (1, "ntfy", "cancelled")]
    time.sleep(2.5)  # the fallback would have been due a second after the failure
    assert ntfy.requests == []
    assert outcomes(api, pushkey) == ["cancelled"]


def test_a_read_during_a_push_that_fails_for_now_cancels_its_retry(
    gateway: LocalGateway, api: Api, held: FakeGotify
) -> None:
    held.queue(Reply(503, {"error": "Service Unavailable"}))
    pushkey = register_channels(api, [gotify_channel(held)])
    _, before = scrape(gateway)

    read_while_pushing(api, held, pushkey)

    [entry] = wait_for_outcome(api, pushkey, "cancelled", timeout=20)
    assert entry["reason"] == "read on another device (no unread rooms left)"
    time.sleep(1.0)
    assert len(held.requests) == 1  # the retry did not push
    # Counted as the notify path counts the pushes a read cancels.
    counted = moved(before, scrape(gateway)[1])
    assert counted['mxpush_pushes_total{backend="gotify",outcome="cancelled"}'] == 1


def test_a_read_that_leaves_more_unread_does_not_stop_the_escalation(
    api: Api, held: FakeGotify, ntfy: FakeNtfy
) -> None:
    after = 2
    pushkey = register_channels(
        api, [gotify_channel(held), ntfy_channel(ntfy, after_seconds=after)]
    )
    assert api.notify(synapse_body(DM, pushkey)).body == {"rejected": []}
    held.wait_for(1, timeout=10)
    # A badge update with more unread rooms than the push was queued with is no read of it.
    more_unread = synapse_body(READ_ALL, pushkey)
    more_unread["notification"]["counts"] = {"unread": 7}
    assert api.notify(more_unread).body == {"rejected": []}
    held.release()

    wait_until(lambda: ntfy.requests, timeout=after + 10)
    [entry] = api.deliveries(pushkey)
    assert channel_outcomes(entry) == [(0, "gotify", "delivered"), (1, "ntfy", "delivered")]
