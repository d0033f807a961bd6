"""Identifiers derived from pushkeys and event IDs.

Items are keyed by the SHA-256 of the pushkey, so the pushkey itself never appears in a
Step Functions execution input, an execution name or a log line.
"""

from __future__ import annotations

import hashlib
import secrets

PUSHKEY_PREFIX = "mxp_"


def new_pushkey() -> str:
    """An opaque random pushkey: 256 bits of randomness, URL-safe."""
    return PUSHKEY_PREFIX + secrets.token_urlsafe(32)


def registration_id(pushkey: str) -> str:
    """The table key for a pushkey (hex SHA-256)."""
    return hashlib.sha256(pushkey.encode("utf-8")).hexdigest()


def pushkey_ref(pushkey: str) -> str:
    """A short, non-reversible reference to a pushkey for log lines."""
    return log_ref(registration_id(pushkey))


def log_ref(rid: str) -> str:
    """A short reference to a registration id for log lines."""
    return "pk#" + rid[:10]


def batch_id(rid: str, event_id: str) -> str:
    """The id of the delivery batch an event opens; also its execution name.

    Deterministic, so a retried notification maps to the same execution (Step Functions
    treats a repeated StartExecution with the same name as idempotent while it runs).
    40 hex characters: inside the 80-character execution-name limit, no forbidden characters.
    """
    return hashlib.sha256(f"{rid}\n{event_id}".encode()).hexdigest()[:40]


def dedup_key(event_id: str) -> str:
    """A compact key for the per-registration duplicate filter. 64 bits: among the few dozen
    events a filter holds, an accidental collision is out of reach (~1e-16)."""
    return hashlib.sha256(event_id.encode("utf-8")).hexdigest()[:16]
