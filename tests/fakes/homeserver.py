"""A fake Matrix homeserver: `/account/whoami` and `/pushers/set` of the client-server API.

Tokens map to users; `pushers` holds what `pushers/set` stored per user, checked the way
Synapse checks it (kind http needs app_id, pushkey, data.url ending in /_matrix/push/v1/notify).
"""

from __future__ import annotations

from typing import Any

from tests.fakes.server import Received, RecordingServer, Reply

_REQUIRED = ("app_id", "pushkey", "app_display_name", "device_display_name", "lang", "data")


def matrix_error(status: int, errcode: str, error: str) -> Reply:
    return Reply(status, {"errcode": errcode, "error": error})


class FakeHomeserver(RecordingServer):
    def __init__(self, users: dict[str, str] | None = None) -> None:
        super().__init__()
        self.users = dict(users or {"bob-token": "@bob:localhost", "eve-token": "@eve:localhost"})
        self.pushers: dict[str, list[dict[str, Any]]] = {}
        # Set to make pushers/set fail with this answer (whoami keeps working).
        self.pushers_set_failure: Reply | None = None

    def respond(self, request: Received) -> Reply:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return matrix_error(401, "M_MISSING_TOKEN", "Missing access token")
        user = self.users.get(auth[len("Bearer ") :])
        if user is None:
            return matrix_error(401, "M_UNKNOWN_TOKEN", "Invalid access token passed.")
        if request.path == "/_matrix/client/v3/account/whoami" and request.method == "GET":
            return Reply(200, {"user_id": user, "device_id": "DEV", "is_guest": False})
        if request.path == "/_matrix/client/v3/pushers/set" and request.method == "POST":
            return self._set_pusher(user, request.json())
        return matrix_error(404, "M_UNRECOGNIZED", "Unrecognized request")

    def _set_pusher(self, user: str, body: Any) -> Reply:
        if self.pushers_set_failure is not None:
            return self.pushers_set_failure
        pushers = self.pushers.setdefault(user, [])
        if not isinstance(body, dict):
            return matrix_error(400, "M_BAD_JSON", "body must be an object")
        if body.get("kind") is None:
            # Synapse answers 200 also when there was no such pusher.
            pushers[:] = [
                p
                for p in pushers
                if (p["app_id"], p["pushkey"]) != (body.get("app_id"), body.get("pushkey"))
            ]
            return Reply(200, {})
        if body.get("kind") != "http":
            return matrix_error(400, "M_INVALID_PARAM", "kind must be http")
        missing = [k for k in _REQUIRED if k not in body]
        if missing:
            return matrix_error(400, "M_MISSING_PARAM", f"Missing parameters: {', '.join(missing)}")
        url = body["data"].get("url", "")
        if not url.endswith("/_matrix/push/v1/notify"):
            return matrix_error(
                400, "M_INVALID_PARAM", "'url' must have a path of '/_matrix/push/v1/notify'"
            )
        if len(body["app_id"]) > 64:
            return matrix_error(400, "M_INVALID_PARAM", "app_id too long")
        pushers[:] = [
            p for p in pushers if (p["app_id"], p["pushkey"]) != (body["app_id"], body["pushkey"])
        ]
        pushers.append(body)
        return Reply(200, {})
