"""Bark (https://bark.day.app, an iOS push app): `POST {url}/push` with a JSON body.

Target: `{"device_key": "<key from the Bark app>", "url"?: "https://api.day.app",
"encryption_key"?: "<16, 24 or 32 characters>"}`. The URL may be a self-hosted bark-server, with
a path prefix. The device key goes in the JSON body, never in the URL.

The push: `title`, `subtitle` (the sender, for a message in a named room), `body`, `group`
(notifications are threaded by it, and the app's history is filtered by it: the room's name,
or the other person's name for a direct chat, because the app shows this string to the user and
a room id would be unreadable there), `url` (the click URL), `badge` (unread count), `sound`
(the push rule's sound tweak when Bark has such a sound), `level` (timeSensitive for calls and
mentions, so they break through Focus; active for other direct messages; passive for low-priority
room chatter), `call: "1"` for calls (the ringtone repeats), and `id`: named after the room
(`mxpush.retraction.notification_tag`; after the event with `group_by_room: false`, and for
calls). bark-server makes it the APNs collapse id, so a newer push in the room replaces the
notification.

Taking back (bark-server apns/apns.go `IsDelete`, Bark app AppDelegate
`didReceiveRemoteNotification`, docs/tutorial.md `delete`): `POST /push` with
`{"device_key", "id", "delete": "1"}` makes bark-server send a background push, after which the
app removes the notification with that id from Notification Center and its history. It needs
Background App Refresh on the phone. These requests are never encrypted: bark-server must read
`delete` to send a background push, and they carry nothing but the id.

End-to-end encryption, as Bark documents it (Finb/Bark docs/encryption.md): with an
`encryption_key`, the push fields are serialized as JSON, encrypted with AES-CBC and PKCS7
padding (AES-128/192/256 by key length, the key's UTF-8 bytes), with a fresh random 16-character
IV per push; the request then carries only `device_key`, `ciphertext` (base64), `iv` and `id`
(bark-server needs `id` in clear text: it becomes the APNs collapse id). Neither bark-server nor
Apple can read the message. The Bark app must be set to the same algorithm, mode CBC and key.

Answers (Finb/bark-server route_push.go): a device key the server does not know is HTTP 400
`failed to get device token: ...`; Apple refusing the device token (app removed, token expired)
is HTTP 500 `push failed: Unregistered` (or `BadDeviceToken`, ...). Both reject the registration.
Other 400s fail without rejecting; 429 and other 5xx are retried.
"""

from __future__ import annotations

import base64
import json
import secrets
import string
from collections.abc import Mapping
from typing import Any, ClassVar

from mxpush.backends.base import (
    Backend,
    Delivered,
    Rejected,
    SendResult,
    check_target_url,
    message_key,
    require_token,
)
from mxpush.backends.limits import fit_bytes
from mxpush.errors import InvalidParam
from mxpush.model import RegistrationOptions
from mxpush.outbound import HttpResponse, OutboundHttp
from mxpush.render import MessageKind, PushMessage
from mxpush.retraction import Retraction, notification_tag
from mxpush.urlsafety import TargetPolicy

DEFAULT_URL = "https://api.day.app"
LEVELS: Mapping[int, str] = {1: "passive", 2: "active", 3: "timeSensitive", 4: "critical"}
# The sounds the Bark app ships (Finb/Bark Sounds/*.caf).
SOUNDS = frozenset(
    {
        "alarm",
        "anticipate",
        "bell",
        "birdsong",
        "bloom",
        "calypso",
        "chime",
        "choo",
        "descent",
        "electronic",
        "fanfare",
        "glass",
        "gotosleep",
        "healthnotification",
        "horn",
        "ladder",
        "mailsent",
        "minuet",
        "multiwayinvitation",
        "newmail",
        "newsflash",
        "noir",
        "paymentsuccess",
        "shake",
        "sherwoodforest",
        "silence",
        "spell",
        "suspense",
        "telegraph",
        "tiptoes",
        "typewriters",
        "update",
    }
)
# Matrix push rules name "ring" for calls (Synapse's .m.rule.call); Bark's closest is this one.
SOUND_ALIASES: Mapping[str, str] = {"ring": "multiwayinvitation"}
KEY_LENGTHS = (16, 24, 32)
IV_LENGTH = 16
_IV_ALPHABET = string.ascii_letters + string.digits
# APNs takes at most 4096 bytes of payload: the body is cut well below, so that title, the
# other fields and the base64 of an encrypted push still fit.
MAX_TITLE_BYTES = 256
MAX_BODY_BYTES = 1500
MAX_ID_BYTES = 64  # APNs collapse id: `notification_tag` is 32
# APNs reasons, relayed by bark-server as `push failed: <reason>`, that mean the device token is
# dead: the app was removed or reinstalled, or the token belongs to another app.
DEAD_TOKEN_REASONS = (
    "Unregistered",
    "BadDeviceToken",
    "DeviceTokenNotForTopic",
    "MissingDeviceToken",
)


class BarkBackend(Backend):
    name: ClassVar[str] = "bark"
    display_name: ClassVar[str] = "Bark"
    secret_fields: ClassVar[frozenset[str]] = frozenset({"device_key", "encryption_key"})
    known_fields: ClassVar[frozenset[str]] = frozenset({"url", "device_key", "encryption_key"})
    # Bark's interruption levels as numbers: 1 passive, 2 active, 3 timeSensitive, 4 critical.
    default_priority: ClassVar[Mapping[str, int]] = {"call": 3, "highlight": 3, "high": 2, "low": 1}
    priority_range: ClassVar[tuple[int, int]] = (1, 4)

    def check(self, target: dict[str, Any], policy: TargetPolicy) -> dict[str, Any]:
        url = target["url"] if target.get("url") is not None else DEFAULT_URL
        checked: dict[str, Any] = {
            "url": check_target_url({"url": url}, "url", policy),
            "device_key": require_token(target, "device_key"),
        }
        checked["url"] = checked["url"].rstrip("/")
        if "?" in checked["url"]:
            raise InvalidParam("target.url: must not have a query")
        if target.get("encryption_key") is not None:
            checked["encryption_key"] = _encryption_key(target["encryption_key"])
        return checked

    def fields(self, message: PushMessage, options: RegistrationOptions) -> dict[str, Any]:
        """The push as Bark's fields (without the device key)."""
        subtitle, body = _subtitle_and_body(message)
        fields: dict[str, Any] = {"title": fit_bytes(message.title, MAX_TITLE_BYTES)}
        if subtitle:
            fields["subtitle"] = fit_bytes(subtitle, MAX_TITLE_BYTES)
        fields["body"] = fit_bytes(body, MAX_BODY_BYTES)
        fields["group"] = fit_bytes(_group(message), MAX_TITLE_BYTES)
        if message.click_url:
            fields["url"] = message.click_url
        if message.kind is not MessageKind.TEST:  # a test push must not clear the badge
            fields["badge"] = message.unread
        sound = bark_sound(message.sound)
        if sound:
            fields["sound"] = sound
        fields["level"] = LEVELS[self.priority(message.urgency, options)]
        if message.kind is MessageKind.CALL:
            fields["call"] = "1"
        key = message_key(message, options)
        if key:
            fields["id"] = notification_tag(key)
        return fields

    def request_body(
        self, message: PushMessage, target: Mapping[str, Any], options: RegistrationOptions
    ) -> dict[str, Any]:
        fields = self.fields(message, options)
        key = target.get("encryption_key")
        if not key:
            return {"device_key": target["device_key"], **fields}
        ciphertext, iv = encrypt(fields, str(key))
        body: dict[str, Any] = {
            "device_key": target["device_key"],
            "ciphertext": ciphertext,
            "iv": iv,
        }
        if "id" in fields:
            body["id"] = fields["id"]
        return body

    def send(
        self,
        message: PushMessage,
        target: Mapping[str, Any],
        options: RegistrationOptions,
        http: OutboundHttp,
    ) -> SendResult:
        return self._push(self.request_body(message, target, options), target, http)

    def retract(
        self,
        retraction: Retraction,
        target: Mapping[str, Any],
        options: RegistrationOptions,
        http: OutboundHttp,
    ) -> SendResult:
        """One delete request per notification still shown."""
        result: SendResult = Delivered()
        for tag in retraction.tags:
            body = {"device_key": target["device_key"], "id": tag, "delete": "1"}
            result = self._push(body, target, http)
            if isinstance(result, Rejected):
                return result
        return result

    def _push(
        self, body: Mapping[str, Any], target: Mapping[str, Any], http: OutboundHttp
    ) -> SendResult:
        response = self.post(
            http,
            f"{target['url']}/push",
            headers={"Content-Type": "application/json; charset=utf-8"},
            body=json.dumps(body, ensure_ascii=False).encode(),
        )
        status, text = _answer(response)
        if 200 <= status < 300:
            return Delivered(response.status)
        if status == 400 and text.startswith("failed to get device token"):
            return Rejected(f"Bark answered {status}: the server does not know this device key")
        if status == 500 and text.startswith("push failed:"):
            reason = text.removeprefix("push failed:").strip()
            dead = next((r for r in DEAD_TOKEN_REASONS if reason.startswith(r)), None)
            if dead:
                return Rejected(
                    f"Bark answered {status}: Apple no longer accepts this device ({dead}); "
                    "open the Bark app to get a new key"
                )
        error = self.failure(_with_status(response, status))
        # bark-server's messages may repeat the device key: never let it into logs or the log.
        key = str(target["device_key"])
        detail = error.detail.replace(key, "****") if error.detail else None
        raise type(error)(str(error).replace(key, "****"), detail=detail) from None


def bark_sound(tweak: str | None) -> str | None:
    """The Bark sound for a push rule's sound tweak, or None for the default sound."""
    if not tweak:
        return None
    name = tweak.strip().lower().removesuffix(".caf")
    name = SOUND_ALIASES.get(name, name)
    return name if name in SOUNDS else None


def encrypt(fields: Mapping[str, Any], key: str) -> tuple[str, str]:
    """Bark's encrypted push: (base64 of AES-CBC/PKCS7 of the fields' JSON, the IV)."""
    # Imported here: only encrypted pushes need it, and the registration Lambda, which imports
    # every backend, must not pay for it at cold start.
    from cryptography.hazmat.primitives import padding  # noqa: PLC0415
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: PLC0415

    iv = "".join(secrets.choice(_IV_ALPHABET) for _ in range(IV_LENGTH))
    plaintext = json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()
    padder = padding.PKCS7(algorithms.AES.block_size).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key.encode()), modes.CBC(iv.encode())).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    return base64.b64encode(ciphertext).decode("ascii"), iv


def _encryption_key(value: Any) -> str:
    if not isinstance(value, str) or len(value) not in KEY_LENGTHS:
        raise InvalidParam(
            "target.encryption_key: must be 16, 24 or 32 characters (AES-128, -192 or -256, "
            "as set in the Bark app)"
        )
    if any(ord(c) < 0x21 or ord(c) > 0x7E for c in value):
        raise InvalidParam("target.encryption_key: must be printable ASCII without spaces")
    return value


def _subtitle_and_body(message: PushMessage) -> tuple[str | None, str]:
    """For a message in a named room, iOS shows room / sender / text best as title / subtitle /
    body: move the "alice: " the renderer put in front of the text into the subtitle."""
    who = message.sender_name or message.sender
    if message.kind is not MessageKind.MESSAGE or not message.room_name or not who:
        return None, message.body
    prefix = f"{who}: "
    if message.body.startswith(prefix) and len(message.body) > len(prefix):
        return who, message.body[len(prefix) :]
    return None, message.body


def _group(message: PushMessage) -> str:
    return message.room_name or message.sender_name or message.sender or message.room_id or "mxpush"


def _answer(response: HttpResponse) -> tuple[int, str]:
    """(status, message) of a bark-server answer `{"code", "message", "timestamp"}`. Some
    Bark-compatible servers answer HTTP 200 with the error in `code`: that code counts."""
    try:
        parsed = json.loads(response.body)
    except ValueError:
        return response.status, response.text()
    if not isinstance(parsed, dict):
        return response.status, response.text()
    message = str(parsed.get("message") or "")
    code = parsed.get("code")
    if 200 <= response.status < 300 and isinstance(code, int) and code >= 400:
        return code, message
    return response.status, message


def _with_status(response: HttpResponse, status: int) -> HttpResponse:
    return (
        response
        if status == response.status
        else HttpResponse(status, response.headers, response.body)
    )
