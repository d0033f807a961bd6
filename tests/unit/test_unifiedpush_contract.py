"""The UnifiedPush backend against a fake distributor endpoint, and the stateless policy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from mxpush.backends.base import Delivered, Rejected
from mxpush.backends.unifiedpush import UnifiedPushBackend
from mxpush.errors import InvalidParam, PermanentDeliveryError, TransientDeliveryError
from mxpush.events import summarize
from mxpush.implicit import ImplicitRegistrations
from mxpush.model import Batch, EventRef, RegistrationOptions
from mxpush.notification import Device, parse_notify_body
from mxpush.outbound import OutboundHttp
from mxpush.render import PushMessage, render_batch
from mxpush.urlsafety import TargetPolicy
from tests.conftest import FIXTURES
from tests.fakes.server import Reply
from tests.fakes.unifiedpush import FakeDistributor

BACKEND = UnifiedPushBackend()
HTTP = OutboundHttp(TargetPolicy(allow_private=True))


@pytest.fixture(scope="module")
def distributor() -> Iterator[FakeDistributor]:
    server = FakeDistributor().start()
    yield server
    server.stop()


def message(name: str, options: RegistrationOptions | None = None, extra: int = 0) -> PushMessage:
    notification = parse_notify_body((FIXTURES / f"{name}.json").read_bytes())
    event = summarize(notification, notification.devices[0])
    refs = [EventRef(f"$earlier{i}", event.room_id, 1.0 + i, event.urgency) for i in range(extra)]
    refs.append(EventRef(event.event_id, event.room_id, 100.0, event.urgency))
    return render_batch(Batch("b", event, tuple(refs), 1.0), options or RegistrationOptions())


def send(distributor: FakeDistributor, msg: PushMessage) -> tuple[Any, dict[str, Any]]:
    endpoint = distributor.new_endpoint()
    before = len(distributor.requests)
    result = BACKEND.send(msg, {"endpoint": endpoint}, RegistrationOptions(), HTTP)
    [request] = distributor.requests[before:]
    assert request.path == endpoint.removeprefix(distributor.url)
    assert request.headers["content-type"] == "application/json"
    return result, json.loads(request.body)


def test_dm_is_forwarded_as_a_matrix_notification(distributor: FakeDistributor) -> None:
    result, body = send(distributor, message("message_dm_2_members.1.full"))
    assert result == Delivered(200)
    assert body == {
        "notification": {
            "event_id": "$9YKtqgWbvfhsr99S2R_6S66iVIWunPAkPKPnHo_e5tI",
            "room_id": "!YIkXvNfjndhc9gq49pm2feQdKxlW4LZTdsnotiA5TMg",
            "type": "m.room.message",
            "sender": "@alice:localhost",
            "sender_display_name": "alice",
            "prio": "high",
            "counts": {"unread": 2},
            "content": {"msgtype": "m.text", "body": "hi, this is a DM"},
        }
    }


def test_group_message_names_the_room(distributor: FakeDistributor) -> None:
    _, body = send(distributor, message("message_group_3_members.1.full"))
    assert body["notification"]["room_name"] == "E2E Group"
    assert body["notification"]["prio"] == "low"


@pytest.mark.parametrize("name", ["encrypted_dm.1.full", "message_dm_2_members.0.eio"])
def test_no_content_for_encrypted_or_withheld_events(
    distributor: FakeDistributor, name: str
) -> None:
    _, body = send(distributor, message(name))
    assert "content" not in body["notification"]
    assert "ciphertext" not in json.dumps(body)


def test_event_id_only_forwards_only_what_synapse_sent(distributor: FakeDistributor) -> None:
    _, body = send(distributor, message("message_dm_2_members.0.eio"))
    assert set(body["notification"]) == {"event_id", "room_id", "prio", "counts"}


def test_include_content_false_drops_the_text(distributor: FakeDistributor) -> None:
    msg = message("message_dm_2_members.1.full", RegistrationOptions(include_content=False))
    _, body = send(distributor, msg)
    assert "content" not in body["notification"]
    assert "hi, this is a DM" not in json.dumps(body)


def test_coalesced_batch_forwards_the_latest_event(distributor: FakeDistributor) -> None:
    _, body = send(distributor, message("message_group_mention.1.full", extra=2))
    assert body["notification"]["event_id"] == "$-ua_nw959CRpUT5XabGaIbDJyRyBzHQDZQieXOt1nHY"


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (401, "rejected"),
        (403, "rejected"),
        (404, "rejected"),
        (410, "rejected"),
        (429, "transient"),
        (503, "transient"),
        (413, "permanent"),
        (400, "permanent"),
    ],
)
def test_answers(distributor: FakeDistributor, status: int, outcome: str) -> None:
    endpoint = distributor.new_endpoint()
    distributor.queue(Reply(status, {"error": "x"}))
    msg = message("message_dm_2_members.1.full")
    if outcome == "rejected":
        result = BACKEND.send(msg, {"endpoint": endpoint}, RegistrationOptions(), HTTP)
        assert isinstance(result, Rejected)
        assert str(status) in result.reason
    else:
        error = TransientDeliveryError if outcome == "transient" else PermanentDeliveryError
        with pytest.raises(error):
            BACKEND.send(msg, {"endpoint": endpoint}, RegistrationOptions(), HTTP)


def test_unknown_endpoint_is_rejected(distributor: FakeDistributor) -> None:
    result = BACKEND.send(
        message("message_dm_2_members.1.full"),
        {"endpoint": distributor.url + "/up-never-issued"},
        RegistrationOptions(),
        HTTP,
    )
    assert isinstance(result, Rejected)


def test_target_validation_and_masking() -> None:
    policy = TargetPolicy(allow_private=False)
    with pytest.raises(InvalidParam, match=r"target\.endpoint: required"):
        BACKEND.validate_target({}, policy)
    with pytest.raises(InvalidParam, match=r"target\.endpoint"):
        BACKEND.validate_target({"endpoint": "http://127.0.0.1:9/up1"}, policy)
    checked = BACKEND.validate_target(
        {"endpoint": "http://127.0.0.1:9/upABCDEF", "x": 1}, TargetPolicy(allow_private=True)
    )
    assert checked.target == {"endpoint": "http://127.0.0.1:9/upABCDEF"}
    assert checked.warnings == ["target.x: unknown field for backend 'unifiedpush', ignored"]
    assert "upABCDEF" not in json.dumps(BACKEND.mask_target(checked.target))
    # The owner still sees which distributor it is.
    assert BACKEND.mask_target(checked.target) == {"endpoint": "http://127.0.0.1:9/****DEF"}


def test_priority_overrides_are_refused() -> None:
    with pytest.raises(InvalidParam, match="no priority"):
        BACKEND.validate_priority({"call": 3})
    assert BACKEND.validate_priority({}) == {}


def device(app_id: str, pushkey: str) -> Device:
    return Device(app_id=app_id, pushkey=pushkey)


@pytest.mark.parametrize(
    ("app_id", "pushkey", "eligible"),
    [
        ("im.vector.app.android", "https://ntfy.example.org/upABC", True),
        ("chat.fluffy.fluffychat", "https://push.example.net/upX", True),
        ("org.other.app", "https://ntfy.example.org/upABC", False),
        ("im.vector.app.android", "https://evil.example.com/upABC", False),
        ("im.vector.app.android", "http://ntfy.example.org/upABC", False),
        ("im.vector.app.android", "not a url", False),
        # "*.example.net" matches subdomains only.
        ("chat.fluffy.fluffychat", "https://example.net/upX", False),
    ],
)
def test_stateless_policy(app_id: str, pushkey: str, eligible: bool) -> None:
    policy = ImplicitRegistrations(
        app_id_patterns=("im.vector.app.*", "chat.fluffy.fluffychat"),
        hosts=("ntfy.example.org", "*.example.net"),
    )
    target = policy.target_for(device(app_id, pushkey))
    assert (target == {"endpoint": pushkey}) if eligible else target is None


def test_stateless_policy_is_off_without_both_settings() -> None:
    pushkey = "https://ntfy.example.org/upABC"
    assert ImplicitRegistrations(app_id_patterns=("*",)).target_for(device("a", pushkey)) is None
    assert (
        ImplicitRegistrations(hosts=("ntfy.example.org",)).target_for(device("a", pushkey)) is None
    )


def test_plain_http_only_when_allowed() -> None:
    policy = ImplicitRegistrations(app_id_patterns=("*",), hosts=("127.0.0.1",), allow_http=True)
    assert policy.target_for(device("a", "http://127.0.0.1:8080/upX")) == {
        "endpoint": "http://127.0.0.1:8080/upX"
    }
