"""The delivery path, run by the state machine after the delay.

`send_batch` (the backend's sender Lambda) claims the batch, renders it and pushes it.
A `TransientDeliveryError` escapes on purpose: the state machine retries it with backoff.
`record_outcome` (the record Lambda) writes the delivery log and releases the batch; it runs
after the sender, also when the sender failed for good (the state machine's Catch).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from mxpush.backends.base import Backend, Rejected
from mxpush.errors import PermanentDeliveryError
from mxpush.ids import log_ref
from mxpush.model import Outcome, Status
from mxpush.outbound import OutboundHttp
from mxpush.render import render_batch
from mxpush.store import Claimed, ClaimResult

log = logging.getLogger(__name__)

SKIPPED = "skipped"


class DeliveryStore(Protocol):
    def claim_batch(self, rid: str, bid: str, *, now: float) -> ClaimResult: ...

    def finish_batch(
        self, rid: str, bid: str, *, outcome: Outcome | None, reason: str | None, now: float
    ) -> None: ...

    def flush_unlogged(self, rid: str, *, now: float) -> None: ...


def send_batch(
    execution: Mapping[str, Any],
    *,
    backend: Backend,
    store: DeliveryStore,
    http: OutboundHttp,
    now: float,
) -> dict[str, str]:
    """Push one batch. Returns `{"outcome": ..., "reason"?: ...}` for `record_outcome`."""
    rid = str(execution["registration"])
    bid = str(execution["batch"])
    claim = store.claim_batch(rid, bid, now=now)
    if not isinstance(claim, Claimed):
        log.info("batch not sent", extra={"pushkey": log_ref(rid), "reason": claim.reason})
        return {"outcome": SKIPPED, "reason": claim.reason}
    registration = claim.registration
    if registration.status is Status.REJECTED:
        return _result(Outcome.REJECTED, registration.status_reason or "registration rejected")
    if registration.backend != backend.name:
        return _result(
            Outcome.FAILED, f"routed to {backend.name} but registered for {registration.backend}"
        )
    message = render_batch(claim.batch, registration.options)
    try:
        result = backend.send(message, registration.target, registration.options, http)
    except PermanentDeliveryError as exc:
        log.warning("delivery failed", extra={"pushkey": log_ref(rid), "reason": str(exc)})
        return _result(Outcome.FAILED, exc.reason)
    if isinstance(result, Rejected):
        log.warning("backend rejected the token", extra={"pushkey": log_ref(rid)})
        return _result(Outcome.REJECTED, result.reason)
    log.info(
        "delivered",
        extra={"pushkey": log_ref(rid), "backend": backend.name, "count": claim.batch.count},
    )
    return _result(Outcome.DELIVERED, None)


def record_outcome(
    execution: Mapping[str, Any], *, store: DeliveryStore, now: float
) -> dict[str, str]:
    """Log how the batch ended and release it. Also the state machine's flush step."""
    rid = str(execution["registration"])
    if execution.get("action") == "flush":
        store.flush_unlogged(rid, now=now)
        return {"flushed": rid[:10]}
    bid = str(execution["batch"])
    outcome: Outcome | None
    reason: str | None
    if "error" in execution:
        outcome, reason = Outcome.FAILED, describe_failure(execution["error"])
    else:
        result = execution.get("result") or {}
        raw = str(result.get("outcome", ""))
        reason = str(result["reason"]) if result.get("reason") else None
        # Skipped: a cancellation (already logged when it happened) or a deleted registration.
        outcome = None if raw == SKIPPED else Outcome(raw)
    store.finish_batch(rid, bid, outcome=outcome, reason=reason, now=now)
    return {"outcome": outcome.value if outcome else SKIPPED}


def describe_failure(error: Any) -> str:
    """Turn a state-machine Catch (`{"Error", "Cause"}`) into a short reason."""
    if not isinstance(error, Mapping):
        return "delivery failed"
    name = str(error.get("Error", "Error"))
    cause = error.get("Cause")
    message = None
    if isinstance(cause, str):
        try:
            parsed = json.loads(cause)
            message = parsed.get("errorMessage") if isinstance(parsed, dict) else None
        except ValueError:
            message = cause
    if name == "TransientDeliveryError":
        return f"{message or 'temporary failure'} (gave up after retries)"
    return f"{name}: {message}" if message else name


def _result(outcome: Outcome, reason: str | None) -> dict[str, str]:
    result = {"outcome": outcome.value}
    if reason:
        result["reason"] = reason
    return result
