"""The Acrobits sample events in `events/` (for `sam local invoke -e`) are valid input for
their handlers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mxpush_local.gateway import LocalGateway
from tests.conftest import ADMIN_TOKEN

EVENTS = Path(__file__).resolve().parents[2] / "events"


def load(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


def test_push_token_report_event(gateway: LocalGateway) -> None:
    event = load("push-token-report.json")
    event["headers"]["authorization"] = f"Bearer {ADMIN_TOKEN}"

    answer = gateway.aws.functions.invoke("RegistrationFunction", event)

    assert answer["statusCode"] == 200, answer["body"]
    body = json.loads(answer["body"])
    assert body["app_id"] == "com.cloudsoftphone.app"
    assert body["pusher"]["data"]["url"].endswith("/_matrix/push/v1/notify")
    assert body["pusher"]["data"]["format"] == "event_id_only"
    unauthorized = gateway.aws.functions.invoke(
        "RegistrationFunction", load("push-token-report.json")
    )
    assert unauthorized["statusCode"] == 401
