"""`WebhookBackend` against `FakeWebhook`, a receiver that checks the documented document, the
signature and the extra headers."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mxpush.backends import get_backend
from mxpush.backends.base import Delivered, Rejected
from mxpush.backends.webhook import WebhookBackend, signature
from mxpush.errors import InvalidParam, PermanentDeliveryError, TransientDeliveryError
from mxpush.model import RegistrationOptions
from mxpush.outbound import OutboundHttp
from mxpush.render import render_test
from mxpush.urlsafety import TargetPolicy
from tests.fakes.server import Reply
from tests.fakes.webhook import FakeWebhook, check_document, verify
from tests.unit.backend_support import DEFAULT, PUBLIC, rendered, rendered_batch, resolving

SECRET = "s3cr3t-s3cr3t-s3cr3t-42"
NOW = 1795316400.25
STAMP = "2026-11-22T03:00:00.250Z"
BACKEND = WebhookBackend(clock=lambda: NOW)
HTTP = OutboundHttp(TargetPolicy(allow_private=True))
README = Path(__file__).parents[2] / "README.md"
GROUP_ROOM = "!bbQQMCPwmd9aM1RGdKYA_jwXJsIG1Mb_o6KwYXBITTU"
DM_ROOM = "!YIkXvNfjndhc9gq49pm2feQdKxlW4LZTdsnotiA5TMg"
MENTION_EVENT = "$-ua_nw959CRpUT5XabGaIbDJyRyBzHQDZQieXOt1nHY"
DM_EVENT = "$9YKtqgWbvfhsr99S2R_6S66iVIWunPAkPKPnHo_e5tI"


@pytest.fixture(scope="module")
def running_hook() -> Iterator[FakeWebhook]:
    server = FakeWebhook()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def hook(running_hook: FakeWebhook) -> FakeWebhook:
    running_hook.reset()
    running_hook.secret = SECRET
    running_hook.required_headers = {"x-api-key": "key-123"}
    return running_hook


@pytest.fixture
def target(hook: FakeWebhook) -> dict[str, Any]:
    return {"url": hook.hook_url, "secret": SECRET, "headers": {"X-Api-Key": "key-123"}}


def sent(hook: FakeWebhook) -> dict[str, Any]:
    (request,) = hook.requests
    document: dict[str, Any] = request.json()
    return document


def test_registry_knows_webhook() -> None:
    assert isinstance(get_backend("webhook"), WebhookBackend)


# --- the request --------------------------------------------------------------------------------


def test_mention_is_posted_as_the_documented_document(
    hook: FakeWebhook, target: dict[str, Any]
) -> None:
    result = BACKEND.send(rendered("message_group_mention.1.full"), target, DEFAULT, HTTP)

    assert result == Delivered(200)
    (request,) = hook.requests
    assert (request.method, request.path) == ("POST", "/hooks/matrix")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-api-key"] == "key-123"
    assert request.headers["x-mxpush-signature"] == signature(SECRET, request.body)
    assert request.json() == {
        "type": "mxpush.notification",
        "version": 1,
        "kind": "message",
        "event_id": MENTION_EVENT,
        "event_ids": [MENTION_EVENT],
        "count": 1,
        "room_id": GROUP_ROOM,
        "room_name": "E2E Group",
        "sender": "@alice:localhost",
        "sender_display_name": "alice",
        "event_type": "m.room.message",
        "msgtype": "m.text",
        "title": "E2E Group",
        "body": "alice: bob: are you there?",
        "text": "bob: are you there?",
        "counts": {"unread": 1},
        "click_url": f"https://matrix.to/#/{GROUP_ROOM}/{MENTION_EVENT}",
        "priority": 4,
        "urgency": "highlight",
        "timestamp": STAMP,
    }
    assert len(hook.documents) == 1  # the receiver accepted it


def test_signature_is_hmac_sha256_of_the_raw_body(
    hook: FakeWebhook, target: dict[str, Any]
) -> None:
    BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)

    (request,) = hook.requests
    digest = hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers["x-mxpush-signature"] == f"sha256={digest}"
    assert not verify("another-secret-0000", request.body, request.headers["x-mxpush-signature"])


def test_no_secret_no_signature(hook: FakeWebhook) -> None:
    hook.secret = None
    hook.required_headers = {}

    BACKEND.send(rendered("message_dm_2_members.1.full"), {"url": hook.hook_url}, DEFAULT, HTTP)

    assert "x-mxpush-signature" not in hook.requests[0].headers
    assert len(hook.documents) == 1


def test_query_of_the_url_is_kept(hook: FakeWebhook) -> None:
    hook.secret = None
    hook.required_headers = {}

    BACKEND.send(render_test(), {"url": hook.hook_url + "?channel=phone"}, DEFAULT, HTTP)

    assert dict(hook.requests[0].query) == {"channel": "phone"}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("call_invite_dm.1.full", ("call", "call", 5, "m.call.invite")),
        ("message_dm_2_members.1.full", ("message", "high", 3, "m.room.message")),
        ("message_group_3_members.1.full", ("message", "low", 2, "m.room.message")),
        ("member_invite_group.1.full", ("invite", "high", 3, "m.room.member")),
        ("encrypted_dm.1.full", ("message", "high", 3, "m.room.encrypted")),
    ],
)
def test_kind_urgency_and_priority(
    hook: FakeWebhook, target: dict[str, Any], name: str, expected: tuple[str, str, int, str]
) -> None:
    BACKEND.send(rendered(name), target, DEFAULT, HTTP)

    document = sent(hook)
    assert (
        document["kind"],
        document["urgency"],
        document["priority"],
        document["event_type"],
    ) == expected


def test_priority_override(hook: FakeWebhook, target: dict[str, Any]) -> None:
    options = RegistrationOptions(priority={"high": 1})

    BACKEND.send(rendered("message_dm_2_members.1.full", options), target, options, HTTP)

    assert sent(hook)["priority"] == 1


def test_encrypted_event_has_no_text(hook: FakeWebhook, target: dict[str, Any]) -> None:
    BACKEND.send(rendered("encrypted_group.1.full"), target, DEFAULT, HTTP)

    document = sent(hook)
    assert document["text"] is None
    assert document["body"].endswith("Encrypted message")


def test_include_content_false_sends_no_message_text(
    hook: FakeWebhook, target: dict[str, Any]
) -> None:
    options = RegistrationOptions(include_content=False, click_url="element://room/{room_id}")

    BACKEND.send(rendered("message_dm_2_members.1.full", options), target, options, HTTP)

    (request,) = hook.requests
    assert "hi, this is a DM" not in request.body.decode()
    document = request.json()
    assert (document["text"], document["body"]) == (None, "New message")
    assert document["click_url"] == f"element://room/{DM_ROOM}"


def test_event_id_only_push_invents_nothing(hook: FakeWebhook, target: dict[str, Any]) -> None:
    BACKEND.send(rendered("message_dm_2_members.0.eio"), target, DEFAULT, HTTP)

    document = sent(hook)
    assert document["event_id"] == DM_EVENT
    assert document["room_id"] == DM_ROOM
    assert [document[k] for k in ("sender", "sender_display_name", "event_type", "text")] == [
        None,
        None,
        None,
        None,
    ]
    assert document["title"] == "New message"


def test_coalesced_batch_lists_its_events(hook: FakeWebhook, target: dict[str, Any]) -> None:
    names = ["message_group_3_members.1.full", "message_group_3_members.1.full"]
    names.append("message_group_mention.1.full")

    BACKEND.send(rendered_batch(names), target, DEFAULT, HTTP)

    document = sent(hook)
    assert document["count"] == 3
    assert document["event_ids"] == ["$event-0", "$event-1", MENTION_EVENT]
    assert document["event_id"] == MENTION_EVENT
    assert document["title"] == "E2E Group: 3 new messages"
    assert document["urgency"] == "highlight"


def test_test_push_document(hook: FakeWebhook, target: dict[str, Any]) -> None:
    assert BACKEND.send(render_test(), target, DEFAULT, HTTP) == Delivered(200)

    document = sent(hook)
    assert (document["kind"], document["event_id"], document["event_ids"]) == ("test", None, [])
    assert (document["count"], document["click_url"], document["title"]) == (1, None, "mxpush test")


def test_every_rendered_fixture_follows_the_schema() -> None:
    for path in sorted((Path(__file__).parents[1] / "fixtures" / "synapse-1.163.2").glob("*")):
        if not path.name.endswith(".json") or '"event_id"' not in path.read_text():
            continue
        document = BACKEND.document(rendered(path.name.removesuffix(".json")), DEFAULT)
        assert check_document(json.loads(json.dumps(document))) is None, path.name


# --- the answers --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [404, 410])
def test_gone_endpoint_is_rejected(hook: FakeWebhook, target: dict[str, Any], status: int) -> None:
    hook.queue(Reply(status, {"error": "gone"}))

    result = BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)

    assert isinstance(result, Rejected)
    assert str(status) in result.reason
    assert SECRET not in result.reason


@pytest.mark.parametrize("status", [400, 401, 403, 409, 422, 429, 500, 502, 503])
def test_any_other_answer_is_retried(
    hook: FakeWebhook, target: dict[str, Any], status: int
) -> None:
    hook.queue(Reply(status, {"error": "nope"}))

    with pytest.raises(TransientDeliveryError, match=str(status)) as caught:
        BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)

    assert "key-123" not in str(caught.value)


def test_wrong_secret_is_answered_401_and_retried(
    hook: FakeWebhook, target: dict[str, Any]
) -> None:
    target = {**target, "secret": "not-the-receivers-secret"}

    with pytest.raises(TransientDeliveryError, match="401"):
        BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)

    assert hook.documents == []


def test_redirect_is_retried_with_a_hint(hook: FakeWebhook, target: dict[str, Any]) -> None:
    hook.queue(Reply(308, None, {"Location": "https://example.org/new"}))

    with pytest.raises(TransientDeliveryError, match="redirect"):
        BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)

    assert len(hook.requests) == 1


def test_connection_refused_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    with pytest.raises(TransientDeliveryError) as caught:
        BACKEND.send(
            rendered("message_dm_2_members.1.full"),
            {"url": f"http://127.0.0.1:{port}/hook?token=t0ps3cret", "secret": SECRET},
            DEFAULT,
            HTTP,
        )

    assert "t0ps3cret" not in str(caught.value)
    assert SECRET not in str(caught.value)


def test_target_the_policy_forbids_at_send_time_is_permanent(
    hook: FakeWebhook, target: dict[str, Any]
) -> None:
    strict = OutboundHttp(TargetPolicy(allow_private=False))

    with pytest.raises(PermanentDeliveryError):
        BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, strict)

    assert hook.requests == []


# --- validate_target ----------------------------------------------------------------------------


def test_valid_target_is_kept() -> None:
    target = {
        "url": "https://hooks.example.org/matrix?route=phone",
        "secret": SECRET,
        "headers": {"Authorization": "Bearer abc", "X-Route": "  phone  "},
    }

    checked = BACKEND.validate_target(target, resolving({"hooks.example.org": [PUBLIC]}))

    assert checked.target == {
        "url": "https://hooks.example.org/matrix?route=phone",
        "secret": SECRET,
        "headers": {"Authorization": "Bearer abc", "X-Route": "phone"},
    }
    assert checked.warnings == []


def test_empty_headers_are_not_stored() -> None:
    checked = BACKEND.validate_target(
        {"url": "https://hooks.example.org/", "headers": {}},
        resolving({"hooks.example.org": [PUBLIC]}),
    )

    assert checked.target == {"url": "https://hooks.example.org/"}


@pytest.mark.parametrize(
    ("target", "field"),
    [
        ({}, "target.url"),
        ({"url": "http://10.1.2.3/hook"}, "target.url"),
        ({"url": "http://[::ffff:169.254.169.254]/"}, "target.url"),
        ({"url": "https://hooks.example.org/", "secret": "short"}, "target.secret"),
        ({"url": "https://hooks.example.org/", "secret": 1234567890123456789}, "target.secret"),
        ({"url": "https://hooks.example.org/", "secret": "x" * 257}, "target.secret"),
        ({"url": "https://hooks.example.org/", "secret": "0123456789abcdef\n"}, "target.secret"),
        ({"url": "https://hooks.example.org/", "headers": ["X-A: b"]}, "target.headers"),
        ({"url": "https://hooks.example.org/", "headers": {"Bad Name": "x"}}, "target.headers"),
        ({"url": "https://hooks.example.org/", "headers": {"X-Ä": "x"}}, "target.headers"),
        ({"url": "https://hooks.example.org/", "headers": {"Host": "x"}}, "target.headers.Host"),
        (
            {"url": "https://hooks.example.org/", "headers": {"content-type": "text/plain"}},
            "target.headers.content-type",
        ),
        (
            {"url": "https://hooks.example.org/", "headers": {"Content-Length": "1"}},
            "target.headers.Content-Length",
        ),
        (
            {"url": "https://hooks.example.org/", "headers": {"Transfer-Encoding": "chunked"}},
            "target.headers.Transfer-Encoding",
        ),
        (
            {"url": "https://hooks.example.org/", "headers": {"Connection": "close"}},
            "target.headers.Connection",
        ),
        (
            {"url": "https://hooks.example.org/", "headers": {"X-Mxpush-Signature": "x"}},
            "target.headers.X-Mxpush-Signature",
        ),
        (
            {"url": "https://hooks.example.org/", "headers": {"X-A": "1", "x-a": "2"}},
            "target.headers.x-a",
        ),
        (
            {"url": "https://hooks.example.org/", "headers": {"X-A": "a\r\nX-Evil: 1"}},
            "target.headers.X-A",
        ),
        ({"url": "https://hooks.example.org/", "headers": {"X-A": "café"}}, "target.headers.X-A"),
        ({"url": "https://hooks.example.org/", "headers": {"X-A": 1}}, "target.headers.X-A"),
        (
            {"url": "https://hooks.example.org/", "headers": {"X-A": "v" * 1025}},
            "target.headers.X-A",
        ),
        (
            {"url": "https://hooks.example.org/", "headers": {f"X-{i}": "v" for i in range(21)}},
            "target.headers",
        ),
    ],
)
def test_invalid_target_names_the_field(target: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidParam) as caught:
        BACKEND.validate_target(target, resolving({"hooks.example.org": [PUBLIC]}))

    assert caught.value.error.startswith(field + ":"), caught.value.error


# --- secrets and priorities ---------------------------------------------------------------------


def test_mask_target_hides_the_secret_and_header_values() -> None:
    target: dict[str, Any] = {
        "url": "https://hooks.example.org/matrix",
        "secret": SECRET,
        "headers": {"Authorization": "Bearer abcdefghijklmnop", "X-Route": "phone"},
    }

    masked = BACKEND.mask_target(target)

    assert masked == {
        "url": "https://hooks.example.org/matrix",
        "secret": "****-42",
        "headers": {"Authorization": "****nop", "X-Route": "****"},
    }
    assert target["headers"]["X-Route"] == "phone"  # the stored target is untouched


def test_validate_priority_uses_one_to_five() -> None:
    assert BACKEND.validate_priority({"call": 5, "low": 1}) == {"call": 5, "low": 1}
    with pytest.raises(InvalidParam, match=r"from 1 to 5"):
        BACKEND.validate_priority({"high": 6})


# --- the README -----------------------------------------------------------------------------------


def readme_snippet(name: str) -> str:
    match = re.search(rf"<!-- {name} -->\n```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert match, f"README has no {name} snippet"
    return match.group(1)


def test_readme_signature_check_accepts_what_mxpush_signs(
    hook: FakeWebhook, target: dict[str, Any]
) -> None:
    BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)
    (request,) = hook.requests
    namespace: dict[str, Any] = {}
    exec(readme_snippet("webhook-verify"), namespace)  # noqa: S102 - our own README's snippet
    is_from_mxpush = namespace["is_from_mxpush"]

    assert is_from_mxpush(SECRET, request.body, request.headers["x-mxpush-signature"])
    assert not is_from_mxpush(SECRET, request.body + b" ", request.headers["x-mxpush-signature"])
    assert not is_from_mxpush(
        "wrong-secret-wrong", request.body, request.headers["x-mxpush-signature"]
    )


def test_readme_example_document_follows_the_schema() -> None:
    match = re.search(
        r"<!-- webhook-document -->\n```json\n(.*?)```", README.read_text(), re.DOTALL
    )
    assert match, "README has no webhook-document example"

    assert check_document(json.loads(match.group(1))) is None
