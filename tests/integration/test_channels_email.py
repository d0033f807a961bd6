"""Email as a channel (issue 12): the late channel of an escalation, through local mode with the
session's SMTP server and through Amazon SES (moto's); an unsubscribe turns off the email
channel only."""

from __future__ import annotations

import email
import email.policy
import json
import re
import secrets
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.ses.models import ses_backends

from mxpush import wiring
from mxpush_local.aws import ACCOUNT
from tests.conftest import Api, synapse_body, wait_until
from tests.fakes.gotify import FakeGotify
from tests.fakes.smtp import FakeSmtp
from tests.integration.flow_support import wait_for_outcome
from tests.integration.test_channels_flow import (
    READ_ALL,
    channel_outcomes,
    gotify_channel,
    register_channels,
    shown,
)

pytestmark = pytest.mark.slow

DM = "message_dm_2_members.1.full"


@pytest.fixture
def address() -> str:
    return f"bob.{secrets.token_hex(4)}@example.org"


def email_channel(address: str, after: int) -> dict[str, object]:
    return {"backend": "email", "target": {"to": address}, "after_seconds": after}


def test_a_read_before_the_escalation_sends_no_email(
    api: Api, gotify: FakeGotify, smtp: FakeSmtp, address: str
) -> None:
    # The escalation is due `after` seconds after the Gotify push. It is long enough that a
    # loaded CI machine still answers the read notify well within it (3 s was not: a stalled
    # test process once sent the read after the email had gone).
    after = 8
    pushkey = register_channels(api, [gotify_channel(gotify), email_channel(address, after)])
    api.notify(synapse_body(DM, pushkey))
    gotify.wait_for(1, timeout=10)
    pushed = time.monotonic()
    # The sender records the Gotify push and schedules the escalation in one write; the read
    # comes after it (a read while the push is in flight: test_read_in_flight.py).
    [entry] = wait_for_outcome(api, pushkey, "delivered")
    assert channel_outcomes(entry) == [(0, "gotify", "delivered"), (1, "email", "waiting")]
    api.notify(synapse_body(READ_ALL, pushkey))
    assert time.monotonic() - pushed < after - 2, "the read notify came too late to test"

    def email_cancelled() -> list[dict[str, Any]]:
        entries = api.deliveries(pushkey)
        return [e for e in entries if channel_outcomes(e)[-1] == (1, "email", "cancelled")]

    [entry] = wait_until(email_cancelled, timeout=after + 10)
    time.sleep(max(0.0, pushed + after + 1.5 - time.monotonic()))  # past the escalation's due time
    assert smtp.to(address) == []
    assert channel_outcomes(entry) == [(0, "gotify", "delivered"), (1, "email", "cancelled")]
    assert len(api.deliveries(pushkey)) == 1


def test_an_unread_push_escalates_to_one_digest_email_and_unsubscribing_keeps_gotify(
    api: Api, gotify: FakeGotify, smtp: FakeSmtp, address: str
) -> None:
    pushkey = register_channels(api, [gotify_channel(gotify), email_channel(address, 2)])
    api.notify(synapse_body(DM, pushkey))
    gotify.wait_for(1, timeout=10)
    [mail] = smtp.wait_for_recipient(address)
    assert mail.message["Subject"] == "1 unread message from alice"
    [entry] = wait_for_outcome(api, pushkey, "delivered")
    entry = next(e for e in api.deliveries(pushkey) if e["channels"][-1]["outcome"] != "waiting")
    assert channel_outcomes(entry) == [(0, "gotify", "delivered"), (1, "email", "delivered")]
    time.sleep(1.5)
    assert len(smtp.to(address)) == 1

    link = re.search(r"^Unsubscribe: (\S+)$", mail.part("text/plain"), re.MULTILINE)
    assert link
    request = urllib.request.Request(
        link.group(1), data=b"List-Unsubscribe=One-Click", method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 200
        # The registration goes on with its other channel: Synapse keeps its pusher.
        assert json.loads(answer.read()) == {"unsubscribed": True, "status": "active"}
    view = shown(api, pushkey)
    assert view["status"] == "active"
    assert [c["health"]["rejected"] for c in view["channels"]] == [False, True]


@pytest.fixture
def ses_transport(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The deployed stack's transport: Amazon SES (moto's, inside local mode's mock), sending as
    a verified address; SMTP again after the test."""
    monkeypatch.setenv("MXPUSH_EMAIL_TRANSPORT", "ses")
    monkeypatch.setenv("MXPUSH_EMAIL_FROM", "push@ses.mxpush.example.org")
    wiring.settings.cache_clear()
    ses = boto3.client("sesv2", region_name=wiring.settings().region)
    ses.create_email_identity(EmailIdentity="ses.mxpush.example.org")
    try:
        yield ses_backends[ACCOUNT][wiring.settings().region]
    finally:
        monkeypatch.undo()
        wiring.settings.cache_clear()


def test_an_unread_push_escalates_to_one_digest_email_through_ses(
    api: Api, gotify: FakeGotify, ses_transport: Any, address: str
) -> None:
    pushkey = register_channels(api, [gotify_channel(gotify), email_channel(address, 2)])
    api.notify(synapse_body(DM, pushkey))
    gotify.wait_for(1, timeout=10)

    def mailed() -> list[Any]:
        return [m for m in ses_transport.sent_messages if address in m.destinations]

    [sent] = wait_until(mailed, timeout=15)
    assert sent.source == "push@ses.mxpush.example.org"
    message = email.message_from_string(sent.raw_data, policy=email.policy.default)
    assert message["Subject"] == "1 unread message from alice"
    assert message["List-Unsubscribe"].startswith("<http")
    entry = wait_until(
        lambda: [e for e in api.deliveries(pushkey) if e["channels"][-1]["outcome"] == "delivered"],
        timeout=10,
    )[0]
    assert channel_outcomes(entry) == [(0, "gotify", "delivered"), (1, "email", "delivered")]
    time.sleep(1.5)
    assert len(mailed()) == 1
