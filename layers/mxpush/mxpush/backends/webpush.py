"""Web Push (RFC 8030, 8291, 8292): an encrypted POST to a browser's push subscription.

Target: a browser `PushSubscription.toJSON()`:
`{"endpoint": "https://...", "keys": {"p256dh": "<base64url>", "auth": "<base64url>"}}`
(`expirationTime` is accepted and ignored). The browser subscribes with this gateway's VAPID
public key (`GET /api/v1/webpush/vapid-public-key`).

Each push is one request to the endpoint:

- body: the JSON payload below, encrypted with aes128gcm to the subscription's keys (RFC 8291,
  by http_ece), at most 4096 bytes; text is shortened to fit;
- `Authorization: vapid t=<JWT>,k=<public key>` (RFC 8292, `mxpush.vapid`): `aud` the endpoint's
  origin, `exp` in 12 h, `sub` the operator's contact;
- `TTL`: 900 s (a push older than 15 minutes is stale: the client has synced meanwhile), 60 s
  for calls (an invite rings for about a minute);
- `Urgency`: `high` for calls and mentions, `normal` for other `prio: high` events, `low` for
  `prio: low` (plain group messages); `options.priority` overrides it per urgency key with
  0-3 = very-low, low, normal, high;
- `Topic`: per room, so a newer push for the same room replaces one the push service still
  holds. It is an HMAC of the room ID keyed with the subscription's auth secret: the push service
  cannot tell which room, nor link the same room across subscriptions. Calls carry none, so a
  message never replaces an undelivered call; nor do pushes with `group_by_room: false`.

Payload (what the service worker gets in `event.data.json()`):
`{"kind", "prio", "event_id"?, "room_id"?, "tag"?, "counts": {"unread"}, "count"?, "title"?,
"body"?, "click_url"?}`. `tag` names the notification (the room id; the event id with
`group_by_room: false` and for calls): the worker shows it with that tag, so a newer push in the
room replaces it.

Taking back: a read that leaves nothing unread sends `{"kind": "retract", "tags": [...],
"room_ids": [...], "counts": {"unread": 0}}` (Urgency low; the same TTL as a message, so it never
expires before a push it retracts; when it takes back one room, that room's Topic, so it also
replaces that room's push if the service still holds it). The worker closes the notifications
with those tags (`registration.getNotifications({tag})`). There is no server-side delete in Web
Push. `title` and `body` are present only when content is allowed: never with
`include_content: false` nor for `event_id_only` pushers (the worker then shows its own text).

The push service answers 201; 404 or 410 mean the subscription is gone: the registration is then
rejected. 429 and 5xx are retried, 413 and other 4xx fail.

The crypto stack (cryptography, http_ece) is imported inside `send` and the target check, so
the handlers that never encrypt do not load it. The request goes out through `OutboundHttp` like
every backend's.
"""

from __future__ import annotations

import hashlib
import hmac
import json
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
    message_key,
)
from mxpush.errors import InvalidParam, PermanentDeliveryError, TransientDeliveryError
from mxpush.model import RegistrationOptions
from mxpush.outbound import OutboundHttp
from mxpush.render import MessageKind, PushMessage
from mxpush.retraction import Retraction
from mxpush.urlsafety import TargetPolicy
from mxpush.vapid import (
    VapidKey,
    WebPushKeyUnreadable,
    WebPushUnavailable,
    b64url_decode,
    b64url_encode,
)

URGENCY_LEVELS = ("very-low", "low", "normal", "high")  # options.priority 0..3
TTL_SECONDS = 900
CALL_TTL_SECONDS = 60
# RFC 8030 §7.2: push services accept at least 4096 bytes of (encrypted) body. aes128gcm adds a
# 86-byte header (salt, record size, key id = our 65-byte ephemeral key), a padding delimiter
# and a 16-byte tag to the plaintext, in a single record (RFC 8291 §4).
MAX_BODY_BYTES = 4096
MAX_PLAINTEXT_BYTES = MAX_BODY_BYTES - 86 - 1 - 16
RECORD_SIZE = 4096  # one record holds up to 4096 - 17 bytes: more than any payload we send
TOPIC_CHARS = 32  # RFC 8030 §5.4: at most 32 characters of the base64url alphabet
_ELLIPSIS = "…"


def _configured_vapid_key() -> VapidKey:
    from mxpush import wiring  # noqa: PLC0415 - the deployed configuration, read on first use

    return wiring.vapid_key()


class WebPushBackend(Backend):
    name: ClassVar[str] = "webpush"
    display_name: ClassVar[str] = "Web Push"
    secret_fields: ClassVar[frozenset[str]] = frozenset({"keys"})
    # The endpoint names one browser's subscription (and, subscribed without a VAPID key, lets
    # anyone push to it): API answers show only the push service's origin.
    secret_url_fields: ClassVar[frozenset[str]] = frozenset({"endpoint"})
    known_fields: ClassVar[frozenset[str]] = frozenset({"endpoint", "keys", "expirationTime"})
    default_priority: ClassVar[Mapping[str, int]] = {"call": 3, "highlight": 3, "high": 2, "low": 1}
    priority_range: ClassVar[tuple[int, int]] = (0, len(URGENCY_LEVELS) - 1)

    def __init__(
        self,
        vapid_key: Callable[[], VapidKey] = _configured_vapid_key,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._vapid_key = vapid_key
        self._clock = clock

    # --- registration -------------------------------------------------------------------------

    def check(self, target: dict[str, Any], policy: TargetPolicy) -> dict[str, Any]:
        try:
            self._vapid_key()
        except WebPushUnavailable as exc:
            raise InvalidParam(f"backend: {exc.error}") from None
        endpoint = check_target_url(target, "endpoint", policy)
        if not endpoint.lower().startswith("https://") and not policy.allow_private:
            raise InvalidParam("target.endpoint: must be an https URL (a browser push service)")
        expiration = target.get("expirationTime")
        if expiration is not None and (
            isinstance(expiration, bool) or not isinstance(expiration, int | float)
        ):
            raise InvalidParam("target.expirationTime: must be a number or null")
        keys = target.get("keys")
        if keys is None:
            raise InvalidParam("target.keys: required (the subscription's p256dh and auth)")
        if not isinstance(keys, dict):
            raise InvalidParam("target.keys: must be an object with p256dh and auth")
        p256dh = _key(keys, "p256dh", 65)
        _check_point(p256dh)
        auth = _key(keys, "auth", 16)
        # Stored as unpadded base64url, whatever form they came in.
        return {
            "endpoint": endpoint,
            "keys": {"p256dh": b64url_encode(p256dh), "auth": b64url_encode(auth)},
        }

    def mask_target(self, target: Mapping[str, Any]) -> dict[str, Any]:
        masked = super().mask_target(target)
        keys = target.get("keys")
        if isinstance(keys, Mapping):
            masked["keys"] = {name: mask_secret(value) for name, value in keys.items()}
        elif "keys" in target:
            masked["keys"] = mask_secret(keys)
        return masked

    # --- delivery -----------------------------------------------------------------------------

    def send(
        self,
        message: PushMessage,
        target: Mapping[str, Any],
        options: RegistrationOptions,
        http: OutboundHttp,
    ) -> SendResult:
        vapid = self._vapid()
        keys = target["keys"]
        key = message_key(message, options)
        topic = None
        if key and key == message.room_id:
            topic = self.topic(key, str(keys["auth"]))
        return self._push(
            vapid,
            encode_payload(self.payload(message, options)),
            target,
            http,
            ttl=CALL_TTL_SECONDS if message.kind is MessageKind.CALL else TTL_SECONDS,
            urgency=URGENCY_LEVELS[self.priority(message.urgency, options)],
            topic=topic,
        )

    def retract(
        self,
        retraction: Retraction,
        target: Mapping[str, Any],
        options: RegistrationOptions,
        http: OutboundHttp,
    ) -> SendResult:
        vapid = self._vapid()
        keys = retraction.keys
        topic = None
        if len(keys) == 1 and options.group_by_room and keys[0] in retraction.room_ids:
            topic = self.topic(keys[0], str(target["keys"]["auth"]))
        return self._push(
            vapid,
            encode_retraction(keys, retraction.room_ids),
            target,
            http,
            ttl=TTL_SECONDS,
            urgency="low",
            topic=topic,
        )

    def _vapid(self) -> VapidKey:
        try:
            return self._vapid_key()
        except WebPushKeyUnreadable as exc:
            raise TransientDeliveryError(f"Web Push: {exc.error}") from None
        except WebPushUnavailable as exc:
            raise PermanentDeliveryError(f"Web Push: {exc.error}") from None

    def _push(
        self,
        vapid: VapidKey,
        plaintext: bytes,
        target: Mapping[str, Any],
        http: OutboundHttp,
        *,
        ttl: int,
        urgency: str,
        topic: str | None,
    ) -> SendResult:
        endpoint = str(target["endpoint"])
        body = encrypt(plaintext, target["keys"])
        try:
            authorization = vapid.authorization(endpoint, now=self._clock())
        except ValueError as exc:
            raise PermanentDeliveryError(f"Web Push: cannot sign for this URL: {exc}") from None
        headers = {
            "Authorization": authorization,
            "TTL": str(ttl),
            "Urgency": urgency,
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
        }
        if topic:
            headers["Topic"] = topic
        response = self.post(http, endpoint, headers=headers, body=body)
        status = response.status
        if 200 <= status < 300:
            return Delivered(status)
        if status in (404, 410):
            return Rejected(
                f"Web Push answered {status}: the subscription has expired or was removed"
            )
        if status == 413:
            raise PermanentDeliveryError("Web Push answered 413: the push is too large")
        if status in (401, 403):
            raise PermanentDeliveryError(
                f"Web Push answered {status}: the push service refused our VAPID signature "
                f"(the subscription was made with another key, or the subject is not accepted): "
                f"{response.text()}"
            )
        raise self.failure(response)

    def payload(self, message: PushMessage, options: RegistrationOptions) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": message.kind.value, "prio": message.prio}
        if message.event_id:
            data["event_id"] = message.event_id
        if message.room_id:
            data["room_id"] = message.room_id
        key = message_key(message, options)
        if key:
            data["tag"] = key
        data["counts"] = {"unread": message.unread}
        if message.count > 1:
            data["count"] = message.count
        if content_allowed(message, options):
            data["title"] = message.title
            data["body"] = message.body
        if message.click_url:
            data["click_url"] = message.click_url
        return data

    def topic(self, room_id: str, auth: str) -> str:
        """The room's Topic: an HMAC of its id under the subscription's auth secret."""
        digest = hmac.new(b64url_decode(auth), room_id.encode(), hashlib.sha256).digest()
        return b64url_encode(digest)[:TOPIC_CHARS]


def content_allowed(message: PushMessage, options: RegistrationOptions) -> bool:
    """Titles and text go in the payload only when the registration allows content and the
    pusher sent it (an `event_id_only` pusher's events have no type). A test push is ours."""
    if message.kind is MessageKind.TEST:
        return True
    return options.include_content and message.event_type is not None


def encode_payload(data: dict[str, Any]) -> bytes:
    """The payload as UTF-8 JSON within `MAX_PLAINTEXT_BYTES`, shortening body, then title."""
    data = dict(data)
    raw = _json(data)
    for key in ("body", "title"):
        while len(raw) > MAX_PLAINTEXT_BYTES and key in data:
            text = str(data[key])
            excess = len(raw) - MAX_PLAINTEXT_BYTES
            keep = len(text.encode()) - excess - len(_ELLIPSIS.encode())
            shorter = text.encode()[: max(0, keep)].decode("utf-8", "ignore").rstrip(_ELLIPSIS)
            if not shorter:
                del data[key]
            else:
                data[key] = shorter + _ELLIPSIS
            raw = _json(data)
    if len(raw) > MAX_PLAINTEXT_BYTES:
        raise PermanentDeliveryError("Web Push: the push does not fit in 4096 bytes")
    return raw


def encode_retraction(tags: list[str], room_ids: list[str]) -> bytes:
    """The retract payload within `MAX_PLAINTEXT_BYTES`: the oldest entries go first (a
    retraction lists at most 50 rooms; room ids are up to 255 bytes)."""
    tags, room_ids = list(tags), list(room_ids)
    while True:
        raw = _json(
            {"kind": "retract", "tags": tags, "room_ids": room_ids, "counts": {"unread": 0}}
        )
        if len(raw) <= MAX_PLAINTEXT_BYTES:
            return raw
        if len(room_ids) >= len(tags) and room_ids:
            room_ids.pop()
        else:
            tags.pop()


def encrypt(plaintext: bytes, keys: Mapping[str, Any]) -> bytes:
    """aes128gcm (RFC 8188/8291) to the subscription's keys, in one record, from a fresh
    ephemeral key and salt (http_ece draws the salt)."""
    import http_ece  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    try:
        body: bytes = http_ece.encrypt(
            plaintext,
            private_key=ec.generate_private_key(ec.SECP256R1()),
            dh=b64url_decode(str(keys["p256dh"])),
            auth_secret=b64url_decode(str(keys["auth"])),
            rs=RECORD_SIZE,
            version="aes128gcm",
        )
    except (http_ece.ECEException, ValueError, TypeError) as exc:
        raise PermanentDeliveryError(
            f"Web Push: cannot encrypt to this subscription's keys ({type(exc).__name__})"
        ) from None
    return body


def _json(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def _key(keys: Mapping[str, Any], name: str, length: int) -> bytes:
    value = keys.get(name)
    if value is None:
        raise InvalidParam(f"target.keys.{name}: required")
    if not isinstance(value, str) or not value.strip():
        raise InvalidParam(f"target.keys.{name}: must be a base64url string")
    try:
        decoded = b64url_decode(value)
    except ValueError:
        raise InvalidParam(f"target.keys.{name}: must be a base64url string") from None
    if len(decoded) != length:
        raise InvalidParam(f"target.keys.{name}: must encode {length} bytes, not {len(decoded)}")
    return decoded


def _check_point(raw: bytes) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    problem = InvalidParam(
        "target.keys.p256dh: must be an uncompressed P-256 public key (65 bytes, 0x04...)"
    )
    if raw[0] != 0x04:
        raise problem
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError:
        raise problem from None
