"""Gotify (https://gotify.net): `POST {url}/message` with the application token.

Target: `{"url": "https://gotify.example.org", "token": "<application token>"}`. The URL may
carry a path prefix (Gotify behind a reverse proxy at `/gotify`). The token goes in the
`X-Gotify-Key` header, never in the URL, so it cannot end up in a proxy's access log.

Gotify answers 401 for an invalid application token (403 when the token may not post):
the registration is then rejected.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from mxpush.backends.base import (
    Backend,
    Delivered,
    Rejected,
    SendResult,
    check_target_url,
    require_token,
)
from mxpush.model import RegistrationOptions
from mxpush.outbound import OutboundHttp
from mxpush.render import PushMessage
from mxpush.urlsafety import TargetPolicy


class GotifyBackend(Backend):
    name: ClassVar[str] = "gotify"
    display_name: ClassVar[str] = "Gotify"
    secret_fields: ClassVar[frozenset[str]] = frozenset({"token"})
    known_fields: ClassVar[frozenset[str]] = frozenset({"url", "token"})
    default_priority: ClassVar[Mapping[str, int]] = {"call": 8, "highlight": 7, "high": 6, "low": 4}
    priority_range: ClassVar[tuple[int, int]] = (0, 10)

    def check(self, target: dict[str, Any], policy: TargetPolicy) -> dict[str, Any]:
        return {
            "url": check_target_url(target, "url", policy).rstrip("/"),
            "token": require_token(target, "token"),
        }

    def request_body(self, message: PushMessage, options: RegistrationOptions) -> dict[str, Any]:
        extras: dict[str, Any] = {
            "client::display": {
                "contentType": "text/markdown" if options.markdown else "text/plain"
            },
        }
        if message.click_url:
            extras["client::notification"] = {"click": {"url": message.click_url}}
        return {
            "title": message.title,
            "message": message.body,
            "priority": self.priority(message.urgency, options),
            "extras": extras,
        }

    def send(
        self,
        message: PushMessage,
        target: Mapping[str, Any],
        options: RegistrationOptions,
        http: OutboundHttp,
    ) -> SendResult:
        body = json.dumps(self.request_body(message, options), ensure_ascii=False).encode()
        response = self.post(
            http,
            f"{target['url']}/message",
            headers={"X-Gotify-Key": str(target["token"]), "Content-Type": "application/json"},
            body=body,
        )
        if 200 <= response.status < 300:
            return Delivered(response.status)
        if response.status in (401, 403):
            return Rejected(f"Gotify answered {response.status}: the application token is invalid")
        raise self.failure(response)
