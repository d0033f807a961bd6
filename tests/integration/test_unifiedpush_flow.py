"""UnifiedPush through local mode: a registered endpoint, and stateless forwarding of pushkeys
that are endpoint URLs (no registration), with delay, cancel and rejection still applying."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mxpush import wiring
from mxpush.implicit import ImplicitRegistrations
from mxpush_local.gateway import LocalGateway
from tests.conftest import Api, count_aws_calls, synapse_body, wait_until, with_event_id
from tests.fakes.server import Reply
from tests.fakes.unifiedpush import FakeDistributor

pytestmark = pytest.mark.slow
UP_APP = "im.vector.app.android"
DM = "message_dm_2_members.1.full"


@pytest.fixture
def distributor() -> Iterator[FakeDistributor]:
    server = FakeDistributor().start()
    yield server
    server.stop()


@pytest.fixture
def stateless(monkeypatch: pytest.MonkeyPatch) -> ImplicitRegistrations:
    """What an operator sets with MXPUSH_UNIFIEDPUSH_APP_IDS / _HOSTS (local mode allows http)."""
    policy = ImplicitRegistrations(
        app_id_patterns=("im.vector.app.*",), hosts=("127.0.0.1",), allow_http=True
    )
    monkeypatch.setattr(wiring, "implicit_registrations", lambda: policy)
    return policy


def up_body(name: str, endpoint: str, app_id: str = UP_APP) -> dict[str, Any]:
    body = synapse_body(name, endpoint)
    body["notification"]["devices"][0]["app_id"] = app_id
    return body


def register(api: Api, endpoint: str, delay: int = 0) -> str:
    answer = api.request(
        "POST",
        "/api/v1/pushkeys",
        {"backend": "unifiedpush", "target": {"endpoint": endpoint}, "delay_seconds": delay},
    )
    assert answer.status == 201, answer.body
    return str(answer.body["pushkey"])


def test_registered_endpoint_gets_the_notification(api: Api, distributor: FakeDistributor) -> None:
    endpoint = distributor.new_endpoint()
    pushkey = register(api, endpoint)
    assert api.notify(synapse_body(DM, pushkey)).body == {"rejected": []}
    [request] = distributor.wait_for(1)
    assert request.path == endpoint.removeprefix(distributor.url)
    notification = request.json()["notification"]
    assert notification["event_id"] == "$9YKtqgWbvfhsr99S2R_6S66iVIWunPAkPKPnHo_e5tI"
    assert notification["counts"] == {"unread": 2}
    assert "devices" not in notification
    shown = api.request("GET", f"/api/v1/pushkeys/{pushkey}").body
    assert endpoint not in json.dumps(shown)  # the endpoint is the client's secret


def test_gone_endpoint_rejects_the_pushkey_next_time(
    api: Api, distributor: FakeDistributor
) -> None:
    endpoint = distributor.new_endpoint()
    pushkey = register(api, endpoint)
    distributor.unregister(endpoint)
    api.notify(synapse_body(DM, pushkey))
    wait_until(
        lambda: api.request("GET", f"/api/v1/pushkeys/{pushkey}").body["status"] == "rejected"
    )
    answer = api.notify(synapse_body("message_group_3_members.1.full", pushkey))
    assert answer.body == {"rejected": [pushkey]}


def test_transient_failure_is_retried(api: Api, distributor: FakeDistributor) -> None:
    endpoint = distributor.new_endpoint()
    pushkey = register(api, endpoint)
    distributor.queue(Reply(503, {"error": "busy"}))
    api.notify(synapse_body(DM, pushkey))
    distributor.wait_for(2, timeout=15)
    assert len(distributor.messages) == 1


def test_stateless_endpoint_is_forwarded_without_registration(
    api: Api, gateway: LocalGateway, distributor: FakeDistributor, stateless: ImplicitRegistrations
) -> None:
    endpoint = distributor.new_endpoint()
    first = up_body(DM, endpoint)
    with count_aws_calls() as counter:
        status, _, payload = gateway.handle(
            "POST", "/_matrix/push/v1/notify", {}, json.dumps(first).encode()
        )
    assert (status, json.loads(payload)) == (200, {"rejected": []})
    # First event: the lookup finds nothing, the registration is made (its idle timer set), the
    # event accepted, its slot marker read, then either the marker written and the slot
    # started, or a due entry written (not the slot's first).
    assert counter.calls[:4] == ["Query", "PutItem", "Query", "PutItem"]
    assert counter.calls[4:] in (
        ["GetItem", "PutItem", "StartExecution"],
        ["GetItem", "PutItem"],
    )
    [request] = distributor.wait_for(1, timeout=10)
    assert request.json()["notification"]["event_id"] == first["notification"]["event_id"]

    second = with_event_id(first, "$second-event")
    with count_aws_calls() as counter:
        gateway.handle("POST", "/_matrix/push/v1/notify", {}, json.dumps(second).encode())
    assert counter.calls[:3] == ["Query", "PutItem", "GetItem"]
    distributor.wait_for(2, timeout=10)

    listed = api.request("GET", "/api/v1/pushkeys").body["pushkeys"]
    [made] = [r for r in listed if r["pushkey"] == endpoint]
    assert (made["backend"], made["owner"], made["app_id"]) == (
        "unifiedpush",
        "unifiedpush",
        UP_APP,
    )


def test_stateless_push_is_delayed_and_cancelled_on_read(
    api: Api, distributor: FakeDistributor, stateless: ImplicitRegistrations
) -> None:
    endpoint = distributor.new_endpoint()
    badge = up_body("read_receipts_all_badge.2.full", endpoint)
    # A badge before any event: not rejected (the pushkey is valid, just not registered yet).
    assert api.notify(badge).body == {"rejected": []}
    api.notify(up_body(DM, endpoint))  # registered now, with the default delay (1 s here)
    assert api.notify(badge).body == {"rejected": []}
    time.sleep(2.5)
    assert distributor.requests == []
    entries = api.deliveries(endpoint)
    assert [e["outcome"] for e in entries] == ["cancelled"]


def test_stateless_needs_an_allowed_app_and_host(
    api: Api, distributor: FakeDistributor, stateless: ImplicitRegistrations
) -> None:
    endpoint = distributor.new_endpoint()
    other_app = up_body(DM, endpoint, app_id="org.example.other")
    assert api.notify(other_app).body == {"rejected": [endpoint]}
    elsewhere = "http://localhost:9/upNOPE"  # not an allowed host
    assert api.notify(up_body(DM, elsewhere)).body == {"rejected": [elsewhere]}
    time.sleep(1.5)
    assert distributor.requests == []


def test_stateless_gone_endpoint_is_rejected_next_time(
    api: Api, distributor: FakeDistributor, stateless: ImplicitRegistrations
) -> None:
    endpoint = distributor.new_endpoint()
    distributor.unregister(endpoint)
    assert api.notify(up_body(DM, endpoint)).body == {"rejected": []}
    wait_until(lambda: [e for e in api.deliveries(endpoint) if e["outcome"] == "rejected"])
    answer = api.notify(up_body("message_group_3_members.1.full", endpoint))
    assert answer.body == {"rejected": [endpoint]}
