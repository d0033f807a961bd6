"""The interface every push backend implements, and helpers for writing one.

A backend (like a Sygnal pushkin) does three things:

- `validate_target`: check the user's target at registration; return the cleaned target and
  warnings for keys it does not know (they are dropped, not stored);
- `send`: push one message; return `Delivered` or `Rejected` (the token or device is invalid:
  the registration will be rejected), or raise `TransientDeliveryError` (retried with backoff) or
  `PermanentDeliveryError` (recorded as failed);
- `mask_target`: the target with secrets hidden, for API answers;
- `retract` (optional): take back what earlier pushes left on the device after a read
  (`mxpush.retraction`); the same results and errors as `send`. The default cannot.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit

from mxpush.errors import (
    DeliveryError,
    InvalidParam,
    PermanentDeliveryError,
    TargetUnreachable,
    TransientDeliveryError,
    UnsafeTarget,
)
from mxpush.events import Urgency
from mxpush.model import Registration, RegistrationOptions
from mxpush.outbound import HttpResponse, OutboundHttp
from mxpush.render import MessageKind, PushMessage
from mxpush.retraction import Retraction, can_retract, notification_key
from mxpush.urlsafety import TargetPolicy


@dataclass(frozen=True)
class Delivered:
    status: int = 200
    # The backend's id of the delivered message, when a retraction needs it (Gotify).
    ref: str | None = None


@dataclass(frozen=True)
class Rejected:
    """The backend says the token/device is invalid: stop pushing to this registration."""

    reason: str


SendResult = Delivered | Rejected


@dataclass(frozen=True)
class CheckedTarget:
    target: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


class Backend:
    """Base class: subclasses set the class attributes and implement `check` and `send`."""

    name: ClassVar[str]
    display_name: ClassVar[str]
    # Keys of the target that are secrets: never returned in full, never logged.
    secret_fields: ClassVar[frozenset[str]] = frozenset()
    # Keys of the target that are capability URLs: shown as their origin only (`mask_url`).
    secret_url_fields: ClassVar[frozenset[str]] = frozenset()
    known_fields: ClassVar[frozenset[str]] = frozenset()
    default_priority: ClassVar[Mapping[str, int]] = {}
    priority_range: ClassVar[tuple[int, int]] = (0, 10)
    # `options` keys this backend cannot honour: accepted, and the registration warns.
    ignored_options: ClassVar[frozenset[str]] = frozenset()
    # A target field whose value at most one registration of this backend may hold per owner
    # (Acrobits: `selector`, the softphone account), or None.
    claim_field: ClassVar[str | None] = None

    @property
    def default_app_id(self) -> str:
        return f"org.mxpush.{self.name}"

    # --- registration -------------------------------------------------------------------------

    def validate_target(self, target: Any, policy: TargetPolicy) -> CheckedTarget:
        if not isinstance(target, dict):
            raise InvalidParam("target: must be an object")
        warnings = [
            f"target.{key}: unknown field for backend {self.name!r}, ignored"
            for key in sorted(target)
            if key not in self.known_fields
        ]
        known = {k: v for k, v in target.items() if k in self.known_fields}
        return CheckedTarget(self.check(known, policy), warnings)

    def check(self, target: dict[str, Any], policy: TargetPolicy) -> dict[str, Any]:
        """Validate the known fields; raise `InvalidParam` naming the field."""
        raise NotImplementedError

    def validate_priority(self, overrides: Mapping[str, Any]) -> dict[str, int]:
        low, high = self.priority_range
        result: dict[str, int] = {}
        for key, value in overrides.items():
            if key not in {u.key for u in Urgency}:
                allowed = ", ".join(u.key for u in Urgency)
                raise InvalidParam(f"options.priority.{key}: unknown key (allowed: {allowed})")
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InvalidParam(
                    f"options.priority.{key}: must be an integer from {low} to {high} "
                    f"for backend {self.name!r}"
                )
            result[key] = value
        return result

    def claim(self, target: Mapping[str, Any]) -> str | None:
        """The value of `claim_field` in a checked target, if any."""
        value = target.get(self.claim_field) if self.claim_field else None
        return str(value) if value else None

    def mask_target(self, target: Mapping[str, Any]) -> dict[str, Any]:
        masked = dict(target)
        for key in self.secret_fields & target.keys():
            masked[key] = mask_secret(target[key])
        for key in self.secret_url_fields & target.keys():
            masked[key] = mask_url(target[key])
        return masked

    # --- delivery -----------------------------------------------------------------------------

    def send(
        self,
        message: PushMessage,
        target: Mapping[str, Any],
        options: RegistrationOptions,
        http: OutboundHttp,
    ) -> SendResult:
        raise NotImplementedError

    def retract(
        self,
        retraction: Retraction,
        target: Mapping[str, Any],
        options: RegistrationOptions,
        http: OutboundHttp,
    ) -> SendResult:
        """Take back what `retraction` lists (README, "How it behaves": what a read does)."""
        raise PermanentDeliveryError(f"{self.display_name} cannot take back a delivered push")

    def can_retract(self, target: Mapping[str, Any]) -> bool:
        return can_retract(self.name, target)

    def send_to(
        self,
        message: PushMessage,
        registration: Registration,
        http: OutboundHttp,
        *,
        target: Mapping[str, Any] | None = None,
    ) -> SendResult:
        """Push for a registration (what the senders and the test push call). Most backends
        need only its target and options; one that needs more of it overrides this (email: the
        registration's id and owner, for the unsubscribe link and the greeting). `target`: another
        target than the registration's own (a channel's)."""
        return self.send(
            message, registration.target if target is None else target, registration.options, http
        )

    def priority(self, urgency: Urgency, options: RegistrationOptions) -> int:
        return options.priority.get(urgency.key, self.default_priority[urgency.key])

    def post(
        self, http: OutboundHttp, url: str, *, headers: Mapping[str, str], body: bytes
    ) -> HttpResponse:
        """POST, turning transport failures into delivery errors."""
        return self.call(http, "POST", url, headers=headers, body=body)

    def call(
        self,
        http: OutboundHttp,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes = b"",
    ) -> HttpResponse:
        """A request, turning transport failures into delivery errors."""
        try:
            return http.request(method, url, headers=headers, body=body)
        except UnsafeTarget as exc:
            raise PermanentDeliveryError(f"{self.display_name}: {exc}") from None
        except TargetUnreachable as exc:
            raise TransientDeliveryError(f"{self.display_name}: {exc}") from None

    def failure(self, response: HttpResponse) -> DeliveryError:
        """The delivery error for a non-2xx answer that no backend-specific rule covered."""
        status = response.status
        if status == 429 or status >= 500:
            return TransientDeliveryError(f"{self.display_name} answered {status}")
        if 300 <= status < 400:
            return PermanentDeliveryError(
                f"{self.display_name} answered {status} (a redirect; redirects are not "
                "followed: register the final URL)"
            )
        return PermanentDeliveryError(
            f"{self.display_name} answered {status}", detail=response.text() or None
        )


def message_key(message: PushMessage, options: RegistrationOptions) -> str | None:
    """What this push's notification is named after (`mxpush.retraction.notification_key`);
    None for a test push."""
    if message.kind is MessageKind.TEST:
        return None
    return notification_key(
        message.room_id,
        message.event_id,
        is_call=message.kind is MessageKind.CALL,
        group_by_room=options.group_by_room,
    )


def mask_secret(value: Any) -> str:
    """`AbCdEfGhIjKlMn` -> `****lMn`: enough to tell two tokens apart, not to use one."""
    text = str(value)
    return "****" + text[-3:] if len(text) >= 12 else "****"


def mask_url(value: Any) -> str:
    """`https://push.example.org/wpush/v2/gAAAAB...xyz` -> `https://push.example.org/****xyz`.

    For capability URLs (a Web Push or UnifiedPush endpoint: whoever has it can push): the
    origin tells the owner which push service it is, the path and query stay hidden."""
    text = str(value)
    parts = urlsplit(text)
    if not parts.scheme or not parts.hostname:
        return mask_secret(text)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/{mask_secret(text)}"


def require_string(target: Mapping[str, Any], key: str, *, max_length: int = 2048) -> str:
    value = target.get(key)
    if value is None:
        raise InvalidParam(f"target.{key}: required")
    if not isinstance(value, str) or not value.strip():
        raise InvalidParam(f"target.{key}: must be a non-empty string")
    if len(value) > max_length:
        raise InvalidParam(f"target.{key}: must be at most {max_length} characters")
    return value.strip()


def require_token(target: Mapping[str, Any], key: str) -> str:
    value = require_string(target, key, max_length=512)
    if any(ord(c) < 0x21 or ord(c) > 0x7E for c in value):
        raise InvalidParam(f"target.{key}: must be printable ASCII without spaces")
    return value


def check_target_url(target: Mapping[str, Any], key: str, policy: TargetPolicy) -> str:
    url = require_string(target, key)
    try:
        policy.check_url(url)
    except (UnsafeTarget, TargetUnreachable) as exc:
        raise InvalidParam(f"target.{key}: {exc}") from None
    return url
