"""A fake Gotify server that checks `POST /message` as gotify/server does.

What it enforces, from gotify/server (api/message.go, auth/authentication.go):
- the application token comes from `?token=`, the `X-Gotify-Key` header or
  `Authorization: Bearer`; unknown token -> 401 with Gotify's error JSON;
- the body is JSON (`Content-Type: application/json`), `message` is required (400 otherwise),
  `title` a string, `priority` an integer, `extras` an object;
- the answer is the stored message (`id`, `appid`, `message`, `title`, `priority`, `date`, ...);
- router/router.go: `DELETE /message/{id}` is a client-token route (`RequireClient`): an
  application token gets 401 (403 for a client that may not), an unknown id 404
  (api/message.go DeleteMessage), a deleted message 200.

It is stricter than Gotify where mxpush promises more: the token must arrive in the header
only (never the URL, where proxies log it).
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

from tests.fakes.server import Received, RecordingServer, Reply


def gotify_error(status: int, description: str) -> Reply:
    names = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}
    return Reply(
        status,
        {"error": names.get(status, "Error"), "errorCode": status, "errorDescription": description},
    )


class FakeGotify(RecordingServer):
    def __init__(
        self,
        *,
        prefix: str = "",
        app_tokens: tuple[str, ...] = ("AppToken.Valid1",),
        client_tokens: tuple[str, ...] = ("ClientToken.Valid1",),
    ) -> None:
        super().__init__()
        self.prefix = prefix.rstrip("/")
        self.app_tokens = set(app_tokens)
        self.client_tokens = set(client_tokens)
        self.messages: list[dict[str, Any]] = []
        self.deleted: list[int] = []
        self._ids = itertools.count(1)

    def reset(self) -> None:
        super().reset()
        self.messages.clear()
        self.deleted.clear()

    @property
    def base_url(self) -> str:
        return self.url + self.prefix

    def revoke(self, token: str) -> None:
        self.app_tokens.discard(token)

    def respond(self, request: Received) -> Reply:
        if request.method == "DELETE" and request.path.startswith(f"{self.prefix}/message/"):
            return self._delete(request, request.path.removeprefix(f"{self.prefix}/message/"))
        if request.path != f"{self.prefix}/message":
            return gotify_error(404, "page not found")
        if request.method != "POST":
            return gotify_error(404, "page not found")
        if "token" in request.query:
            return gotify_error(400, "mxpush must not put the token in the URL")
        token = request.headers.get("x-gotify-key", "")
        if token not in self.app_tokens:
            return gotify_error(
                401,
                "you need to provide a valid access token or user credentials to access this api",
            )
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return gotify_error(400, "expected a JSON body")
        try:
            body = request.json()
        except ValueError:
            return gotify_error(400, "invalid JSON")
        problem = _check_message(body)
        if problem:
            return gotify_error(400, problem)
        stored = {
            "id": next(self._ids),
            "appid": 1,
            "message": body["message"],
            "title": body.get("title") or "mxpush",
            "priority": body.get("priority", 0),
            "date": datetime.now(UTC).isoformat(),
        }
        if body.get("extras"):
            stored["extras"] = body["extras"]
        self.messages.append(stored)
        return Reply(200, stored)

    def _delete(self, request: Received, message_id: str) -> Reply:
        if "token" in request.query:
            return gotify_error(400, "mxpush must not put the token in the URL")
        if request.headers.get("x-gotify-key", "") not in self.client_tokens:
            return gotify_error(
                401,
                "you need to provide a valid access token or user credentials to access this api",
            )
        if not message_id.isdigit():
            return gotify_error(400, "invalid id")
        found = [m for m in self.messages if m["id"] == int(message_id)]
        if not found:
            return gotify_error(404, "message does not exist")
        self.messages.remove(found[0])
        self.deleted.append(int(message_id))
        return Reply(200, None)


def _check_message(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "body must be an object"
    if not isinstance(body.get("message"), str) or not body["message"]:
        return "Field 'message' is required"
    if "title" in body and not isinstance(body["title"], str):
        return "title must be a string"
    priority = body.get("priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        return "priority must be an integer"
    extras = body.get("extras")
    if extras is not None:
        if not isinstance(extras, dict):
            return "extras must be an object"
        for key in extras:
            # Gotify's convention: extras keys are namespaced, <namespace>::[<sub>::]<action>
            if "::" not in key:
                return f"extras key {key!r} is not namespaced"
    return None
