"""Gotify (https://gotify.net): `POST {url}/message` with the application token.

Target: `{"url": "https://gotify.example.org", "token": "<application token>"}`. The URL may
carry a path prefix (Gotify behind a reverse proxy at `/gotify`). The token goes in the
`X-Gotify-Key` header, never in the URL, so it cannot end up in a proxy's access log.

Gotify answers 401 for an invalid application token (403 when the token may not post):
the registration is then rejected. A delivered message's `id` (Gotify answers the created
message) is kept with the delivery-log record.

Taking back: an application token cannot delete messages (gotify/server router/router.go:
`DELETE /message/{id}` is a client-token route). With an optional `client_token` in the target
(a secret: masked, never logged), a read that leaves nothing unread deletes the messages still
on the server (`DELETE {url}/message/{id}`, `X-Gotify-Key: <client token>`; 404 = already
gone). The Android app does not remove a notification it already shows. Without it, nothing
is taken back. A client token Gotify refuses (401/403) fails the retraction, never the
registration: pushes still go out with the application token.
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
from mxpush.errors import PermanentDeliveryError
from mxpush.model import RegistrationOptions
from mxpush.outbound import HttpResponse, OutboundHttp
from mxpush.render import PushMessage
from mxpush.retraction import Retraction
from mxpush.urlsafety import TargetPolicy


class GotifyBackend(Backend):
    name: ClassVar[str] = "gotify"
    display_name: ClassVar[str] = "Gotify"
    secret_fields: ClassVar[frozenset[str]] = frozenset({"token", "client_token"})
    known_fields: ClassVar[frozenset[str]] = frozenset({"url", "token", "client_token"})
    default_priority: ClassVar[Mapping[str, int]] = {"call": 8, "highlight": 7, "high": 6, "low": 4}
    priority_range: ClassVar[tuple[int, int]] = (0, 10)

    def check(self, target: dict[str, Any], policy: TargetPolicy) -> dict[str, Any]:
        checked = {
            "url": check_target_url(target, "url", policy).rstrip("/"),
            "token": require_token(target, "token"),
        }
        if target.get("client_token") is not None:
            checked["client_token"] = require_token(target, "client_token")
        return checked

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
            return Delivered(response.status, ref=_message_id(response))
        if response.status in (401, 403):
            return Rejected(f"Gotify answered {response.status}: the application token is invalid")
        raise self.failure(response)

    def retract(
        self,
        retraction: Retraction,
        target: Mapping[str, Any],
        options: RegistrationOptions,
        http: OutboundHttp,
    ) -> SendResult:
        """`DELETE /message/{id}` with the client token, per delivered message."""
        client_token = target.get("client_token")
        if not client_token:
            raise PermanentDeliveryError(
                "Gotify: deleting messages needs a client token (target.client_token)"
            )
        for ref in retraction.refs:
            if not ref.isdigit():
                continue
            response = self.call(
                http,
                "DELETE",
                f"{target['url']}/message/{ref}",
                headers={"X-Gotify-Key": str(client_token)},
            )
            if 200 <= response.status < 300 or response.status == 404:
                continue
            if response.status in (401, 403):
                raise PermanentDeliveryError(
                    f"Gotify answered {response.status}: the client token may not delete messages"
                )
            raise self.failure(response)
        return Delivered()


def _message_id(response: HttpResponse) -> str | None:
    """The created message's id, from Gotify's answer (`{"id": 25, "appid": ..., ...}`)."""
    try:
        parsed = json.loads(response.body)
    except ValueError:
        return None
    value = parsed.get("id") if isinstance(parsed, dict) else None
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return str(value)
