"""UnifiedPush (https://unifiedpush.org): POST the Matrix notification to the endpoint.

Target: `{"endpoint": "https://push.example.org/upAbC..."}`, the URL a UnifiedPush distributor
(ntfy, NextPush, ...) gave the client. Like UnifiedPush's own Matrix gateway
(UnifiedPush/common-proxies, gateway/matrix.go), the body is `{"notification": {...}}` without
`devices`; the client (Element, FluffyChat) reads the event and room IDs and fetches the event.

mxpush keeps only what a push needs, so the forwarded notification holds: event_id, room_id,
type, sender, sender_display_name, room_name, prio, counts, user_is_target, and `content` with
`msgtype`/`body` for text messages when content is allowed (never ciphertext).

A read that leaves nothing unread, after a push was delivered, is forwarded as Synapse sent it
(the badge-only notification without `devices`: `{"notification": {"id": "", "type": null,
"sender": "", "counts": {"unread": 0}}}`): apps such as FluffyChat clear what is read on it.

Answers 401-404 and 410 mean the endpoint is gone: the registration is rejected.
UnifiedPush has no priority scale, so per-registration priority overrides are refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from mxpush.backends.base import Backend, Delivered, Rejected, SendResult, check_target_url
from mxpush.errors import InvalidParam
from mxpush.model import RegistrationOptions
from mxpush.outbound import OutboundHttp
from mxpush.render import PushMessage
from mxpush.retraction import Retraction
from mxpush.urlsafety import TargetPolicy

GONE = frozenset({401, 402, 403, 404, 410})
# Synapse's badge-only notification (tests/fixtures/synapse-1.163.2/read_receipts_all_badge.*)
# without `devices`, as UnifiedPush's Matrix gateway would forward it.
BADGE_ONLY: Mapping[str, Any] = {
    "notification": {"id": "", "type": None, "sender": "", "counts": {"unread": 0}}
}


class UnifiedPushBackend(Backend):
    name: ClassVar[str] = "unifiedpush"
    display_name: ClassVar[str] = "UnifiedPush"
    known_fields: ClassVar[frozenset[str]] = frozenset({"endpoint"})
    # The endpoint URL is the only credential a UnifiedPush client has: treat it as a secret.
    secret_url_fields: ClassVar[frozenset[str]] = frozenset({"endpoint"})

    def check(self, target: dict[str, Any], policy: TargetPolicy) -> dict[str, Any]:
        return {"endpoint": check_target_url(target, "endpoint", policy)}

    def validate_priority(self, overrides: Mapping[str, Any]) -> dict[str, int]:
        if overrides:
            raise InvalidParam(
                "options.priority: UnifiedPush has no priority; the client decides how to notify"
            )
        return {}

    def request_body(self, message: PushMessage) -> dict[str, Any]:
        notification: dict[str, Any] = {"prio": message.prio, "counts": {"unread": message.unread}}
        optional = {
            "event_id": message.event_id,
            "room_id": message.room_id,
            "type": message.event_type,
            "sender": message.sender,
            "sender_display_name": message.sender_name,
            "room_name": message.room_name,
        }
        notification.update({k: v for k, v in optional.items() if v})
        if message.content_body is not None:
            notification["content"] = {"msgtype": message.msgtype, "body": message.content_body}
        return {"notification": notification}

    def send(
        self,
        message: PushMessage,
        target: Mapping[str, Any],
        options: RegistrationOptions,
        http: OutboundHttp,
    ) -> SendResult:
        return self._post(self.request_body(message), target, http)

    def retract(
        self,
        retraction: Retraction,
        target: Mapping[str, Any],
        options: RegistrationOptions,
        http: OutboundHttp,
    ) -> SendResult:
        return self._post(BADGE_ONLY, target, http)

    def _post(
        self, document: Mapping[str, Any], target: Mapping[str, Any], http: OutboundHttp
    ) -> SendResult:
        body = json.dumps(document, ensure_ascii=False).encode()
        response = self.post(
            http,
            str(target["endpoint"]),
            headers={"Content-Type": "application/json"},
            body=body,
        )
        if 200 <= response.status < 300:
            return Delivered(response.status)
        if response.status in GONE:
            return Rejected(f"UnifiedPush answered {response.status}: the endpoint is gone")
        raise self.failure(response)
