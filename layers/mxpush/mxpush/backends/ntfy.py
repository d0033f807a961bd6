"""ntfy (https://ntfy.sh): publish as JSON, `POST {server}/` with the topic in the body.

Target: `{"url": "https://ntfy.sh/<topic>", "token"?: "tk_..."}` or with `username`/`password`.
The URL is the topic URL users copy from the ntfy app: the server is everything before the last
path segment (a reverse-proxy prefix such as `https://example.org/ntfy/<topic>` is kept), the
topic is the last segment and must follow ntfy's topic rules (`[-_A-Za-z0-9]{1,64}`, not a
reserved name).

Why JSON at the server root rather than headers on `POST /<topic>`: titles and tags are often
non-ASCII (room names, emoji), and HTTP headers are a poor carrier for UTF-8; in a JSON body they
are plain strings.

Replacing and taking back (ntfy server >= 2.16, Android app >= 1.22; checked against ntfy's
docs/publish.md "Updating + deleting notifications" and the JSON publishing table, which lists
`sequence_id`): each push carries a `sequence_id` named after its room
(`mxpush.retraction.notification_tag`), so a newer push in the room updates the notification
instead of adding one; a read that leaves nothing unread sends `PUT /<topic>/<sequence_id>/clear`
per notification still shown (marked read and dismissed; the message stays in the app's list).
Older servers ignore the field and answer the clear 404: nothing changes there.

Auth: an access token (`Authorization: Bearer tk_...`) or a user name and password (Basic); none
for open topics. Never in the URL (`?auth=`), where proxies log it. ntfy answers 401 for bad
credentials and 403 when the user (or anonymous) may not write to the topic: the registration is
then rejected. 429 (rate limited) and 5xx are retried.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from mxpush.backends.base import (
    Backend,
    Delivered,
    Rejected,
    SendResult,
    check_target_url,
    message_key,
    require_string,
    require_token,
)
from mxpush.backends.limits import fit_bytes
from mxpush.errors import InvalidParam
from mxpush.model import RegistrationOptions
from mxpush.outbound import HttpResponse, OutboundHttp
from mxpush.render import MessageKind, PushMessage
from mxpush.retraction import Retraction, notification_tag
from mxpush.urlsafety import TargetPolicy

# ntfy's own rules (server/server.go: topicRegex, disallowedTopics).
TOPIC_PATTERN = re.compile(r"[-_A-Za-z0-9]{1,64}")
RESERVED_TOPICS = frozenset(
    {
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
)
# ntfy user names are `[-_.@a-zA-Z0-9]+` (user/types.go: allowedUsernameRegex; some versions also
# allow '+'). Never a colon, which would break Basic auth.
USERNAME_PATTERN = re.compile(r"[-_.+@a-zA-Z0-9]{1,128}")
TOKEN_PREFIX = "tk_"  # noqa: S105 - the prefix of every ntfy token, not a secret
# ntfy's message limit (server.yml `message-size-limit`, 4096 bytes by default): a longer body
# would be turned into an attachment, which most servers refuse.
MAX_MESSAGE_BYTES = 4096

# Emoji shortcodes ntfy shows in front of the title: a chat bubble, a ringing phone, an envelope.
TAGS: Mapping[MessageKind, tuple[str, ...]] = {
    MessageKind.MESSAGE: ("speech_balloon",),
    MessageKind.CALL: ("telephone_receiver",),
    MessageKind.INVITE: ("envelope_with_arrow",),
    MessageKind.TEST: ("white_check_mark",),
}


def split_topic_url(url: str) -> tuple[str, str]:
    """`https://host/prefix/topic` -> (`https://host/prefix`, `topic`)."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    prefix, _, topic = path.rpartition("/")
    return urlunsplit((parts.scheme, parts.netloc, prefix, "", "")), topic


class NtfyBackend(Backend):
    name: ClassVar[str] = "ntfy"
    display_name: ClassVar[str] = "ntfy"
    secret_fields: ClassVar[frozenset[str]] = frozenset({"token", "password"})
    known_fields: ClassVar[frozenset[str]] = frozenset({"url", "token", "username", "password"})
    # ntfy: 5 max/urgent (long vibration, pop-over), 4 high, 3 default, 2 low (silent), 1 min.
    default_priority: ClassVar[Mapping[str, int]] = {"call": 5, "highlight": 4, "high": 3, "low": 2}
    priority_range: ClassVar[tuple[int, int]] = (1, 5)

    def check(self, target: dict[str, Any], policy: TargetPolicy) -> dict[str, Any]:
        url = check_target_url(target, "url", policy)
        parts = urlsplit(url)
        if parts.query:
            raise InvalidParam(
                "target.url: must not have a query (credentials go in token or "
                "username/password, never in the URL)"
            )
        server, topic = split_topic_url(url)
        if not topic:
            raise InvalidParam(
                "target.url: must be the topic URL, e.g. https://ntfy.sh/mytopic "
                "(the last path segment is the topic)"
            )
        if not TOPIC_PATTERN.fullmatch(topic):
            raise InvalidParam(
                f"target.url: topic {topic!r} is not a valid ntfy topic (letters, digits, "
                "'-' and '_', at most 64 characters)"
            )
        if topic in RESERVED_TOPICS:
            raise InvalidParam(f"target.url: {topic!r} is a reserved name on ntfy servers")
        checked: dict[str, Any] = {"url": f"{server}/{topic}"}
        token = target.get("token")
        username = target.get("username")
        password = target.get("password")
        if token is not None:
            if username is not None or password is not None:
                raise InvalidParam(
                    "target.token: give either an access token or username/password, not both"
                )
            checked["token"] = require_token(target, "token")
            if not checked["token"].startswith(TOKEN_PREFIX):
                raise InvalidParam(
                    "target.token: ntfy access tokens start with 'tk_' (ntfy token add)"
                )
        elif username is not None or password is not None:
            checked["username"] = require_string(target, "username", max_length=128)
            if not USERNAME_PATTERN.fullmatch(checked["username"]):
                raise InvalidParam(
                    "target.username: letters, digits and '-_.+@' only, at most 128 characters"
                )
            checked["password"] = _password(target)
        return checked

    def request_body(self, message: PushMessage, topic: str, options: RegistrationOptions) -> Any:
        body: dict[str, Any] = {
            "topic": topic,
            "title": message.title,
            "message": fit_bytes(message.body, MAX_MESSAGE_BYTES),
            "priority": self.priority(message.urgency, options),
            "tags": list(TAGS[message.kind]),
        }
        if message.click_url:
            body["click"] = message.click_url
        if options.markdown:
            body["markdown"] = True
        key = message_key(message, options)
        if key:
            body["sequence_id"] = notification_tag(key)
        return body

    def headers(self, target: Mapping[str, Any]) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if target.get("token"):
            headers["Authorization"] = f"Bearer {target['token']}"
        elif target.get("username"):
            pair = f"{target['username']}:{target['password']}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        return headers

    def send(
        self,
        message: PushMessage,
        target: Mapping[str, Any],
        options: RegistrationOptions,
        http: OutboundHttp,
    ) -> SendResult:
        server, topic = split_topic_url(str(target["url"]))
        body = json.dumps(self.request_body(message, topic, options), ensure_ascii=False)
        response = self.post(http, f"{server}/", headers=self.headers(target), body=body.encode())
        return self._result(response)

    def retract(
        self,
        retraction: Retraction,
        target: Mapping[str, Any],
        options: RegistrationOptions,
        http: OutboundHttp,
    ) -> SendResult:
        """`PUT /<topic>/<sequence_id>/clear` for each notification still shown. A 404 (a server
        before 2.16, or nothing under that id) has nothing to clear."""
        url = str(target["url"])
        headers = {k: v for k, v in self.headers(target).items() if k != "Content-Type"}
        result: SendResult = Delivered()
        for tag in retraction.tags:
            response = self.call(http, "PUT", f"{url}/{tag}/clear", headers=headers)
            if response.status == 404:
                continue
            result = self._result(response)
            if isinstance(result, Rejected):
                return result
        return result

    def _result(self, response: HttpResponse) -> SendResult:
        if 200 <= response.status < 300:
            return Delivered(response.status)
        if response.status == 401:
            return Rejected("ntfy answered 401: the access token or password is not valid")
        if response.status == 403:
            return Rejected("ntfy answered 403: these credentials may not publish to this topic")
        raise self.failure(response)


def _password(target: Mapping[str, Any]) -> str:
    value = target.get("password")
    if value is None:
        raise InvalidParam("target.password: required with target.username")
    if not isinstance(value, str) or not value:
        raise InvalidParam("target.password: must be a non-empty string")
    if len(value) > 256:
        raise InvalidParam("target.password: must be at most 256 characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidParam("target.password: must not contain control characters")
    return value
