"""`NtfyBackend` against `FakeNtfy`, which checks requests the way binwiederhier/ntfy does."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from mxpush.backends import get_backend
from mxpush.backends.base import Delivered, Rejected
from mxpush.backends.ntfy import NtfyBackend, split_topic_url
from mxpush.errors import InvalidParam, PermanentDeliveryError, TransientDeliveryError
from mxpush.events import Urgency
from mxpush.model import RegistrationOptions
from mxpush.outbound import OutboundHttp
from mxpush.render import MessageKind, PushMessage, render_test
from mxpush.retraction import notification_tag
from mxpush.urlsafety import TargetPolicy
from tests.fakes.ntfy import FakeNtfy, ntfy_error
from tests.fakes.server import Reply
from tests.unit.backend_support import DEFAULT, PUBLIC, rendered, resolving

TOKEN = "tk_AgQdq7mVBoFD37zQVN29RhuMzNIz2"
TOPIC = "mxpush_bob_7Hq2"
BACKEND = NtfyBackend()
HTTP = OutboundHttp(TargetPolicy(allow_private=True))
GROUP_ROOM = "!bbQQMCPwmd9aM1RGdKYA_jwXJsIG1Mb_o6KwYXBITTU"
MENTION_EVENT = "$-ua_nw959CRpUT5XabGaIbDJyRyBzHQDZQieXOt1nHY"


@pytest.fixture(scope="module")
def running_ntfy() -> Iterator[FakeNtfy]:
    server = FakeNtfy(prefix="/ntfy")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def ntfy(running_ntfy: FakeNtfy) -> FakeNtfy:
    running_ntfy.reset()
    running_ntfy.rate_limited = False
    running_ntfy.auth_enabled = True
    running_ntfy.users = {"bob": "correct horse battery"}
    running_ntfy.tokens = {TOKEN: "bob"}
    running_ntfy.grants = {"bob": {TOPIC}}
    running_ntfy.anonymous_write = set()
    return running_ntfy


@pytest.fixture
def target(ntfy: FakeNtfy) -> dict[str, Any]:
    return {"url": ntfy.topic_url(TOPIC), "token": TOKEN}


def sent_body(ntfy: FakeNtfy) -> dict[str, Any]:
    (request,) = ntfy.requests
    body: dict[str, Any] = request.json()
    return body


def test_registry_knows_ntfy() -> None:
    assert isinstance(get_backend("ntfy"), NtfyBackend)


# --- the request --------------------------------------------------------------------------------


def test_send_publishes_json_at_the_server_root(ntfy: FakeNtfy, target: dict[str, Any]) -> None:
    message = rendered("message_group_mention.1.full")

    result = BACKEND.send(message, target, DEFAULT, HTTP)

    assert result == Delivered(200)
    (request,) = ntfy.requests
    assert request.method == "POST"
    assert request.path == "/ntfy/"  # the root behind the proxy prefix, not /ntfy/<topic>
    assert dict(request.query) == {}
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {
        "topic": TOPIC,
        "title": "E2E Group",
        "message": "alice: bob: are you there?",
        "priority": 4,
        "tags": ["speech_balloon"],
        "click": f"https://matrix.to/#/{GROUP_ROOM}/{MENTION_EVENT}",
        "sequence_id": notification_tag(GROUP_ROOM),
    }
    # ntfy accepted it as a message of that topic, by that user.
    [stored] = ntfy.messages
    assert (stored["topic"], stored["_user"], stored["title"]) == (TOPIC, "bob", "E2E Group")


def test_basic_auth_with_username_and_password(ntfy: FakeNtfy) -> None:
    target = {"url": ntfy.topic_url(TOPIC), "username": "bob", "password": "correct horse battery"}

    assert BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP) == (
        Delivered(200)
    )

    (request,) = ntfy.requests
    scheme, _, encoded = request.headers["authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode() == "bob:correct horse battery"
    assert ntfy.messages[0]["_user"] == "bob"


def test_open_topic_needs_no_credentials(ntfy: FakeNtfy) -> None:
    ntfy.anonymous_write = {"open_topic"}

    result = BACKEND.send(
        rendered("message_dm_2_members.1.full"),
        {"url": ntfy.topic_url("open_topic")},
        DEFAULT,
        HTTP,
    )

    assert result == Delivered(200)
    assert "authorization" not in ntfy.requests[0].headers
    assert "_user" not in ntfy.messages[0]


def test_non_ascii_title_and_text_arrive_intact(ntfy: FakeNtfy, target: dict[str, Any]) -> None:
    message = PushMessage(
        title="Café ☕ Ünïcödé",
        body="naïve — 日本語 🎉",
        urgency=Urgency.HIGH,
        kind=MessageKind.MESSAGE,
    )

    assert BACKEND.send(message, target, DEFAULT, HTTP) == Delivered(200)

    assert (ntfy.messages[0]["title"], ntfy.messages[0]["message"]) == (
        "Café ☕ Ünïcödé",
        "naïve — 日本語 🎉",
    )


@pytest.mark.parametrize(
    ("name", "urgency", "expected"),
    [
        ("call_invite_dm.1.full", Urgency.CALL, (5, ["telephone_receiver"])),
        ("message_group_mention.1.full", Urgency.HIGHLIGHT, (4, ["speech_balloon"])),
        ("message_dm_2_members.1.full", Urgency.HIGH, (3, ["speech_balloon"])),
        ("message_group_3_members.1.full", Urgency.LOW, (2, ["speech_balloon"])),
        ("member_invite_dm.1.full", Urgency.HIGH, (3, ["envelope_with_arrow"])),
    ],
)
def test_priority_and_tags_per_kind(
    ntfy: FakeNtfy,
    target: dict[str, Any],
    name: str,
    urgency: Urgency,
    expected: tuple[int, list[str]],
) -> None:
    message = rendered(name)
    assert message.urgency is urgency

    BACKEND.send(message, target, DEFAULT, HTTP)

    body = sent_body(ntfy)
    assert (body["priority"], body["tags"]) == expected
    assert ntfy.messages[0]["priority"] == expected[0]


@pytest.mark.parametrize(
    ("name", "priority"),
    [("call_invite_dm.1.full", 3), ("message_group_3_members.1.full", 1)],
)
def test_priority_override(
    ntfy: FakeNtfy, target: dict[str, Any], name: str, priority: int
) -> None:
    options = RegistrationOptions(priority={"call": 3, "low": 1})

    BACKEND.send(rendered(name, options), target, options, HTTP)

    assert sent_body(ntfy)["priority"] == priority


def test_custom_click_url_and_markdown_when_asked(ntfy: FakeNtfy, target: dict[str, Any]) -> None:
    options = RegistrationOptions(click_url="element://room/{room_id}", markdown=True)

    BACKEND.send(rendered("message_group_mention.1.full", options), target, options, HTTP)

    body = sent_body(ntfy)
    assert body["click"] == f"element://room/{GROUP_ROOM}"
    assert body["markdown"] is True
    assert ntfy.messages[0]["content_type"] == "text/markdown"


def test_no_markdown_flag_unless_asked(ntfy: FakeNtfy, target: dict[str, Any]) -> None:
    BACKEND.send(rendered("message_group_mention.1.full"), target, DEFAULT, HTTP)

    assert "markdown" not in sent_body(ntfy)
    assert "content_type" not in ntfy.messages[0]


def test_test_push_has_no_click_and_a_check_mark(ntfy: FakeNtfy, target: dict[str, Any]) -> None:
    BACKEND.send(render_test(), target, DEFAULT, HTTP)

    body = sent_body(ntfy)
    assert body["title"] == "mxpush test"
    assert body["tags"] == ["white_check_mark"]
    assert "click" not in body


def test_include_content_false_sends_no_message_text(
    ntfy: FakeNtfy, target: dict[str, Any]
) -> None:
    options = RegistrationOptions(include_content=False)

    BACKEND.send(rendered("message_group_mention.1.full", options), target, options, HTTP)

    (request,) = ntfy.requests
    assert "are you there" not in request.body.decode()
    assert request.json()["message"] == "alice: New message"


def test_long_text_is_cut_to_ntfys_message_limit(ntfy: FakeNtfy, target: dict[str, Any]) -> None:
    message = PushMessage(
        title="alice", body="🎉" * 1500, urgency=Urgency.HIGH, kind=MessageKind.MESSAGE
    )

    assert BACKEND.send(message, target, DEFAULT, HTTP) == Delivered(200)

    text = ntfy.messages[0]["message"]
    assert len(text.encode()) <= 4096
    assert text.endswith("🎉…")


# --- the answers --------------------------------------------------------------------------------


def test_revoked_token_is_rejected(ntfy: FakeNtfy, target: dict[str, Any]) -> None:
    ntfy.revoke_token(TOKEN)

    result = BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)

    assert isinstance(result, Rejected)
    assert "401" in result.reason
    assert TOKEN not in result.reason
    assert ntfy.messages == []


def test_wrong_password_is_rejected(ntfy: FakeNtfy) -> None:
    target = {"url": ntfy.topic_url(TOPIC), "username": "bob", "password": "wrong"}

    result = BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)

    assert isinstance(result, Rejected)
    assert "401" in result.reason
    assert "wrong" not in result.reason


def test_no_write_access_is_rejected(ntfy: FakeNtfy) -> None:
    target = {"url": ntfy.topic_url("someone_elses_topic"), "token": TOKEN}

    result = BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)

    assert isinstance(result, Rejected)
    assert "403" in result.reason
    assert ntfy.messages == []


def test_rate_limit_is_transient(ntfy: FakeNtfy, target: dict[str, Any]) -> None:
    ntfy.rate_limited = True

    with pytest.raises(TransientDeliveryError, match="429"):
        BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)

    assert len(ntfy.requests) == 1


@pytest.mark.parametrize(
    "reply",
    [
        ntfy_error(500, 50001, "internal server error"),
        Reply(502, b"<html>Bad Gateway</html>", {"Content-Type": "text/html"}),
        Reply(503, b"", {}),
    ],
    ids=["500", "502", "503"],
)
def test_server_errors_are_transient(ntfy: FakeNtfy, target: dict[str, Any], reply: Reply) -> None:
    ntfy.queue(reply)

    with pytest.raises(TransientDeliveryError, match=str(reply.status)):
        BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)


def test_bad_request_is_permanent_and_says_why(ntfy: FakeNtfy, target: dict[str, Any]) -> None:
    ntfy.queue(ntfy_error(400, 40007, "invalid priority parameter"))

    with pytest.raises(PermanentDeliveryError, match="400") as caught:
        BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)

    assert "invalid priority parameter" in caught.value.reason
    assert TOKEN not in str(caught.value)


def test_redirect_is_permanent_and_not_followed(ntfy: FakeNtfy, target: dict[str, Any]) -> None:
    ntfy.queue(Reply(301, None, {"Location": "https://ntfy.example.org/"}))

    with pytest.raises(PermanentDeliveryError, match="redirect"):
        BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)

    assert len(ntfy.requests) == 1


def test_connection_refused_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    target = {"url": f"http://127.0.0.1:{port}/{TOPIC}", "token": TOKEN}

    with pytest.raises(TransientDeliveryError) as caught:
        BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)

    assert TOKEN not in str(caught.value)


def test_target_the_policy_forbids_at_send_time_is_permanent(
    ntfy: FakeNtfy, target: dict[str, Any]
) -> None:
    strict = OutboundHttp(TargetPolicy(allow_private=False))

    with pytest.raises(PermanentDeliveryError):
        BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, strict)

    assert ntfy.requests == []


# --- validate_target ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "stored", "server", "topic"),
    [
        ("https://ntfy.sh/mytopic", "https://ntfy.sh/mytopic", "https://ntfy.sh", "mytopic"),
        ("https://ntfy.sh/mytopic/", "https://ntfy.sh/mytopic", "https://ntfy.sh", "mytopic"),
        (
            "https://push.example.org:8443/ntfy/alerts_1-x",
            "https://push.example.org:8443/ntfy/alerts_1-x",
            "https://push.example.org:8443/ntfy",
            "alerts_1-x",
        ),
        (
            "  https://ntfy.sh/" + "a" * 64,
            "https://ntfy.sh/" + "a" * 64,
            "https://ntfy.sh",
            "a" * 64,
        ),
    ],
)
def test_topic_url_is_split_into_server_and_topic(
    url: str, stored: str, server: str, topic: str
) -> None:
    policy = resolving({"ntfy.sh": [PUBLIC], "push.example.org": [PUBLIC]})

    checked = BACKEND.validate_target({"url": url}, policy)

    assert checked.target == {"url": stored}
    assert split_topic_url(checked.target["url"]) == (server, topic)


def test_valid_targets_with_credentials_are_kept() -> None:
    policy = resolving({"ntfy.sh": [PUBLIC]})

    with_token = BACKEND.validate_target({"url": "https://ntfy.sh/t1", "token": TOKEN}, policy)
    with_password = BACKEND.validate_target(
        {"url": "https://ntfy.sh/t1", "username": "bob.b+1@x", "password": "p@ss w:rd"}, policy
    )

    assert with_token.target == {"url": "https://ntfy.sh/t1", "token": TOKEN}
    assert with_password.target == {
        "url": "https://ntfy.sh/t1",
        "username": "bob.b+1@x",
        "password": "p@ss w:rd",
    }


def test_unknown_keys_are_warned_about_and_dropped() -> None:
    checked = BACKEND.validate_target(
        {"url": "https://ntfy.sh/t1", "topic": "other", "priority": 5},
        resolving({"ntfy.sh": [PUBLIC]}),
    )

    assert checked.target == {"url": "https://ntfy.sh/t1"}
    assert [w.split(":")[0] for w in checked.warnings] == ["target.priority", "target.topic"]


@pytest.mark.parametrize(
    ("target", "field", "says"),
    [
        ({}, "target.url", "required"),
        ({"url": "https://ntfy.sh"}, "target.url", "topic URL"),
        ({"url": "https://ntfy.sh/"}, "target.url", "topic URL"),
        ({"url": "https://ntfy.sh/my.topic"}, "target.url", "not a valid ntfy topic"),
        ({"url": "https://ntfy.sh/my%20topic"}, "target.url", "not a valid ntfy topic"),
        ({"url": "https://ntfy.sh/" + "a" * 65}, "target.url", "at most 64"),
        ({"url": "https://ntfy.sh/docs"}, "target.url", "reserved"),
        ({"url": "https://ntfy.sh/t1?auth=QmFzaWM"}, "target.url", "query"),
        ({"url": "https://ntfy.sh/t1#x"}, "target.url", "fragment"),
        ({"url": "ftp://ntfy.sh/t1"}, "target.url", "scheme"),
        ({"url": "https://bob:pw@ntfy.sh/t1"}, "target.url", "user name"),
        ({"url": "http://127.0.0.1/t1"}, "target.url", "private"),
        ({"url": "http://169.254.169.254/t1"}, "target.url", "metadata"),
        (
            {"url": "https://ntfy.sh/t1", "token": "AgQdq7mVBoFD37zQVN29RhuMzNI"},
            "target.token",
            "tk_",
        ),
        ({"url": "https://ntfy.sh/t1", "token": "tk_ space"}, "target.token", "printable"),
        ({"url": "https://ntfy.sh/t1", "token": ""}, "target.token", "non-empty"),
        (
            {"url": "https://ntfy.sh/t1", "token": TOKEN, "username": "bob", "password": "pw"},
            "target.token",
            "not both",
        ),
        ({"url": "https://ntfy.sh/t1", "username": "bob"}, "target.password", "required"),
        ({"url": "https://ntfy.sh/t1", "password": "pw"}, "target.username", "required"),
        ({"url": "https://ntfy.sh/t1", "username": "b:ob", "password": "x"}, "target.username", ""),
        ({"url": "https://ntfy.sh/t1", "username": "bob", "password": ""}, "target.password", ""),
        (
            {"url": "https://ntfy.sh/t1", "username": "bob", "password": "a\r\nb"},
            "target.password",
            "control",
        ),
        ({"url": "https://ntfy.sh/t1", "username": "bob", "password": 42}, "target.password", ""),
    ],
)
def test_invalid_target_names_the_field(target: dict[str, Any], field: str, says: str) -> None:
    policy = resolving({"ntfy.sh": [PUBLIC]})

    with pytest.raises(InvalidParam) as caught:
        BACKEND.validate_target(target, policy)

    assert caught.value.error.startswith(field + ":"), caught.value.error
    assert says in caught.value.error


# --- secrets and priorities ---------------------------------------------------------------------


def test_mask_target_hides_token_and_password() -> None:
    masked = BACKEND.mask_target(
        {"url": "https://ntfy.sh/t1", "username": "bob", "password": "correct horse battery"}
    )
    with_token = BACKEND.mask_target({"url": "https://ntfy.sh/t1", "token": TOKEN})

    assert masked == {"url": "https://ntfy.sh/t1", "username": "bob", "password": "****ery"}
    assert with_token == {"url": "https://ntfy.sh/t1", "token": "****Iz2"}
    assert TOKEN not in json.dumps(with_token)


def test_validate_priority_uses_ntfys_scale() -> None:
    assert BACKEND.validate_priority({"call": 5, "low": 1}) == {"call": 5, "low": 1}
    for bad in (0, 6):
        with pytest.raises(InvalidParam, match=r"from 1 to 5"):
            BACKEND.validate_priority({"high": bad})
