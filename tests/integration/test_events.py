"""The sample events in `events/` (for `sam local invoke -e`) are valid input for their handlers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mxpush_local.gateway import LocalGateway
from mxpush_local.template import load_template
from tests.conftest import ADMIN_TOKEN, Api
from tests.fakes.gotify import FakeGotify

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
PLACEHOLDER_PUSHKEY = "mxp_REPLACE_WITH_A_REGISTERED_PUSHKEY"


def load(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


def invoke(gateway: LocalGateway, function: str, event: dict[str, Any]) -> Any:
    return gateway.aws.functions.invoke(function, event)


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("notify-message.json", 200),
        ("notify-badge-only.json", 200),
        ("notify-call.json", 200),
        ("notify-discovery.json", 200),
        ("notify-bad-json.json", 400),
    ],
)
def test_notify_events(gateway: LocalGateway, name: str, status: int) -> None:
    answer = invoke(gateway, "NotifyFunction", load(name))
    assert answer["statusCode"] == status
    body = json.loads(answer["body"])
    if name == "notify-bad-json.json":
        assert body["errcode"] == "M_NOT_JSON"
    elif name != "notify-discovery.json":
        # Unregistered placeholder pushkey: the gateway tells Synapse to drop it.
        assert body == {"rejected": [PLACEHOLDER_PUSHKEY]}


def test_notify_event_for_a_registered_pushkey(
    api: Api, gateway: LocalGateway, gotify: FakeGotify
) -> None:
    pushkey = api.register(gotify, delay=60)
    event = load("notify-message.json")
    event["body"] = event["body"].replace(PLACEHOLDER_PUSHKEY, pushkey)
    answer = invoke(gateway, "NotifyFunction", event)
    assert json.loads(answer["body"]) == {"rejected": []}


def test_registration_events(gateway: LocalGateway, gotify: FakeGotify) -> None:
    create = load("registration-create.json")
    create["headers"]["authorization"] = f"Bearer {ADMIN_TOKEN}"
    body = json.loads(create["body"])
    body["target"]["url"] = gotify.base_url  # no DNS in tests
    create["body"] = json.dumps(body)
    created = invoke(gateway, "RegistrationFunction", create)
    assert created["statusCode"] == 201, created["body"]
    pusher = json.loads(created["body"])["pusher"]
    assert pusher["device_display_name"] == "My phone"
    # Without MXPUSH_PUBLIC_URL the pusher points at the API Gateway domain of the event.
    assert pusher["data"]["url"].endswith("/_matrix/push/v1/notify")

    listing = load("registration-list.json")
    listing["headers"]["authorization"] = f"Bearer {ADMIN_TOKEN}"
    assert invoke(gateway, "RegistrationFunction", listing)["statusCode"] == 200
    unauthorized = invoke(gateway, "RegistrationFunction", load("registration-list.json"))
    assert unauthorized["statusCode"] == 401


SENDER_FUNCTIONS = sorted(
    name
    for name in load_template(ROOT / "template.yaml").functions
    if name.endswith("SenderFunction")
)


def sender_event_name(function: str) -> str:
    """`NtfySenderFunction` -> `ntfy-sender.json`."""
    return function.removesuffix("SenderFunction").lower() + "-sender.json"


def test_every_sender_function_has_a_sample_event() -> None:
    assert len(SENDER_FUNCTIONS) >= 7
    missing = [f for f in SENDER_FUNCTIONS if not (EVENTS / sender_event_name(f)).is_file()]
    assert missing == []


@pytest.mark.parametrize("function", SENDER_FUNCTIONS)
def test_sender_events(gateway: LocalGateway, function: str) -> None:
    """A first attempt at a list of batches, as a slot's delivery step invokes it."""
    event = load(sender_event_name(function))
    # The event names its own backend, the one this function is invoked for.
    assert event["backend"] == function.removesuffix("SenderFunction").lower()
    # The placeholder batch does not exist: skipped, not sent, not an error.
    assert invoke(gateway, function, event) == {"skipped": 1}


def test_record_outcome_event(gateway: LocalGateway) -> None:
    """Retries exhausted for a batch that is not (or no longer) held: nothing to log."""
    record = load("record-outcome.json")
    assert invoke(gateway, "RecordOutcomeFunction", record) == {"outcome": "failed", "logged": 0}


def test_deliver_slot_event(gateway: LocalGateway) -> None:
    assert invoke(gateway, "DeliverSlotFunction", load("deliver-slot.json")) == {
        "slot": 1764600000,
        "batches": 0,
    }


def test_sweep_event(gateway: LocalGateway) -> None:
    result = invoke(gateway, "SweepFunction", load("sweep.json"))
    assert set(result) == {"redriven_slots", "checked_slots", "redriven_batches"}
