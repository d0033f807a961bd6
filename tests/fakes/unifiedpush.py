"""A fake UnifiedPush distributor endpoint (ntfy's and NextPush's push servers behave alike).

What it enforces:
- only POST to an endpoint it handed out (`new_endpoint()`); anything else 404, which is how
  distributors say "this endpoint is gone" (UnifiedPush/common-proxies gateway/matrix.go treats
  401-404 as rejected);
- a body of at most 4096 bytes (the UnifiedPush spec's message limit), else 413;
- for Matrix pushes, the UnifiedPush Matrix gateway's shape: a JSON object `{"notification":
  {...}}` without `devices`; a badge-only one (no `event_id`) exactly as Synapse sends it
  (`{"id": "", "type": null, "sender": "", "counts": {...}}`), which apps such as FluffyChat
  take as "clear what is read" (`cleared` counts those with `unread` 0).
"""

from __future__ import annotations

import secrets
from typing import Any

from tests.fakes.server import Received, RecordingServer, Reply

MAX_MESSAGE_BYTES = 4096


class FakeDistributor(RecordingServer):
    def __init__(self) -> None:
        super().__init__()
        self.endpoints: set[str] = set()
        self.messages: list[dict[str, Any]] = []
        self.cleared = 0

    def new_endpoint(self) -> str:
        path = "/up" + secrets.token_hex(6)
        self.endpoints.add(path)
        return self.url + path

    def unregister(self, endpoint: str) -> None:
        self.endpoints.discard(endpoint.removeprefix(self.url))

    def respond(self, request: Received) -> Reply:
        if request.method != "POST" or request.path not in self.endpoints:
            return Reply(404, {"code": 40401, "http": 404, "error": "page not found"})
        if len(request.body) > MAX_MESSAGE_BYTES:
            return Reply(413, {"code": 41301, "http": 413, "error": "message too large"})
        try:
            body = request.json()
        except ValueError:
            return Reply(400, {"error": "not JSON"})
        notification = body.get("notification") if isinstance(body, dict) else None
        if not isinstance(notification, dict) or "devices" in notification:
            return Reply(400, {"error": "expected {notification} without devices"})
        if "event_id" not in notification:
            if set(notification) != {"id", "type", "sender", "counts"} or (
                notification["id"],
                notification["type"],
                notification["sender"],
            ) != ("", None, ""):
                return Reply(400, {"error": "a badge-only notification as Synapse sends it"})
            if notification["counts"] == {"unread": 0}:
                self.cleared += 1
        self.messages.append(notification)
        return Reply(200, {"id": secrets.token_hex(6), "event": "message"})
