"""A webhook receiver that checks what mxpush promises its receivers (README, "Webhook").

What it enforces:
- `POST` to its path with `Content-Type: application/json` and a body that is the documented
  `mxpush.notification` document, version 1: every field present with its type (`text` null
  when content is withheld, `event_ids` ending with `event_id`, `count` their number, ...), or
  the documented `kind: "retract"` document (`room_ids`, `event_ids`, `counts.unread` 0);
- with a `secret`, `X-Mxpush-Signature: sha256=<hex>` must be the HMAC-SHA256 of the raw body
  bytes, checked with `hmac.compare_digest` exactly as the README's receiver snippet does
  (401 otherwise, as a receiver would answer);
- the `required_headers` a registration asked for (401 when one is missing or wrong).

It answers 200 `{"ok": true}`; `queue` makes it fail as receivers do (503, 404, 410, ...), like
mpush-style receivers that are retried until they answer 2xx (facts.md §3).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

from tests.fakes.server import Received, RecordingServer, Reply

_ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
_NULLABLE_STRINGS = (
    "event_id",
    "room_id",
    "room_name",
    "sender",
    "sender_display_name",
    "event_type",
    "msgtype",
    "text",
    "click_url",
)
FIELDS = {
    "type",
    "version",
    "kind",
    "event_id",
    "event_ids",
    "count",
    "room_id",
    "room_name",
    "sender",
    "sender_display_name",
    "event_type",
    "msgtype",
    "title",
    "body",
    "text",
    "counts",
    "click_url",
    "priority",
    "urgency",
    "timestamp",
}


class FakeWebhook(RecordingServer):
    def __init__(
        self,
        *,
        path: str = "/hooks/matrix",
        secret: str | None = None,
        required_headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.path = path
        self.secret = secret
        self.required_headers = {k.lower(): v for k, v in (required_headers or {}).items()}
        self.documents: list[dict[str, Any]] = []

    def reset(self) -> None:
        super().reset()
        self.documents.clear()

    @property
    def hook_url(self) -> str:
        return self.url + self.path

    def respond(self, request: Received) -> Reply:
        if request.path != self.path:
            return Reply(404, {"error": "no such hook"})
        if request.method != "POST":
            return Reply(405, {"error": "POST only"})
        if request.headers.get("content-type") != "application/json":
            return Reply(415, {"error": "expected application/json"})
        if self.secret is not None and not verify(
            self.secret, request.body, request.headers.get("x-mxpush-signature", "")
        ):
            return Reply(401, {"error": "bad signature"})
        for name, value in self.required_headers.items():
            if request.headers.get(name) != value:
                return Reply(401, {"error": f"missing or wrong {name}"})
        try:
            document = request.json()
        except ValueError:
            return Reply(400, {"error": "not JSON"})
        problem = check_document(document)
        if problem:
            return Reply(422, {"error": problem})
        self.documents.append(document)
        return Reply(200, {"ok": True})


def verify(secret: str, body: bytes, header: str) -> bool:
    """The README's receiver check."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)


RETRACT_FIELDS = {"type", "version", "kind", "room_ids", "event_ids", "counts", "timestamp"}


def check_retract_document(document: dict[str, Any]) -> str | None:
    """The documented `kind: "retract"` document (README, "Webhook")."""
    if set(document) != RETRACT_FIELDS:
        return f"fields differ: {sorted(set(document) ^ RETRACT_FIELDS)}"
    if document["type"] != "mxpush.notification" or document["version"] != 1:
        return "wrong type or version"
    for key in ("room_ids", "event_ids"):
        values = document[key]
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            return f"{key} must be a list of strings"
        if len(set(values)) != len(values):
            return f"{key} must not repeat"
    if not document["room_ids"] and not document["event_ids"]:
        return "a retraction names what it takes back"
    if document["counts"] != {"unread": 0}:
        return "a retraction follows a read that left nothing unread"
    if not isinstance(document["timestamp"], str) or not _ISO_TIME.fullmatch(document["timestamp"]):
        return "timestamp must be ISO 8601 UTC with milliseconds"
    return None


def check_document(document: Any) -> str | None:
    """The documented schema, field by field; None when the document follows it."""
    if not isinstance(document, dict):
        return "not an object"
    if document.get("kind") == "retract":
        return check_retract_document(document)
    if set(document) != FIELDS:
        return f"fields differ: {sorted(set(document) ^ FIELDS)}"
    if document["type"] != "mxpush.notification" or document["version"] != 1:
        return "wrong type or version"
    if document["kind"] not in ("message", "call", "invite", "test"):
        return "unknown kind"
    for key in _NULLABLE_STRINGS:
        if document[key] is not None and not isinstance(document[key], str):
            return f"{key} must be a string or null"
    for key in ("title", "body"):
        if not isinstance(document[key], str) or not document[key]:
            return f"{key} must be a non-empty string"
    ids = document["event_ids"]
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return "event_ids must be a list of strings"
    if document["event_id"] is not None and (not ids or ids[-1] != document["event_id"]):
        return "event_ids must end with event_id"
    if document["count"] != max(len(ids), 1):
        return "count must be the number of events"
    unread = document["counts"].get("unread") if isinstance(document["counts"], dict) else None
    if not isinstance(unread, int) or isinstance(unread, bool) or unread < 0:
        return "counts.unread must be a non-negative integer"
    if document["priority"] not in range(1, 6):
        return "priority must be 1-5"
    if document["urgency"] not in ("call", "highlight", "high", "low"):
        return "unknown urgency"
    if not isinstance(document["timestamp"], str) or not _ISO_TIME.fullmatch(document["timestamp"]):
        return "timestamp must be ISO 8601 UTC with milliseconds"
    return None
