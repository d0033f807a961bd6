"""Channels through local mode (README, "Channels"): fallback chains, fan-out, escalation and
retraction on several channels, with fake Gotify, ntfy and webhook servers checking each
request, the real state machines under moto and the real handlers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from mxpush.retraction import notification_tag
from tests.conftest import (
    GOTIFY_TOKEN,
    NTFY_TOKEN,
    NTFY_TOPIC,
    Api,
    synapse_body,
    wait_until,
    with_event_id,
)
from tests.fakes.gotify import FakeGotify
from tests.fakes.ntfy import FakeNtfy
from tests.fakes.webhook import FakeWebhook
from tests.integration.flow_support import wait_for_outcome
from tests.integration.test_local_mode import free_port

pytestmark = pytest.mark.slow

TOPIC = NTFY_TOPIC
DM = "message_dm_2_members.1.full"
DM_ROOM = "!YIkXvNfjndhc9gq49pm2feQdKxlW4LZTdsnotiA5TMg"
DM_EVENT = "$9YKtqgWbvfhsr99S2R_6S66iVIWunPAkPKPnHo_e5tI"
READ_ALL = "read_receipts_all_badge.2.full"


@pytest.fixture
def hook() -> Iterator[FakeWebhook]:
    server = FakeWebhook().start()
    yield server
    server.stop()


def gotify_channel(gotify: FakeGotify | str, **extra: Any) -> dict[str, Any]:
    url = gotify if isinstance(gotify, str) else gotify.base_url
    return {"backend": "gotify", "target": {"url": url, "token": GOTIFY_TOKEN}, **extra}


def ntfy_channel(ntfy: FakeNtfy, **extra: Any) -> dict[str, Any]:
    return {
        "backend": "ntfy",
        "target": {"url": ntfy.topic_url(TOPIC), "token": NTFY_TOKEN},
        **extra,
    }


def hook_channel(hook: FakeWebhook, **extra: Any) -> dict[str, Any]:
    return {"backend": "webhook", "target": {"url": hook.hook_url}, **extra}


def register_channels(
    api: Api, channels: list[dict[str, Any]], *, mode: str | None = None, delay: int = 0
) -> str:
    body: dict[str, Any] = {"channels": channels, "delay_seconds": delay}
    if mode is not None:
        body["mode"] = mode
    answer = api.request("POST", "/api/v1/pushkeys", body)
    assert answer.status == 201, answer.body
    return str(answer.body["pushkey"])


def shown(api: Api, pushkey: str) -> dict[str, Any]:
    answer = api.request("GET", f"/api/v1/pushkeys/{quote(pushkey, safe='')}")
    assert answer.status == 200, answer.body
    return dict(answer.body)


def channel_outcomes(entry: dict[str, Any]) -> list[tuple[int, str, str]]:
    return [(c["channel"], c["backend"], c["outcome"]) for c in entry["channels"]]


def test_gotify_down_falls_back_to_ntfy_and_the_log_shows_both(api: Api, ntfy: FakeNtfy) -> None:
    down = f"http://127.0.0.1:{free_port()}/gotify"  # nothing listens: connection refused
    pushkey = register_channels(
        api, [gotify_channel(down, give_up_after_seconds=0), ntfy_channel(ntfy)]
    )
    assert api.notify(synapse_body(DM, pushkey)).body == {"rejected": []}

    [request] = ntfy.wait_for(1, timeout=15)
    assert request.json()["title"] == "alice"
    assert request.json()["message"] == "hi, this is a DM"
    [entry] = wait_for_outcome(api, pushkey, "delivered")
    assert entry["event_id"] == DM_EVENT
    assert channel_outcomes(entry) == [(0, "gotify", "failed"), (1, "ntfy", "delivered")]
    assert "gave up after 0 s" in entry["channels"][0]["reason"]
    time.sleep(1.5)
    assert len(ntfy.requests) == 1
    health = [c["health"] for c in shown(api, pushkey)["channels"]]
    assert health[0]["last_failure"]["outcome"] == "failed"
    assert health[0]["last_success"] is None
    assert health[1]["last_success"] is not None
    assert health[1]["last_failure"] is None
    assert not health[0]["rejected"]


def test_a_channel_failing_longer_than_its_give_up_time_falls_back_after_a_retry(
    api: Api, ntfy: FakeNtfy
) -> None:
    down = f"http://127.0.0.1:{free_port()}/gotify"
    pushkey = register_channels(
        api, [gotify_channel(down, give_up_after_seconds=1), ntfy_channel(ntfy)]
    )
    sent = time.monotonic()
    api.notify(synapse_body(DM, pushkey))

    ntfy.wait_for(1, timeout=20)
    # The first attempt failed; the retry execution's attempt (2 s later) found the channel
    # failing for longer than 1 s, and handed the push to ntfy instead of retrying again.
    assert 1.5 < time.monotonic() - sent < 10
    [entry] = wait_for_outcome(api, pushkey, "delivered")
    assert channel_outcomes(entry) == [(0, "gotify", "failed"), (1, "ntfy", "delivered")]
    assert "gave up after 1 s" in entry["channels"][0]["reason"]


def test_rejected_gotify_is_skipped_from_then_on_and_synapse_is_not_told(
    api: Api, gotify: FakeGotify, ntfy: FakeNtfy
) -> None:
    gotify.revoke(GOTIFY_TOKEN)  # Gotify answers 401
    pushkey = register_channels(api, [gotify_channel(gotify), ntfy_channel(ntfy)])

    assert api.notify(synapse_body(DM, pushkey)).body == {"rejected": []}
    ntfy.wait_for(1, timeout=15)
    [entry] = wait_for_outcome(api, pushkey, "delivered")
    assert channel_outcomes(entry) == [(0, "gotify", "rejected"), (1, "ntfy", "delivered")]
    assert len(gotify.requests) == 1
    view = shown(api, pushkey)
    assert view["status"] == "active"
    assert view["channels"][0]["health"]["rejected"] is True
    assert view["channels"][0]["health"]["last_failure"]["outcome"] == "rejected"
    assert view["channels"][1]["health"]["rejected"] is False

    # The next push skips Gotify altogether; Synapse is still not told `rejected`.
    second = with_event_id(synapse_body(DM, pushkey), "$second-dm")
    assert api.notify(second).body == {"rejected": []}
    ntfy.wait_for(2, timeout=15)
    entries = wait_until(
        lambda: [e for e in api.deliveries(pushkey) if e.get("event_id") == "$second-dm"]
    )
    assert channel_outcomes(entries[0]) == [(1, "ntfy", "delivered")]
    assert len(gotify.requests) == 1


def test_every_channel_rejected_rejects_the_registration(
    api: Api, gotify: FakeGotify, ntfy: FakeNtfy
) -> None:
    gotify.revoke(GOTIFY_TOKEN)
    ntfy.revoke_token(NTFY_TOKEN)
    pushkey = register_channels(api, [gotify_channel(gotify), ntfy_channel(ntfy)])

    api.notify(synapse_body(DM, pushkey))
    [entry] = wait_for_outcome(api, pushkey, "rejected")
    assert channel_outcomes(entry) == [(0, "gotify", "rejected"), (1, "ntfy", "rejected")]
    view = shown(api, pushkey)
    assert view["status"] == "rejected"
    assert [c["health"]["rejected"] for c in view["channels"]] == [True, True]
    # Now, and only now, Synapse is told.
    second = with_event_id(synapse_body(DM, pushkey), "$second-dm")
    assert api.notify(second).body == {"rejected": [pushkey]}


def test_fan_out_to_three_channels_delivers_three_times_with_three_outcomes(
    api: Api, gotify: FakeGotify, ntfy: FakeNtfy, hook: FakeWebhook
) -> None:
    pushkey = register_channels(
        api, [gotify_channel(gotify), ntfy_channel(ntfy), hook_channel(hook)], mode="all"
    )
    assert api.notify(synapse_body(DM, pushkey)).body == {"rejected": []}

    [to_gotify] = gotify.wait_for(1, timeout=15)
    [to_ntfy] = ntfy.wait_for(1, timeout=15)
    hook.wait_for(1, timeout=15)
    assert to_gotify.json()["message"] == "hi, this is a DM"
    assert to_ntfy.json()["message"] == "hi, this is a DM"
    assert hook.documents[0]["body"] == "hi, this is a DM"
    [entry] = wait_for_outcome(api, pushkey, "delivered")
    assert entry["event_id"] == DM_EVENT
    assert channel_outcomes(entry) == [
        (0, "gotify", "delivered"),
        (1, "ntfy", "delivered"),
        (2, "webhook", "delivered"),
    ]
    time.sleep(1.5)
    assert (len(gotify.requests), len(ntfy.requests), len(hook.requests)) == (1, 1, 1)


def test_fan_out_reports_each_channel_when_one_fails(
    api: Api, gotify: FakeGotify, ntfy: FakeNtfy
) -> None:
    ntfy.revoke_token(NTFY_TOKEN)
    pushkey = register_channels(api, [gotify_channel(gotify), ntfy_channel(ntfy)], mode="all")
    api.notify(synapse_body(DM, pushkey))

    [entry] = wait_for_outcome(api, pushkey, "delivered")
    assert channel_outcomes(entry) == [(0, "gotify", "delivered"), (1, "ntfy", "rejected")]
    assert shown(api, pushkey)["status"] == "active"


def test_a_read_before_the_escalation_time_sends_nothing_more(
    api: Api, gotify: FakeGotify, ntfy: FakeNtfy
) -> None:
    # Long enough that a loaded CI machine still reads well within it (see the email test).
    after = 8
    pushkey = register_channels(
        api, [gotify_channel(gotify), ntfy_channel(ntfy, after_seconds=after)]
    )
    api.notify(synapse_body(DM, pushkey))
    gotify.wait_for(1, timeout=10)
    pushed = time.monotonic()
    # Logged delivered at once; the escalation shows as waiting.
    [entry] = wait_for_outcome(api, pushkey, "delivered")
    assert channel_outcomes(entry) == [(0, "gotify", "delivered"), (1, "ntfy", "waiting")]

    assert api.notify(synapse_body(READ_ALL, pushkey)).body == {"rejected": []}
    assert time.monotonic() - pushed < after - 2, "the read notify came too late to test"
    [entry] = api.deliveries(pushkey)
    assert channel_outcomes(entry) == [(0, "gotify", "delivered"), (1, "ntfy", "cancelled")]
    time.sleep(max(0.0, pushed + after + 1.5 - time.monotonic()))  # past the escalation's slot
    assert ntfy.requests == []
    assert len(gotify.requests) == 1


def test_an_unread_push_escalates_once(api: Api, gotify: FakeGotify, ntfy: FakeNtfy) -> None:
    pushkey = register_channels(api, [gotify_channel(gotify), ntfy_channel(ntfy, after_seconds=2)])
    api.notify(synapse_body(DM, pushkey))
    gotify.wait_for(1, timeout=10)
    delivered_at = time.monotonic()

    [request] = ntfy.wait_for(1, timeout=10)
    assert time.monotonic() - delivered_at > 1.0  # it waited for after_seconds
    assert request.json()["message"] == "hi, this is a DM"
    entry = wait_until(
        lambda: [
            e
            for e in api.deliveries(pushkey)
            if e.get("channels") and e["channels"][-1]["outcome"] == "delivered"
        ]
    )[0]
    assert channel_outcomes(entry) == [(0, "gotify", "delivered"), (1, "ntfy", "delivered")]
    assert entry["outcome"] == "delivered"
    time.sleep(1.5)
    assert len(ntfy.requests) == 1
    assert len(gotify.requests) == 1


def test_a_read_retracts_on_every_channel_that_delivered(
    api: Api, ntfy: FakeNtfy, hook: FakeWebhook
) -> None:
    pushkey = register_channels(api, [ntfy_channel(ntfy), hook_channel(hook)], mode="all")
    api.notify(synapse_body(DM, pushkey))
    ntfy.wait_for(1, timeout=10)
    hook.wait_for(1, timeout=10)
    wait_for_outcome(api, pushkey, "delivered")

    api.notify(synapse_body(READ_ALL, pushkey))
    [retracted] = wait_for_outcome(api, pushkey, "retracted")
    assert retracted["room_ids"] == [DM_ROOM]
    assert sorted(channel_outcomes(retracted)) == [
        (0, "ntfy", "retracted"),
        (1, "webhook", "retracted"),
    ]
    assert ntfy.cleared == [(TOPIC, notification_tag(DM_ROOM))]
    retract_documents = [d for d in hook.documents if d.get("kind") == "retract"]
    assert len(retract_documents) == 1
    assert retract_documents[0]["room_ids"] == [DM_ROOM]


def test_a_read_retracts_only_on_the_channel_that_delivered(
    api: Api, ntfy: FakeNtfy, hook: FakeWebhook
) -> None:
    down = f"http://127.0.0.1:{free_port()}/hooks/matrix"
    pushkey = register_channels(
        api,
        [
            {"backend": "webhook", "target": {"url": down}, "give_up_after_seconds": 0},
            ntfy_channel(ntfy),
        ],
    )
    api.notify(synapse_body(DM, pushkey))
    ntfy.wait_for(1, timeout=15)
    wait_for_outcome(api, pushkey, "delivered")

    api.notify(synapse_body(READ_ALL, pushkey))
    [retracted] = wait_for_outcome(api, pushkey, "retracted")
    assert channel_outcomes(retracted) == [(1, "ntfy", "retracted")]
    assert ntfy.cleared == [(TOPIC, notification_tag(DM_ROOM))]
    assert hook.requests == []


def test_channel_answers_are_as_documented(
    api: Api, gateway: Any, gotify: FakeGotify, ntfy: FakeNtfy
) -> None:
    """The registration and its log with channels (health, per-channel outcomes, a waiting
    escalation), checked against the OpenAPI document."""
    from tests.integration.test_openapi import checks, schema

    gotify.revoke(GOTIFY_TOKEN)
    pushkey = register_channels(
        api, [gotify_channel(gotify), ntfy_channel(ntfy), ntfy_channel(ntfy, after_seconds=60)]
    )
    api.notify(synapse_body(DM, pushkey))
    ntfy.wait_for(1, timeout=15)
    wait_for_outcome(api, pushkey, "delivered")
    one = "/api/v1/pushkeys/{pushkey}"
    for path in (one, one + "/deliveries"):
        case = schema[path]["GET"].Case(path_parameters={"pushkey": pushkey})
        answer = case.call_and_validate(
            base_url=gateway.url,
            headers={"Authorization": "Bearer test-admin-token"},
            checks=checks(),
        )
        assert answer.status_code == 200
    [entry] = api.deliveries(pushkey)
    assert channel_outcomes(entry) == [
        (0, "gotify", "rejected"),
        (1, "ntfy", "delivered"),
        (2, "ntfy", "waiting"),
    ]
