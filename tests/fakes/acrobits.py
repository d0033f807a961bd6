"""A fake Acrobits PNM (`POST /pnm2/send`), answering as the real mediator does.

What it enforces and answers, and where that comes from:

- Acrobits, "Push Notifications over HTTP" (https://doc.acrobits.net/api/server/http_push.html):
  a `POST` with a JSON body to `/pnm2/send`; required attributes `verb`, `AppId`,
  `DeviceToken`; `Selector` required for every verb but `NotifyGenericTextMessage`, whose text
  is `Message`. A well-formed request is answered HTTP 2xx with a JSON object whose integer
  (200, 400, 404 or 500) says how it went, plus a `response` string; 404 means the request was
  valid but the device token is no longer registered. A request that is not JSON, not a
  `POST` or lacks the JSON content type gets HTTP 400. The page names the integer `status`.
- matrix2acrobits (nethesis/matrix2acrobits, service/push.go, models/push.go,
  service/push_test.go): reads the integer as `code` (`{"code": 200, "response": "Your message
  was sent."}`), treats `code` 404 as an invalid token, and sends `NotifyTextMessage` with
  `Badge`, `Sound`, `UserName`, `UserDisplayName`, `Message`, `ContentType`, `Id`,
  `ThreadId`. Which name the live service uses is not settled: `code_field` picks it.
- Acrobits, "SIPIS-less push calls" (https://doc.acrobits.net/sdk/pushes/sipisless.html):
  `NotifyIncomingCall` goes to the (AppId, DeviceToken, Selector) tuple with a pairing `Id`.
  Its other attributes are not documented there; `UserName`/`UserDisplayName` are accepted.

It is stricter than PNM where mxpush promises more: attributes it does not know and wrong types
are refused (`code` 400), so a typo cannot pass unnoticed.
"""

from __future__ import annotations

from typing import Any

from tests.fakes.server import Received, RecordingServer, Reply

SEND_PATH = "/pnm2/send"
TEXT_ATTRIBUTES = {
    "Badge": int,
    "Sound": str,
    "UserName": str,
    "UserDisplayName": str,
    "Message": str,
    "ContentType": str,
    "Id": str,
    "ThreadId": str,
}
VERBS: dict[str, dict[str, type]] = {
    "NotifyTextMessage": TEXT_ATTRIBUTES,
    "NotifyGenericTextMessage": {"Message": str},
    "NotifyIncomingCall": {"Id": str, "UserName": str, "UserDisplayName": str},
}
BASE_ATTRIBUTES = {"verb", "AppId", "DeviceToken", "Selector"}


class FakeAcrobitsPnm(RecordingServer):
    def __init__(
        self,
        devices: dict[str, str] | None = None,
        *,
        code_field: str = "code",
    ) -> None:
        super().__init__()
        # Registered devices: DeviceToken -> AppId.
        self.devices = dict(devices or {})
        self.code_field = code_field
        self.pushes: list[dict[str, Any]] = []

    def reset(self) -> None:
        super().reset()
        self.pushes.clear()

    @property
    def send_url(self) -> str:
        return self.url + SEND_PATH

    def register_device(self, token: str, app_id: str) -> None:
        self.devices[token] = app_id

    def unregister(self, token: str) -> None:
        self.devices.pop(token, None)

    def answer(self, code: int, response: str) -> Reply:
        """PNM's answer to a well-formed request: HTTP 200, the outcome in the JSON."""
        return Reply(200, {self.code_field: code, "response": response})

    def respond(self, request: Received) -> Reply:
        if request.path != SEND_PATH:
            return Reply(404, b"<html><body>Not Found</body></html>", {"Content-Type": "text/html"})
        if request.method != "POST":
            return Reply(400, b"Bad Request", {"Content-Type": "text/plain"})
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return Reply(400, b"Bad Request", {"Content-Type": "text/plain"})
        try:
            body = request.json()
        except ValueError:
            return Reply(400, b"Bad Request", {"Content-Type": "text/plain"})
        problem = _check(body)
        if problem:
            return self.answer(400, problem)
        if self.devices.get(body["DeviceToken"]) != body["AppId"]:
            return self.answer(404, "Device token not found")
        self.pushes.append(body)
        return self.answer(200, "Your message was sent.")


def _check(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "body must be a JSON object"
    for key in ("verb", "AppId", "DeviceToken"):
        if not isinstance(body.get(key), str) or not body[key]:
            return f"missing required attribute {key}"
    verb = body["verb"]
    if verb not in VERBS:
        return f"unknown verb {verb}"
    if verb != "NotifyGenericTextMessage" and not (
        isinstance(body.get("Selector"), str) and body["Selector"]
    ):
        return f"{verb} needs a Selector"
    if verb == "NotifyGenericTextMessage" and not body.get("Message"):
        return "NotifyGenericTextMessage needs a Message"
    allowed = VERBS[verb]
    for key, value in body.items():
        if key in BASE_ATTRIBUTES:
            continue
        if key not in allowed:
            return f"unknown attribute {key} for {verb}"
        kind = allowed[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            return f"{key} must be of type {kind.__name__}"
    return None
