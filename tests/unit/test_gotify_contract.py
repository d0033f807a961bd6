"""`GotifyBackend` against `FakeGotify`, which checks requests the way gotify/server does."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from mxpush.backends import get_backend
from mxpush.backends.base import Delivered, Rejected
from mxpush.backends.gotify import GotifyBackend
from mxpush.errors import InvalidParam, PermanentDeliveryError, TransientDeliveryError
from mxpush.events import Urgency
from mxpush.model import RegistrationOptions
from mxpush.outbound import OutboundHttp
from mxpush.render import MessageKind, PushMessage, render_test
from mxpush.urlsafety import TargetPolicy
from tests.fakes.gotify import FakeGotify, gotify_error
from tests.fakes.server import Reply
from tests.unit.backend_support import DEFAULT, PUBLIC, rendered, resolving

TOKEN = "AppToken.Valid1"
BACKEND = GotifyBackend()
HTTP = OutboundHttp(TargetPolicy(allow_private=True))


@pytest.fixture(scope="module")
def running_gotify() -> Iterator[FakeGotify]:
    # One server per module: stopping one takes up to half a second (its poll interval).
    server = FakeGotify(prefix="/gotify")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def gotify(running_gotify: FakeGotify) -> FakeGotify:
    running_gotify.reset()
    running_gotify.app_tokens = {TOKEN}
    return running_gotify


@pytest.fixture
def target(gotify: FakeGotify) -> dict[str, Any]:
    return {"url": gotify.base_url, "token": TOKEN}


def sent_body(gotify: FakeGotify) -> dict[str, Any]:
    (request,) = gotify.requests
    body: dict[str, Any] = request.json()
    return body


def test_registry_knows_gotify() -> None:
    assert isinstance(get_backend("gotify"), GotifyBackend)
    assert get_backend("Gotify") is None


# --- the request --------------------------------------------------------------------------------


def test_send_makes_exactly_one_request(gotify: FakeGotify, target: dict[str, Any]) -> None:
    message = rendered("message_group_3_members.1.full")

    result = BACKEND.send(message, target, DEFAULT, HTTP)

    assert result == Delivered(200, ref=str(gotify.messages[0]["id"]))
    (request,) = gotify.requests
    assert request.method == "POST"
    assert request.path == "/gotify/message"
    assert request.headers["x-gotify-key"] == TOKEN
    assert request.headers["content-type"] == "application/json"
    assert dict(request.query) == {}
    assert TOKEN not in request.path
    body = request.json()
    assert set(body) == {"title", "message", "priority", "extras"}
    assert body["title"] == "E2E Group"
    assert body["message"] == "alice: hello group"
    # Gotify accepted and stored it.
    assert [m["message"] for m in gotify.messages] == ["alice: hello group"]


def test_non_ascii_text_arrives_intact(gotify: FakeGotify, target: dict[str, Any]) -> None:
    message = PushMessage(
        title="Café ☕", body="naïve — 日本語", urgency=Urgency.HIGH, kind=MessageKind.MESSAGE
    )

    assert isinstance(BACKEND.send(message, target, DEFAULT, HTTP), Delivered)

    body = sent_body(gotify)
    assert (body["title"], body["message"]) == ("Café ☕", "naïve — 日本語")


@pytest.mark.parametrize(
    ("name", "urgency", "priority"),
    [
        ("call_invite_dm.1.full", Urgency.CALL, 8),
        ("message_group_mention.1.full", Urgency.HIGHLIGHT, 7),
        ("message_dm_2_members.1.full", Urgency.HIGH, 6),
        ("message_group_3_members.1.full", Urgency.LOW, 4),
    ],
)
def test_priority_per_urgency(
    gotify: FakeGotify, target: dict[str, Any], name: str, urgency: Urgency, priority: int
) -> None:
    message = rendered(name)
    assert message.urgency is urgency

    BACKEND.send(message, target, DEFAULT, HTTP)

    assert sent_body(gotify)["priority"] == priority


@pytest.mark.parametrize(
    ("name", "priority"),
    [("message_dm_2_members.1.full", 9), ("message_group_3_members.1.full", 4)],
)
def test_priority_override(
    gotify: FakeGotify, target: dict[str, Any], name: str, priority: int
) -> None:
    options = RegistrationOptions(priority={"high": 9})

    BACKEND.send(rendered(name, options), target, options, HTTP)

    assert sent_body(gotify)["priority"] == priority


def test_click_url_and_plain_text_by_default(gotify: FakeGotify, target: dict[str, Any]) -> None:
    message = rendered("message_group_mention.1.full")

    BACKEND.send(message, target, DEFAULT, HTTP)

    extras = sent_body(gotify)["extras"]
    assert extras["client::notification"]["click"]["url"] == (
        "https://matrix.to/#/!bbQQMCPwmd9aM1RGdKYA_jwXJsIG1Mb_o6KwYXBITTU"
        "/$-ua_nw959CRpUT5XabGaIbDJyRyBzHQDZQieXOt1nHY"
    )
    assert extras["client::display"] == {"contentType": "text/plain"}


def test_custom_click_url_and_markdown(gotify: FakeGotify, target: dict[str, Any]) -> None:
    options = RegistrationOptions(click_url="mesh://room/{room_id}", markdown=True)

    BACKEND.send(rendered("message_dm_2_members.1.full", options), target, options, HTTP)

    extras = sent_body(gotify)["extras"]
    assert extras["client::notification"]["click"]["url"] == (
        "mesh://room/!YIkXvNfjndhc9gq49pm2feQdKxlW4LZTdsnotiA5TMg"
    )
    assert extras["client::display"] == {"contentType": "text/markdown"}


def test_no_click_extra_without_a_click_url(gotify: FakeGotify, target: dict[str, Any]) -> None:
    BACKEND.send(render_test(), target, DEFAULT, HTTP)

    body = sent_body(gotify)
    assert body["title"] == "mxpush test"
    assert "client::notification" not in body["extras"]


# --- the answers --------------------------------------------------------------------------------


def test_revoked_token_is_rejected(gotify: FakeGotify, target: dict[str, Any]) -> None:
    gotify.revoke(TOKEN)

    result = BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)

    assert isinstance(result, Rejected)
    assert "401" in result.reason
    assert TOKEN not in result.reason
    assert gotify.messages == []


def test_forbidden_is_rejected(gotify: FakeGotify, target: dict[str, Any]) -> None:
    gotify.queue(gotify_error(403, "not allowed"))

    result = BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)

    assert isinstance(result, Rejected)
    assert "403" in result.reason


@pytest.mark.parametrize(
    "reply",
    [
        Reply(503, {"error": "Service Unavailable"}),
        Reply(500, b"oops"),
        Reply(429, {"error": "Too Many Requests"}, {"Retry-After": "5"}),
    ],
    ids=["503", "500", "429"],
)
def test_overload_and_server_errors_are_transient(
    gotify: FakeGotify, target: dict[str, Any], reply: Reply
) -> None:
    gotify.queue(reply)

    with pytest.raises(TransientDeliveryError, match=str(reply.status)):
        BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)

    assert len(gotify.requests) == 1


def test_bad_request_is_permanent(gotify: FakeGotify, target: dict[str, Any]) -> None:
    gotify.queue(gotify_error(400, "Field 'message' is required"))

    with pytest.raises(PermanentDeliveryError, match="400") as caught:
        BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)

    assert "Field 'message' is required" in caught.value.reason
    assert TOKEN not in str(caught.value)


def test_redirect_is_permanent_and_not_followed(gotify: FakeGotify, target: dict[str, Any]) -> None:
    gotify.queue(Reply(302, None, {"Location": f"{gotify.base_url}/elsewhere/message"}))

    with pytest.raises(PermanentDeliveryError, match="redirect"):
        BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)

    assert [r.path for r in gotify.requests] == ["/gotify/message"]


def test_connection_refused_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    target = {"url": f"http://127.0.0.1:{port}/gotify", "token": TOKEN}

    with pytest.raises(TransientDeliveryError) as caught:
        BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)

    assert TOKEN not in str(caught.value)


def test_target_the_policy_forbids_at_send_time_is_permanent(
    gotify: FakeGotify, target: dict[str, Any]
) -> None:
    strict = OutboundHttp(TargetPolicy(allow_private=False))

    with pytest.raises(PermanentDeliveryError):
        BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, strict)

    assert gotify.requests == []


# --- validate_target ----------------------------------------------------------------------------


def test_valid_target_is_kept(gotify: FakeGotify) -> None:
    checked = BACKEND.validate_target(
        {"url": gotify.base_url, "token": TOKEN}, TargetPolicy(allow_private=True)
    )

    assert checked.target == {"url": gotify.base_url, "token": TOKEN}
    assert checked.warnings == []
    # Validation resolves and checks; it does not call Gotify.
    assert gotify.requests == []


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://push.example.org/gotify/", "https://push.example.org/gotify"),
        ("https://push.example.org/", "https://push.example.org"),
        ("https://push.example.org", "https://push.example.org"),
        ("  https://push.example.org/  ", "https://push.example.org"),
    ],
)
def test_trailing_slash_is_stripped(url: str, expected: str) -> None:
    policy = resolving({"push.example.org": [PUBLIC]})

    checked = BACKEND.validate_target({"url": url, "token": TOKEN}, policy)

    assert checked.target["url"] == expected


def test_unknown_keys_are_warned_about_and_dropped() -> None:
    policy = resolving({"push.example.org": [PUBLIC]})
    target = {"url": "https://push.example.org", "token": TOKEN, "priority": 5, "appid": 1}

    checked = BACKEND.validate_target(target, policy)

    assert checked.target == {"url": "https://push.example.org", "token": TOKEN}
    assert len(checked.warnings) == 2
    assert "target.appid" in checked.warnings[0]
    assert "target.priority" in checked.warnings[1]


@pytest.mark.parametrize(
    ("target", "field"),
    [
        ({"token": TOKEN}, "target.url"),
        ({"url": None, "token": TOKEN}, "target.url"),
        ({"url": "", "token": TOKEN}, "target.url"),
        ({"url": 42, "token": TOKEN}, "target.url"),
        ({"url": f"https://{PUBLIC}"}, "target.token"),
        ({"url": f"https://{PUBLIC}", "token": ""}, "target.token"),
        ({"url": f"https://{PUBLIC}", "token": 12345}, "target.token"),
        ({"url": f"https://{PUBLIC}", "token": "App Token"}, "target.token"),
        ({"url": f"https://{PUBLIC}", "token": "AppTök"}, "target.token"),
        ({"url": f"https://{PUBLIC}", "token": "App\x00Token"}, "target.token"),
        ({"url": f"https://{PUBLIC}", "token": "a" * 513}, "target.token"),
        ({"url": f"ftp://{PUBLIC}/", "token": TOKEN}, "target.url"),
        ({"url": f"https://user:pw@{PUBLIC}/", "token": TOKEN}, "target.url"),
        ({"url": f"https://{PUBLIC}/#x", "token": TOKEN}, "target.url"),
        ({"url": "http://127.0.0.1:8080", "token": TOKEN}, "target.url"),
        ({"url": "http://169.254.169.254", "token": TOKEN}, "target.url"),
        ({"url": "https://gotify.internal/", "token": TOKEN}, "target.url"),
    ],
)
def test_invalid_target_names_the_field(target: dict[str, Any], field: str) -> None:
    policy = resolving({"gotify.internal": ["10.0.0.5"]})

    with pytest.raises(InvalidParam) as caught:
        BACKEND.validate_target(target, policy)

    assert caught.value.error.startswith(field + ":"), caught.value.error
    assert caught.value.errcode == "M_INVALID_PARAM"


def test_metadata_target_is_invalid_even_if_private_targets_are_allowed() -> None:
    with pytest.raises(InvalidParam, match="metadata"):
        BACKEND.validate_target(
            {"url": "http://169.254.169.254/", "token": TOKEN}, TargetPolicy(allow_private=True)
        )


def test_unresolvable_target_is_invalid() -> None:
    def fail(host: str, port: int) -> Sequence[str]:
        return []

    with pytest.raises(InvalidParam, match=r"^target\.url: nowhere"):
        BACKEND.validate_target(
            {"url": "https://nowhere.example.org", "token": TOKEN}, TargetPolicy(resolver=fail)
        )


@pytest.mark.parametrize("target", [None, "https://push.example.org", ["url", "token"]])
def test_target_must_be_an_object(target: Any) -> None:
    with pytest.raises(InvalidParam, match="target: must be an object"):
        BACKEND.validate_target(target, TargetPolicy())


# --- secrets and priorities ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "masked"),
    [
        (TOKEN, "****id1"),
        ("A" * 11 + "xyz", "****xyz"),
        ("AbCdEfGhIjK", "****"),
        ("abc", "****"),
        ("", "****"),
    ],
)
def test_mask_target_never_returns_the_token(token: str, masked: str) -> None:
    target = {"url": "https://push.example.org", "token": token}

    result = BACKEND.mask_target(target)

    assert result == {"url": "https://push.example.org", "token": masked}
    if token:
        assert token not in json.dumps(result)


def test_validate_priority_accepts_known_keys_in_range() -> None:
    overrides = {"call": 10, "highlight": 0, "high": 9, "low": 1}

    assert BACKEND.validate_priority(overrides) == overrides
    assert BACKEND.validate_priority({}) == {}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"urgent": 5}, "options.priority.urgent"),
        ({"High": 5}, "options.priority.High"),
        ({"high": 11}, "options.priority.high"),
        ({"low": -1}, "options.priority.low"),
        ({"call": True}, "options.priority.call"),
        ({"call": "8"}, "options.priority.call"),
        ({"call": 8.0}, "options.priority.call"),
        ({"high": 5, "low": 99}, "options.priority.low"),
    ],
)
def test_validate_priority_refuses(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidParam) as caught:
        BACKEND.validate_priority(overrides)

    assert caught.value.error.startswith(field + ":"), caught.value.error
