"""Helpers for backend flow tests: register any backend through the API, wait for outcomes."""

from __future__ import annotations

from typing import Any

from tests.conftest import Api, wait_until


def register(
    api: Api,
    backend: str,
    target: dict[str, Any],
    *,
    delay: int | None = 0,
    options: dict[str, Any] | None = None,
) -> str:
    """Register `target` with the operator token; return the new pushkey."""
    body: dict[str, Any] = {"backend": backend, "target": target}
    if delay is not None:
        body["delay_seconds"] = delay
    if options is not None:
        body["options"] = options
    answer = api.request("POST", "/api/v1/pushkeys", body)
    assert answer.status == 201, answer.body
    return str(answer.body["pushkey"])


def wait_for_outcome(
    api: Api, pushkey: str, outcome: str, timeout: float = 15
) -> list[dict[str, Any]]:
    """The delivery-log entries with `outcome`, once there is at least one."""
    return list(
        wait_until(lambda: [e for e in api.deliveries(pushkey) if e["outcome"] == outcome], timeout)
    )


def outcomes(api: Api, pushkey: str) -> list[str]:
    return [entry["outcome"] for entry in api.deliveries(pushkey)]
