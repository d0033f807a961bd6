"""Acrobits PNM (https://doc.acrobits.net/api/server/http_push.html): pushes to Acrobits
softphones (Cloud Softphone, Groundwire, ...) through Acrobits' Push Notification Mediator.

Target: `{"device_token", "app_id", "selector"?, "url"?, "calls_device_token"?,
"calls_app_id"?}`, as the softphone's Push Token Reporter reports them (`token_msgs`,
`appid_msgs`, `selector`, `token_calls`, `appid_calls`; see `mxpush.push_token_report`).
`url` defaults to `https://pnm.cloudsoftphone.com/pnm2/send`.

One JSON `POST` per push (the mapping matrix2acrobits uses: event_id -> `Id`, sender ->
`UserName`, display name -> `UserDisplayName`, body -> `Message`, unread -> `Badge`,
room -> `ThreadId`, tweaks.sound -> `Sound`, else "default"):

- with a selector: `NotifyTextMessage` to the messages token;
- without one: `NotifyGenericTextMessage` (the only verb PNM takes without `Selector`), whose
  `Message` is all the app shows, so it carries the title too;
- `m.call.invite` with a selector and a calls token: `NotifyIncomingCall` to the calls
  (PushKit) token, which iOS reserves for incoming calls. Without a calls token a call goes out
  as a text message.

PNM answers a well-formed request with HTTP 2xx and JSON `{"code": 200 | 400 | 404 | 500,
"response": "..."}` (Acrobits' documentation calls the field `status`; both are read). `404`
means the device token is no longer registered: the registration is rejected.

A read takes nothing back here (`Backend.retract`'s default): the verbs Acrobits documents for
PNM (http_push.html and the legacy form_http_push.html: `NotifyTextMessage`,
`NotifyGenericTextMessage`, `NotifyIncomingCall`) have no badge-only update, and a
`NotifyTextMessage` with `Badge` 0 makes the app fetch and notify. The notify path opens no
retraction for it (`mxpush.retraction.can_retract`).

Acrobits has no priority levels: `options.priority` is refused. Nor is there a click URL: the
app opens the conversation by `ThreadId`.
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
from mxpush.errors import InvalidParam, PermanentDeliveryError, TransientDeliveryError
from mxpush.model import RegistrationOptions
from mxpush.outbound import HttpResponse, OutboundHttp
from mxpush.render import MessageKind, PushMessage
from mxpush.urlsafety import TargetPolicy

DEFAULT_URL = "https://pnm.cloudsoftphone.com/pnm2/send"
TEXT_VERB = "NotifyTextMessage"
GENERIC_VERB = "NotifyGenericTextMessage"
CALL_VERB = "NotifyIncomingCall"
CODE_DELIVERED = 200
CODE_TOKEN_UNKNOWN = 404
_CALL_FIELDS = ("calls_device_token", "calls_app_id")


class AcrobitsBackend(Backend):
    name: ClassVar[str] = "acrobits"
    display_name: ClassVar[str] = "Acrobits PNM"
    secret_fields: ClassVar[frozenset[str]] = frozenset({"device_token", "calls_device_token"})
    known_fields: ClassVar[frozenset[str]] = frozenset(
        {"device_token", "app_id", "selector", "url", *_CALL_FIELDS}
    )
    # PNM has no priority levels: nothing to map urgencies to, and overrides are refused.
    default_priority: ClassVar[Mapping[str, int]] = {}
    priority_range: ClassVar[tuple[int, int]] = (0, 0)
    ignored_options: ClassVar[frozenset[str]] = frozenset({"click_url", "markdown"})
    # One registration per owner and softphone account.
    claim_field: ClassVar[str | None] = "selector"

    # --- registration -------------------------------------------------------------------------

    def check(self, target: dict[str, Any], policy: TargetPolicy) -> dict[str, Any]:
        cleaned: dict[str, Any] = {
            "device_token": require_token(target, "device_token"),
            "app_id": require_token(target, "app_id"),
        }
        if target.get("selector") is not None:
            cleaned["selector"] = require_token(target, "selector")
        present = [key for key in _CALL_FIELDS if target.get(key) is not None]
        if present:
            missing = [key for key in _CALL_FIELDS if key not in present]
            if missing:
                raise InvalidParam(f"target.{missing[0]}: required with target.{present[0]}")
            for key in _CALL_FIELDS:
                cleaned[key] = require_token(target, key)
        # Our own default needs no check (and no DNS lookup at registration); a URL the user
        # gives is checked like every target URL. Both are checked again at each send.
        url = target.get("url")
        cleaned["url"] = DEFAULT_URL if url is None else check_target_url(target, "url", policy)
        return cleaned

    def validate_priority(self, overrides: Mapping[str, Any]) -> dict[str, int]:
        if overrides:
            raise InvalidParam(
                f"options.priority: backend {self.name!r} has no priority levels "
                "(Acrobits PNM takes none); remove options.priority"
            )
        return {}

    # --- delivery -----------------------------------------------------------------------------

    def request_body(self, message: PushMessage, target: Mapping[str, Any]) -> dict[str, Any]:
        selector = target.get("selector")
        if not selector:
            # PNM shows `Message` and nothing else for this verb: say who and where in it.
            return {
                "verb": GENERIC_VERB,
                "AppId": target["app_id"],
                "DeviceToken": target["device_token"],
                "Message": f"{message.title}: {message.body}",
            }
        if message.kind is MessageKind.CALL and target.get("calls_device_token"):
            body: dict[str, Any] = {
                "verb": CALL_VERB,
                "AppId": target["calls_app_id"],
                "DeviceToken": target["calls_device_token"],
                "Selector": selector,
            }
            if message.event_id:
                body["Id"] = message.event_id
            return {**body, **_who(message)}
        body = {
            "verb": TEXT_VERB,
            "AppId": target["app_id"],
            "DeviceToken": target["device_token"],
            "Selector": selector,
            "Badge": message.unread,
            "Sound": message.sound or "default",
            **_who(message),
            # The message's own text when there is one to show (never with include_content
            # false, encrypted or event_id_only: `content_body` is None then), else the
            # rendered, content-free line ("New message", "sent an image", "Voice call").
            "Message": message.content_body or message.body,
            "ContentType": "text/plain",
        }
        if message.room_id:
            body["ThreadId"] = message.room_id
        if message.event_id:
            body["Id"] = message.event_id
        return body

    def send(
        self,
        message: PushMessage,
        target: Mapping[str, Any],
        options: RegistrationOptions,
        http: OutboundHttp,
    ) -> SendResult:
        body = json.dumps(self.request_body(message, target), ensure_ascii=False).encode()
        response = self.post(
            http,
            str(target.get("url") or DEFAULT_URL),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            body=body,
        )
        return self.answer(response, target)

    def answer(self, response: HttpResponse, target: Mapping[str, Any]) -> SendResult:
        """Classify PNM's answer. The JSON `code` decides; the HTTP status only says whether
        the request was well-formed (2xx) or the service is in trouble (429, 5xx)."""
        status = response.status
        if status == 429 or status >= 500:
            raise TransientDeliveryError(f"{self.display_name} answered {status}")
        code, text = _pnm_code(response)
        text = self._scrub(text, target)
        if code == CODE_TOKEN_UNKNOWN and (200 <= status < 300 or status == 404):
            detail = f" ({text})" if text else ""
            return Rejected(
                f"{self.display_name} answered code 404: the device token is no longer "
                f"registered{detail}"
            )
        if 300 <= status < 400:
            raise self.failure(response)  # a redirect: not followed
        if not 200 <= status < 300:
            raise PermanentDeliveryError(f"{self.display_name} answered {status}{_colon(text)}")
        if code == CODE_DELIVERED:
            return Delivered(status)
        if code is None:
            raise PermanentDeliveryError(
                f"{self.display_name} answered {status} without a JSON code (is target.url "
                "the PNM send URL?)"
            )
        if code == 429 or code >= 500:
            raise TransientDeliveryError(f"{self.display_name} answered code {code}{_colon(text)}")
        raise PermanentDeliveryError(f"{self.display_name} answered code {code}{_colon(text)}")

    def _scrub(self, text: str, target: Mapping[str, Any]) -> str:
        """PNM's `response` may quote the request; never let a device token through."""
        for key in self.secret_fields:
            secret = target.get(key)
            if secret:
                text = text.replace(str(secret), "****")
        return text


def _colon(text: str) -> str:
    return f": {text}" if text else ""


def _who(message: PushMessage) -> dict[str, str]:
    """`UserName` (the Matrix ID) and `UserDisplayName` (what the app shows as the sender)."""
    who: dict[str, str] = {}
    if message.sender:
        who["UserName"] = message.sender
    who["UserDisplayName"] = message.sender_name or message.sender or message.title
    return who


def _pnm_code(response: HttpResponse) -> tuple[int | None, str]:
    """`code` (or `status`, as Acrobits' documentation names it) and `response` of PNM's JSON."""
    try:
        data = json.loads(response.body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return None, response.text(100)
    code = data.get("code", data.get("status"))
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    if isinstance(code, bool) or not isinstance(code, int):
        code = None
    text = data.get("response")
    return code, (text[:200] if isinstance(text, str) else "")
