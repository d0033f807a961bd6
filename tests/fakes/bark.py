"""A fake bark-server, with the Bark app's decryption, checking pushes as the real ones do.

What it enforces, from Finb/bark-server:
- route_push.go: `POST /push` with `Content-Type: application/json` is the V2 API; a body that
  does not parse is 400 `request bind failed: ...`; query arguments override body fields;
  `device_key` must be a non-empty string (400 `device key is empty`); a key the database does
  not have is 400 `failed to get device token: failed to get [<key>] device token from database`
  (database/bbolt.go); an APNs error is 500 `push failed: <reason>`, and after `Unregistered`
  (410) the server clears the key's token (so later pushes fail too);
- apns/apns.go: `delete` "1" (or 1) makes it a background push (`IsDelete`): the Bark app
  (Bark/AppDelegate.swift `didReceiveRemoteNotification`) then removes the notification whose
  identifier is `id` (and the history entry), when Background App Refresh is on (`deleted`
  records these); with the same `id` (the APNs collapse id) a newer push replaces the shown one;
- apns/apns.go: `group` is type-asserted to a string (anything else panics: fiber's recover
  answers 500); `id` becomes the APNs collapse id (Apple: at most 64 bytes, else
  `BadCollapseId`); the payload is at most 4096 bytes (`PayloadTooLarge`);
- router.go: answers are `{"code", "message", "timestamp"}`, success `{"code": 200,
  "message": "success", ...}`.

And from the Bark app (Finb/Bark), what the phone shows, in `notifications`:
- NotificationServiceExtension/Processor/CiphertextProcessor.swift + Model/Algorithm.swift: a
  `ciphertext` is base64 of AES-CBC/PKCS7 with the key set in the app (16/24/32 characters:
  AES-128/192/256, the key's UTF-8 bytes) and the pushed `iv` (16 characters); the plaintext is a
  JSON object whose fields (title, subtitle, body, group, sound, badge, ...) replace the push's;
  numbers become strings; a push that does not decrypt shows "Decryption Failed";
- docs/en-us/tutorial.md: `level` is one of active, timeSensitive, passive, critical; `badge` a
  number; `sound` one of the app's sounds (Sounds/*.caf).

Stricter than the real server (which passes any extra field through to the app, where a wrong
type is silently ignored): title/subtitle/body/url must be strings, `badge` an integer, `level`
and `sound` known values, and the device key must not be in the URL.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tests.fakes.server import Received, RecordingServer, Reply

LEVELS = {"active", "timeSensitive", "passive", "critical"}
SOUNDS = {
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
PAYLOAD_MAXIMUM = 4096


def bark_answer(code: int, message: str) -> Reply:
    return Reply(code, {"code": code, "message": message, "timestamp": int(time.time())})


@dataclass
class Device:
    """A phone with the Bark app. `apns`: "ok", or the APNs reason its token now gets
    ("Unregistered" for a removed app, "BadDeviceToken", ...). `encryption_key`: the key set in
    the app's encryption settings (CBC mode), if any."""

    apns: str = "ok"
    encryption_key: str | None = None


class FakeBark(RecordingServer):
    def __init__(self, *, prefix: str = "", devices: dict[str, Device] | None = None) -> None:
        super().__init__()
        self.prefix = prefix.rstrip("/")
        self.devices = dict(devices or {})
        # What the phones show: {"device_key", "title", "body", ...} after the app's processing;
        # a push with the id of a shown one replaces it, a delete removes it.
        self.notifications: list[dict[str, Any]] = []
        # Delete requests: {"device_key", "id"}.
        self.deleted: list[dict[str, Any]] = []

    def reset(self) -> None:
        super().reset()
        self.notifications.clear()
        self.deleted.clear()

    @property
    def base_url(self) -> str:
        return self.url + self.prefix

    def respond(self, request: Received) -> Reply:
        if request.method != "POST" or request.path != f"{self.prefix}/push":
            return Reply(404, b"Cannot " + request.method.encode() + b" " + request.path.encode())
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            # The V1 API parses form fields: a JSON body has none, so no device key.
            return bark_answer(400, "device key is empty")
        try:
            params = json.loads(request.body)
        except ValueError as exc:
            return bark_answer(400, f"request bind failed: {exc}")
        if not isinstance(params, dict):
            return bark_answer(400, "request bind failed: not an object")
        if request.query:
            return bark_answer(400, "mxpush must not put push fields in the URL")
        return self._push(params)

    def _push(self, params: dict[str, Any]) -> Reply:
        key = params.get("device_key")
        if not isinstance(key, str) or not key:
            return bark_answer(400, "device key is empty")
        device = self.devices.get(key)
        if device is None:
            return bark_answer(
                400, f"failed to get device token: failed to get [{key}] device token from database"
            )
        if "group" in params and not isinstance(params["group"], str):
            return Reply(500, b"Internal Server Error", {"Content-Type": "text/plain"})
        problem = _check_fields(params)
        if problem:
            return bark_answer(400, f"mxpush sent a bad push: {problem}")
        push_id = params.get("id")
        if isinstance(push_id, str) and len(push_id.encode()) > 64:
            return bark_answer(500, "push failed: BadCollapseId")
        if len(json.dumps(params, ensure_ascii=False).encode()) > PAYLOAD_MAXIMUM:
            return bark_answer(500, "push failed: PayloadTooLarge")
        if device.apns != "ok":
            reason = device.apns
            if reason == "Unregistered":
                # bark-server clears the token; Apple then refuses the empty token.
                device.apns = "MissingDeviceToken"
            return bark_answer(500, f"push failed: {reason}")
        if params.get("delete") in ("1", 1):
            self.deleted.append({"device_key": key, "id": push_id})
            self._remove(key, push_id)
            return bark_answer(200, "success")
        shown = {"device_key": key, **_shown(params, device)}
        self._remove(key, shown.get("id"))
        self.notifications.append(shown)
        return bark_answer(200, "success")

    def _remove(self, key: str, push_id: Any) -> None:
        if push_id is None:
            return
        self.notifications = [
            n for n in self.notifications if (n["device_key"], n.get("id")) != (key, push_id)
        ]


def _check_fields(params: dict[str, Any]) -> str | None:
    for field in ("title", "subtitle", "body", "url", "ciphertext", "iv", "id", "call", "delete"):
        if field in params and not isinstance(params[field], str):
            return f"{field} must be a string"
    badge = params.get("badge")
    if badge is not None and (isinstance(badge, bool) or not isinstance(badge, int)):
        return "badge must be an integer"
    if "level" in params and params["level"] not in LEVELS:
        return f"unknown level {params['level']!r}"
    if "sound" in params and str(params["sound"]).removesuffix(".caf") not in SOUNDS:
        return f"unknown sound {params['sound']!r}"
    return None


def _shown(params: dict[str, Any], device: Device) -> dict[str, Any]:
    """What the Bark app makes of the push."""
    shown = {k: v for k, v in params.items() if k not in ("device_key", "ciphertext", "iv")}
    if "ciphertext" not in params:
        return shown
    try:
        decrypted = decrypt(params["ciphertext"], params.get("iv"), device.encryption_key)
    except ValueError:
        return {"body": "Decryption Failed"}
    # The app lower-cases keys and turns numbers into strings.
    return {
        k.lower(): str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
        for k, v in decrypted.items()
    }


def decrypt(ciphertext: str, iv: Any, key: str | None) -> dict[str, Any]:
    """The Bark app's AESCryptoModel (CBC): raises ValueError when it would fail."""
    if key is None:
        raise ValueError("No encryption key set")
    if len(key) not in (16, 24, 32):
        raise ValueError("bad key length")
    if not isinstance(iv, str) or len(iv) != 16:
        raise ValueError("iv must be 16 characters")
    raw = base64.b64decode(ciphertext, validate=True)
    decryptor = Cipher(algorithms.AES(key.encode()), modes.CBC(iv.encode())).decryptor()
    padded = decryptor.update(raw) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    plaintext = unpadder.update(padded) + unpadder.finalize()
    decoded = json.loads(plaintext.decode("utf-8"))
    if not isinstance(decoded, dict):
        raise ValueError("not a JSON object")  # noqa: TRY004 - every failure shows the same
    return decoded
