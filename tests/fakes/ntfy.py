"""A fake ntfy server that checks publishing the way binwiederhier/ntfy does.

What it enforces, from binwiederhier/ntfy:
- server/server.go `handle`/`maybeAuthenticate`: with an auth file configured, an
  `Authorization: Basic ...` or `Bearer ...` header that does not authenticate answers 401
  before anything else; without an auth file, credentials are ignored;
- `handleInternal`: `PUT`/`POST /` is JSON publishing (`transformBodyJSON`), `PUT`/`POST /<topic>`
  publishes the raw body as the message text;
- `transformBodyJSON` + types.go `publishMessage`: a JSON object with `topic` (required, matching
  `^[-_A-Za-z0-9]{1,64}$`), `message`, `title`, `priority`, `tags` (string array), `click`,
  `markdown` (bool), ...; wrong JSON types fail decoding (400); an empty message becomes
  `triggered`; a body over twice the message limit is 413;
- `topicsFromPath`: reserved topic names answer 400; `authorizeTopicWrite`: a user (or anonymous)
  without write access to the topic answers 403;
- `parsePublishParams`: priority 1-5 (0 = default), otherwise 400; handlePublishBody: a message
  over the 4096-byte limit would become an attachment, refused without an attachment cache (400);
- `limitRequests`: 429 when the visitor's request bucket is empty;
- errors.go: errors are `{"code", "http", "error", "link"}`; user/manager.go: tokens are `tk_...`;
- a published message answers 200 with the message JSON (`id`, `time`, `event: "message"`, ...).

Updating, clearing and deleting (ntfy >= 2.16, docs/publish.md "Updating + deleting
notifications"): a message published with a `sequence_id` (JSON field; `[-_A-Za-z0-9]{1,64}` here)
replaces the notification shown for that sequence id; `PUT /<topic>/<sid>/clear` marks it read
and dismisses it, `DELETE /<topic>/<sid>` deletes it (both answer the `message_clear` /
`message_delete` event, with the publish auth). `shown` is what the phone shows per topic and
sequence id; `cleared` / `deleted_sids` record the requests. `sequence_support=False` is a
server before 2.16: the field is ignored and those paths answer 404.

It is stricter than ntfy where mxpush promises more: credentials must arrive in the
`Authorization` header only, never as `?auth=` in the URL.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import time
from typing import Any

from tests.fakes.server import Received, RecordingServer, Reply

TOPIC = re.compile(r"[-_A-Za-z0-9]{1,64}")
RESERVED = {
    "docs",
    "static",
    "file",
    "app",
    "account",
    "settings",
    "pricing",
    "signup",
    "login",
    "reset-password",
}
MESSAGE_LIMIT = 4096
_LINK_AUTH = "https://ntfy.sh/docs/publish/#authentication"


def ntfy_error(status: int, code: int, error: str, link: str = "") -> Reply:
    body: dict[str, Any] = {"code": code, "http": status, "error": error}
    if link:
        body["link"] = link
    return Reply(status, body)


UNAUTHORIZED = ntfy_error(401, 40101, "unauthorized", _LINK_AUTH)
FORBIDDEN = ntfy_error(403, 40301, "forbidden", _LINK_AUTH)
TOO_MANY_REQUESTS = ntfy_error(
    429,
    42901,
    "limit reached: too many requests, please be nice",
    "https://ntfy.sh/docs/publish/#limitations",
)


class FakeNtfy(RecordingServer):
    """`auth=True` is a server with an auth file (the default when users or tokens are given):
    `users`/`tokens` authenticate, `grants` says who may write where (`"*"` = every topic),
    `anonymous_write` lists topics anyone may publish to. Without auth, anyone may publish
    anywhere and credentials are ignored."""

    def __init__(
        self,
        *,
        prefix: str = "",
        users: dict[str, str] | None = None,
        tokens: dict[str, str] | None = None,
        grants: dict[str, set[str]] | None = None,
        anonymous_write: set[str] | None = None,
        auth: bool | None = None,
    ) -> None:
        super().__init__()
        self.prefix = prefix.rstrip("/")
        self.users = dict(users or {})
        self.tokens = dict(tokens or {})
        self.grants = {user: set(topics) for user, topics in (grants or {}).items()}
        self.anonymous_write = set(anonymous_write or set())
        self.auth_enabled = bool(users or tokens) if auth is None else auth
        self.rate_limited = False
        self.sequence_support = True
        self.messages: list[dict[str, Any]] = []
        # (topic, sequence id) -> the message the phone shows for it.
        self.shown: dict[tuple[str, str], dict[str, Any]] = {}
        self.cleared: list[tuple[str, str]] = []
        self.deleted_sids: list[tuple[str, str]] = []
        self._ids = itertools.count(1)

    def reset(self) -> None:
        super().reset()
        self.messages.clear()
        self.shown.clear()
        self.cleared.clear()
        self.deleted_sids.clear()
        self.sequence_support = True

    def topic_url(self, topic: str) -> str:
        return f"{self.url}{self.prefix}/{topic}"

    def revoke_token(self, token: str) -> None:
        self.tokens.pop(token, None)

    def respond(self, request: Received) -> Reply:
        if request.query.get("auth") or request.query.get("authorization"):
            return ntfy_error(400, 40000, "mxpush must not put credentials in the URL")
        user, failed = self._authenticate(request)
        if failed:
            return UNAUTHORIZED
        if not request.path.startswith(self.prefix + "/"):
            return ntfy_error(404, 40401, "page not found")
        path = request.path[len(self.prefix) :]
        parts = path.split("/")
        if self.sequence_support and (
            (request.method == "PUT" and len(parts) == 4 and parts[3] == "clear")
            or (request.method == "DELETE" and len(parts) == 3)
        ):
            return self._clear_or_delete(user, parts[1], parts[2], request.method == "PUT")
        if request.method not in ("PUT", "POST"):
            return ntfy_error(404, 40401, "page not found")
        if self.rate_limited:
            return TOO_MANY_REQUESTS
        if path == "/":
            return self._publish_json(request, user)
        topic = path[1:]
        if TOPIC.fullmatch(topic):
            text = request.body.decode("utf-8", "replace").strip()
            return self._publish(user, {"topic": topic, "message": text})
        return ntfy_error(404, 40401, "page not found")

    def _authenticate(self, request: Received) -> tuple[str | None, bool]:
        """(user, failed): the user an Authorization header names, or whether it failed."""
        if not self.auth_enabled:
            return None, False
        header = request.headers.get("authorization", "").strip()
        lowered = header.lower()
        if lowered.startswith("bearer "):
            user = self.tokens.get(header[7:].strip())
            return user, user is None
        if lowered.startswith("basic "):
            try:
                decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
            except ValueError:
                return None, True
            name, sep, password = decoded.partition(":")
            if not sep:
                return None, True
            if not name:  # ntfy treats an empty user name as "the password is a token"
                user = self.tokens.get(password)
                return user, user is None
            if self.users.get(name) != password:
                return None, True
            return name, False
        return None, False  # no (or an unsupported) header: anonymous

    def _publish_json(self, request: Received, user: str | None) -> Reply:
        if len(request.body) > 2 * MESSAGE_LIMIT:
            return ntfy_error(413, 41303, "JSON body too large")
        try:
            message = json.loads(request.body)
        except ValueError:
            return _bad_json()
        problem = _check_types(message)
        if problem:
            return _bad_json()
        if not TOPIC.fullmatch(message.get("topic") or ""):
            return ntfy_error(400, 40009, "invalid request: topic invalid")
        return self._publish(user, message)

    def _publish(self, user: str | None, message: dict[str, Any]) -> Reply:
        topic = message["topic"]
        if topic in RESERVED:
            return ntfy_error(400, 40010, "invalid request: topic name is not allowed")
        if self.auth_enabled and not self._may_write(user, topic):
            return FORBIDDEN
        sid = message.get("sequence_id") if self.sequence_support else None
        if sid is not None and not TOPIC.fullmatch(str(sid)):
            return ntfy_error(400, 40049, "invalid request: sequence ID invalid")
        priority = message.get("priority") or 0
        if not 0 <= priority <= 5:
            return ntfy_error(
                400,
                40007,
                "invalid priority parameter",
                "https://ntfy.sh/docs/publish/#message-priority",
            )
        text = message.get("message") or "triggered"
        if len(text.encode()) > MESSAGE_LIMIT:
            return ntfy_error(400, 40014, "invalid request: attachments not allowed")
        now = int(time.time())
        stored: dict[str, Any] = {
            "id": f"msg{next(self._ids):09d}",
            "time": now,
            "expires": now + 43200,
            "event": "message",
            "topic": topic,
            "message": text,
        }
        for key in ("title", "tags", "click"):
            if message.get(key):
                stored[key] = message[key]
        if priority:
            stored["priority"] = priority
        if message.get("markdown"):
            stored["content_type"] = "text/markdown"
        if user:
            stored["_user"] = user
        if sid is not None:
            stored["sequence_id"] = sid
            self.shown[(topic, sid)] = stored
        self.messages.append(stored)
        return Reply(200, {k: v for k, v in stored.items() if not k.startswith("_")})

    def _clear_or_delete(self, user: str | None, topic: str, sid: str, clear: bool) -> Reply:
        if not TOPIC.fullmatch(topic) or not TOPIC.fullmatch(sid):
            return ntfy_error(404, 40401, "page not found")
        if topic in RESERVED:
            return ntfy_error(400, 40010, "invalid request: topic name is not allowed")
        if self.auth_enabled and not self._may_write(user, topic):
            return FORBIDDEN
        if self.rate_limited:
            return TOO_MANY_REQUESTS
        (self.cleared if clear else self.deleted_sids).append((topic, sid))
        self.shown.pop((topic, sid), None)
        now = int(time.time())
        event = {
            "id": f"msg{next(self._ids):09d}",
            "time": now,
            "event": "message_clear" if clear else "message_delete",
            "topic": topic,
            "sequence_id": sid,
        }
        return Reply(200, event)

    def _may_write(self, user: str | None, topic: str) -> bool:
        if topic in self.anonymous_write:
            return True
        if user is None:
            return False
        allowed = self.grants.get(user, set())
        return "*" in allowed or topic in allowed


def _bad_json() -> Reply:
    return ntfy_error(400, 40024, "invalid request: request body must be valid JSON")


def _check_types(message: Any) -> str | None:
    """Go's json.Decoder into `publishMessage`: a field of the wrong type fails decoding."""
    if not isinstance(message, dict):
        return "not an object"
    for key in (
        "topic",
        "title",
        "message",
        "click",
        "icon",
        "attach",
        "filename",
        "email",
        "sequence_id",
    ):
        if key in message and message[key] is not None and not isinstance(message[key], str):
            return f"{key} must be a string"
    priority = message.get("priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        return "priority must be an integer"
    tags = message.get("tags")
    if tags is not None and (
        not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)
    ):
        return "tags must be a string array"
    markdown = message.get("markdown")
    if markdown is not None and not isinstance(markdown, bool):
        return "markdown must be a boolean"
    return None
