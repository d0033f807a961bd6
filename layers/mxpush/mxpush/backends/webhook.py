"""A generic webhook: `POST {url}` with a documented JSON document (README, "Webhook").

Target: `{"url": "https://...", "secret"?: "...", "headers"?: {"Name": "value"}}`.

- `secret`: the request carries `X-Mxpush-Signature: sha256=<hex>`, the HMAC-SHA256 of the exact
  body bytes under the secret, so the receiver can tell the request came from this gateway.
- `headers`: extra headers the receiver wants (an API key, a routing header). Their values are
  treated as secrets: masked in API answers, never logged. Headers that would change how the
  request is framed or verified (hop-by-hop headers, Host, Content-Length, Content-Type,
  X-Mxpush-*) are refused.

A read that leaves nothing unread sends a `kind: "retract"` document (README, "Webhook") listing
the rooms and events of the pushes delivered since the previous retraction, signed the same way.

Answers: 2xx delivered; 404 and 410 mean the endpoint is gone (the registration is rejected);
anything else, and no answer, is retried by the state machine with backoff for about eleven
minutes (statemachine/retry.asl.json, SendWebhook), as receivers like mpush retry until
they get a 2xx; then the delivery is logged failed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from mxpush.backends.base import (
    Backend,
    Delivered,
    Rejected,
    SendResult,
    check_target_url,
    mask_secret,
)
from mxpush.errors import InvalidParam, TransientDeliveryError
from mxpush.model import RegistrationOptions, iso_time
from mxpush.outbound import OutboundHttp
from mxpush.render import PushMessage
from mxpush.retraction import Retraction
from mxpush.urlsafety import TargetPolicy

DOCUMENT_TYPE = "mxpush.notification"
DOCUMENT_VERSION = 1
RETRACT_KIND = "retract"
SIGNATURE_HEADER = "X-Mxpush-Signature"
MIN_SECRET_CHARS = 16
MAX_SECRET_CHARS = 256
MAX_HEADERS = 20
MAX_HEADER_VALUE_CHARS = 1024
# RFC 9110 field names: a token.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}")
# Hop-by-hop headers (RFC 9110 7.6.1) and what mxpush sets itself or the request framing needs.
FORBIDDEN_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-type",
        "content-encoding",
        "expect",
        "user-agent",
    }
)


class WebhookBackend(Backend):
    name: ClassVar[str] = "webhook"
    display_name: ClassVar[str] = "Webhook"
    secret_fields: ClassVar[frozenset[str]] = frozenset({"secret"})
    known_fields: ClassVar[frozenset[str]] = frozenset({"url", "secret", "headers"})
    # The document's `priority`, on ntfy's familiar 1-5 scale.
    default_priority: ClassVar[Mapping[str, int]] = {"call": 5, "highlight": 4, "high": 3, "low": 2}
    priority_range: ClassVar[tuple[int, int]] = (1, 5)

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock

    def check(self, target: dict[str, Any], policy: TargetPolicy) -> dict[str, Any]:
        checked: dict[str, Any] = {"url": check_target_url(target, "url", policy)}
        if target.get("secret") is not None:
            checked["secret"] = _secret(target["secret"])
        if target.get("headers") is not None:
            headers = _headers(target["headers"])
            if headers:
                checked["headers"] = headers
        return checked

    def mask_target(self, target: Mapping[str, Any]) -> dict[str, Any]:
        masked = super().mask_target(target)
        if isinstance(target.get("headers"), Mapping):
            masked["headers"] = {
                name: mask_secret(value) for name, value in target["headers"].items()
            }
        return masked

    def document(self, message: PushMessage, options: RegistrationOptions) -> dict[str, Any]:
        """The JSON document a receiver gets (README, "Webhook": keep the two in step)."""
        return {
            "type": DOCUMENT_TYPE,
            "version": DOCUMENT_VERSION,
            "kind": message.kind.value,
            "event_id": message.event_id,
            "event_ids": list(message.event_ids),
            "count": message.count,
            "room_id": message.room_id,
            "room_name": message.room_name,
            "sender": message.sender,
            "sender_display_name": message.sender_name,
            "event_type": message.event_type,
            "msgtype": message.msgtype,
            "title": message.title,
            "body": message.body,
            "text": message.content_body,
            "counts": {"unread": message.unread},
            "click_url": message.click_url,
            "priority": self.priority(message.urgency, options),
            "urgency": message.urgency.key,
            "timestamp": iso_time(self.clock()),
        }

    def retract_document(self, retraction: Retraction) -> dict[str, Any]:
        """The document a receiver gets after a read (README, "Webhook": keep the two in step)."""
        return {
            "type": DOCUMENT_TYPE,
            "version": DOCUMENT_VERSION,
            "kind": RETRACT_KIND,
            "room_ids": retraction.room_ids,
            "event_ids": retraction.event_ids,
            "counts": {"unread": 0},
            "timestamp": iso_time(self.clock()),
        }

    def send(
        self,
        message: PushMessage,
        target: Mapping[str, Any],
        options: RegistrationOptions,
        http: OutboundHttp,
    ) -> SendResult:
        return self._deliver(self.document(message, options), target, http)

    def retract(
        self,
        retraction: Retraction,
        target: Mapping[str, Any],
        options: RegistrationOptions,
        http: OutboundHttp,
    ) -> SendResult:
        return self._deliver(self.retract_document(retraction), target, http)

    def _deliver(
        self, document: Mapping[str, Any], target: Mapping[str, Any], http: OutboundHttp
    ) -> SendResult:
        body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
        headers: dict[str, str] = {**(target.get("headers") or {})}
        headers["Content-Type"] = "application/json"
        if target.get("secret"):
            headers[SIGNATURE_HEADER] = signature(str(target["secret"]), body)
        response = self.post(http, str(target["url"]), headers=headers, body=body)
        if 200 <= response.status < 300:
            return Delivered(response.status)
        if response.status in (404, 410):
            return Rejected(f"Webhook answered {response.status}: the endpoint is gone")
        if 300 <= response.status < 400:
            raise TransientDeliveryError(
                f"Webhook answered {response.status} (a redirect; redirects are not followed: "
                "register the final URL)"
            )
        raise TransientDeliveryError(f"Webhook answered {response.status}")


def signature(secret: str, body: bytes) -> str:
    """`sha256=<hex>`: HMAC-SHA256 of the exact body bytes, keyed with the secret's UTF-8."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _secret(value: Any) -> str:
    if not isinstance(value, str) or not MIN_SECRET_CHARS <= len(value) <= MAX_SECRET_CHARS:
        raise InvalidParam(
            f"target.secret: must be a string of {MIN_SECRET_CHARS} to {MAX_SECRET_CHARS} "
            "characters (e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidParam("target.secret: must not contain control characters")
    return value


def _headers(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise InvalidParam("target.headers: must be an object of header names to values")
    if len(value) > MAX_HEADERS:
        raise InvalidParam(f"target.headers: at most {MAX_HEADERS} headers")
    seen: set[str] = set()
    headers: dict[str, str] = {}
    for name, header_value in value.items():
        lowered = name.lower()
        if not _HEADER_NAME.fullmatch(name):
            raise InvalidParam(f"target.headers: {name!r} is not a valid header name")
        if lowered in FORBIDDEN_HEADERS or lowered.startswith("x-mxpush-"):
            raise InvalidParam(f"target.headers.{name}: mxpush sets this header itself")
        if lowered in seen:
            raise InvalidParam(f"target.headers.{name}: given twice")
        seen.add(lowered)
        if not isinstance(header_value, str) or len(header_value) > MAX_HEADER_VALUE_CHARS:
            raise InvalidParam(
                f"target.headers.{name}: must be a string of at most "
                f"{MAX_HEADER_VALUE_CHARS} characters"
            )
        if any(not (0x20 <= ord(c) <= 0x7E or c == "\t") for c in header_value):
            raise InvalidParam(
                f"target.headers.{name}: printable ASCII only (no line breaks or control "
                "characters)"
            )
        headers[name] = header_value.strip()
    return headers
