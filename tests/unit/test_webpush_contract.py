"""`WebPushBackend` against `FakePushService`, which verifies the VAPID JWT and decrypts each push
with the subscribing browser's own keys, independently of pywebpush."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from mxpush.backends import get_backend
from mxpush.backends.base import Delivered, Rejected
from mxpush.backends.webpush import MAX_BODY_BYTES, WebPushBackend
from mxpush.errors import InvalidParam, PermanentDeliveryError, TransientDeliveryError
from mxpush.events import Urgency, summarize
from mxpush.model import Batch, EventRef, RegistrationOptions
from mxpush.notification import parse_notify_body
from mxpush.outbound import OutboundHttp
from mxpush.render import MessageKind, PushMessage, render_batch, render_test
from mxpush.urlsafety import TargetPolicy
from mxpush.vapid import (
    VapidKey,
    WebPushKeyUnreadable,
    WebPushUnavailable,
    generate_private_key,
    load_vapid_key,
)
from tests.fakes.server import Reply
from tests.fakes.webpush import Browser, FakePushService, push_error

FIXTURES = Path(__file__).parents[1] / "fixtures" / "synapse-1.163.2"
SUBJECT = "mailto:ops@example.org"
KEY = load_vapid_key(generate_private_key(), SUBJECT)
BACKEND = WebPushBackend(lambda: KEY)
HTTP = OutboundHttp(TargetPolicy(allow_private=True))
LOCAL = TargetPolicy(allow_private=True)
DEFAULT = RegistrationOptions()
PUBLIC = "93.184.216.34"
DM = "message_dm_2_members.1.full"
DM_EVENT = "$9YKtqgWbvfhsr99S2R_6S66iVIWunPAkPKPnHo_e5tI"
DM_ROOM = "!YIkXvNfjndhc9gq49pm2feQdKxlW4LZTdsnotiA5TMg"
GROUP_ROOM = "!bbQQMCPwmd9aM1RGdKYA_jwXJsIG1Mb_o6KwYXBITTU"


def rendered(*names: str, options: RegistrationOptions = DEFAULT) -> PushMessage:
    """The batch of the named captures (the last one shown), rendered as the sender does."""
    events = []
    for name in names:
        notification = parse_notify_body((FIXTURES / f"{name}.json").read_bytes())
        events.append(summarize(notification, notification.devices[0]))
    refs = tuple(
        EventRef(f"{e.event_id}-{i}", e.room_id, 1000.0 + i, e.urgency)
        for i, e in enumerate(events)
    )
    return render_batch(Batch("batch-1", events[-1], refs, 1000.0), options)


@pytest.fixture(scope="module")
def running_push() -> Iterator[FakePushService]:
    server = FakePushService().start()
    yield server
    server.stop()


@pytest.fixture
def push(running_push: FakePushService) -> FakePushService:
    running_push.reset()
    return running_push


@pytest.fixture
def browser(push: FakePushService) -> Browser:
    return push.subscribe(KEY.public_key)


@pytest.fixture
def target(browser: Browser) -> dict[str, Any]:
    return BACKEND.validate_target(browser.subscription(), LOCAL).target


def delivered(push: FakePushService) -> dict[str, Any]:
    """The one push the service accepted, decrypted."""
    (message,) = push.messages
    payload: dict[str, Any] = message.json()
    return payload


def expected_topic(browser: Browser, room_id: str) -> str:
    digest = hmac.new(browser.auth_secret, room_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode()[:32]


def test_registry_knows_webpush() -> None:
    backend = get_backend("webpush")
    assert isinstance(backend, WebPushBackend)
    assert backend.display_name == "Web Push"


def test_no_handler_loads_the_crypto_stack_at_start() -> None:
    """The registration Lambda imports every backend, the Web Push sender its own: neither may
    pay for cryptography, pywebpush (requests, aiohttp) until a Web Push call needs them."""
    root = Path(__file__).resolve().parents[2]
    handlers = ["notify", "registration", "gotify_sender", "webpush_sender", "record_outcome"]
    path = [str(root / "layers" / "mxpush")] + [str(root / "functions" / h) for h in handlers]
    heavy = ["cryptography", "py_vapid", "pywebpush", "http_ece", "requests", "aiohttp"]
    code = (
        f"import sys; sys.path[:0] = {path!r}; "
        + "; ".join(f"import {h}_handler" for h in handlers)
        + f"; print([m for m in {heavy!r} if m in sys.modules])"
    )
    env = {**os.environ, "AWS_REGION": "us-east-1"}

    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )

    assert out.stdout.strip() == "[]"


# --- the request --------------------------------------------------------------------------------


def test_dm_is_one_encrypted_signed_push(
    push: FakePushService, browser: Browser, target: dict[str, Any]
) -> None:
    started = time.time()

    result = BACKEND.send(rendered(DM), target, DEFAULT, HTTP)

    assert result == Delivered(201)
    (request,) = push.requests
    assert request.method == "POST"
    assert request.path == f"/push/{browser.subscription_id}"
    headers = request.headers
    assert headers["ttl"] == "900"
    assert headers["urgency"] == "normal"
    assert headers["topic"] == expected_topic(browser, DM_ROOM)
    assert headers["content-encoding"] == "aes128gcm"
    assert headers["content-type"] == "application/octet-stream"
    assert headers["authorization"].startswith("vapid t=")
    assert "crypto-key" not in headers  # aes128gcm carries the key in the body
    # Nothing readable goes over the wire: no text, no IDs.
    for secret in (b"hi, this is a DM", b"alice", DM_ROOM.encode(), DM_EVENT.encode()):
        assert secret not in request.body
    (message,) = push.messages
    assert message.claims["aud"] == push.url
    assert message.claims["sub"] == SUBJECT
    assert started + 11 * 3600 < message.claims["exp"] <= time.time() + 24 * 3600
    assert message.json() == {
        "kind": "message",
        "prio": "high",
        "event_id": DM_EVENT,
        "room_id": DM_ROOM,
        "tag": DM_ROOM,
        "counts": {"unread": 2},
        "title": "alice",
        "body": "hi, this is a DM",
        "click_url": f"https://matrix.to/#/{DM_ROOM}/{DM_EVENT}",
    }


def test_call_is_high_urgency_short_lived_and_replaces_nothing(
    push: FakePushService, target: dict[str, Any]
) -> None:
    BACKEND.send(rendered("call_invite_dm.1.full"), target, DEFAULT, HTTP)

    (message,) = push.messages
    assert (message.urgency, message.ttl, message.topic) == ("high", 60, None)
    payload = message.json()
    assert payload["kind"] == "call"
    assert payload["title"] == "Incoming call from alice"
    assert payload["body"] == "Voice call"
    assert "sdp" not in message.plaintext.decode()


@pytest.mark.parametrize(
    ("name", "urgency"),
    [
        ("call_invite_dm.1.full", "high"),
        ("message_group_mention.1.full", "high"),
        ("message_dm_2_members.1.full", "normal"),
        ("message_group_3_members.1.full", "low"),
    ],
)
def test_urgency_per_event(
    push: FakePushService, target: dict[str, Any], name: str, urgency: str
) -> None:
    BACKEND.send(rendered(name), target, DEFAULT, HTTP)

    assert push.requests[0].headers["urgency"] == urgency
    assert push.messages[0].urgency == urgency


@pytest.mark.parametrize(
    ("overrides", "name", "urgency"),
    [
        ({"high": 3}, DM, "high"),
        ({"high": 3}, "message_group_3_members.1.full", "low"),
        ({"low": 0}, "message_group_3_members.1.full", "very-low"),
        ({"call": 2}, "call_invite_dm.1.full", "normal"),
    ],
)
def test_priority_overrides_choose_the_urgency(
    push: FakePushService,
    target: dict[str, Any],
    overrides: dict[str, int],
    name: str,
    urgency: str,
) -> None:
    options = RegistrationOptions(priority=overrides)

    BACKEND.send(rendered(name, options=options), target, options, HTTP)

    assert push.messages[0].urgency == urgency


def test_event_id_only_push_carries_ids_and_counts_only(
    push: FakePushService, target: dict[str, Any]
) -> None:
    BACKEND.send(rendered("message_dm_2_members.0.eio"), target, DEFAULT, HTTP)

    (message,) = push.messages
    assert message.json() == {
        "kind": "message",
        "prio": "high",
        "event_id": DM_EVENT,
        "room_id": DM_ROOM,
        "tag": DM_ROOM,
        "counts": {"unread": 2},
        "click_url": f"https://matrix.to/#/{DM_ROOM}/{DM_EVENT}",
    }
    assert message.topic == expected_topic(push.browsers[message.subscription_id], DM_ROOM)


def test_include_content_false_sends_no_text_and_no_names(
    push: FakePushService, target: dict[str, Any]
) -> None:
    options = RegistrationOptions(include_content=False)

    BACKEND.send(rendered(DM, options=options), target, options, HTTP)

    payload = delivered(push)
    assert "title" not in payload
    assert "body" not in payload
    assert payload["event_id"] == DM_EVENT
    plaintext = push.messages[0].plaintext.decode()
    assert "hi, this is a DM" not in plaintext
    assert "alice" not in plaintext


def test_encrypted_event_says_so_and_never_carries_ciphertext(
    push: FakePushService, target: dict[str, Any]
) -> None:
    BACKEND.send(rendered("encrypted_dm.1.full"), target, DEFAULT, HTTP)

    payload = delivered(push)
    assert (payload["title"], payload["body"]) == ("alice", "Encrypted message")
    assert "AwgAEnACgAkLmt6qF84IK" not in push.messages[0].plaintext.decode()


def test_burst_says_how_many(push: FakePushService, target: dict[str, Any]) -> None:
    name = "message_group_3_members.1.full"

    BACKEND.send(rendered(name, name, "message_group_mention.1.full"), target, DEFAULT, HTTP)

    payload = delivered(push)
    assert payload["count"] == 3
    assert payload["title"] == "E2E Group: 3 new messages"
    assert push.messages[0].urgency == "high"  # the mention raised the batch


def test_custom_click_url(push: FakePushService, target: dict[str, Any]) -> None:
    options = RegistrationOptions(click_url="https://app.element.io/#/room/{room_id}")

    BACKEND.send(rendered(DM, options=options), target, options, HTTP)

    assert delivered(push)["click_url"] == f"https://app.element.io/#/room/{DM_ROOM}"


def test_test_push_has_text_but_no_room(push: FakePushService, target: dict[str, Any]) -> None:
    options = RegistrationOptions(include_content=False)

    assert BACKEND.send(render_test(), target, options, HTTP) == Delivered(201)

    (message,) = push.messages
    assert message.topic is None
    assert message.json() == {
        "kind": "test",
        "prio": "high",
        "counts": {"unread": 0},
        "title": "mxpush test",
        "body": "Your push gateway can reach this device.",
    }


def test_long_text_is_shortened_to_fit_4096_bytes(
    push: FakePushService, target: dict[str, Any]
) -> None:
    message = PushMessage(
        title="Ünïcode room " * 40,
        body="日本語のテキスト " * 600,
        urgency=Urgency.HIGH,
        kind=MessageKind.MESSAGE,
        event_id="$e",
        room_id="!r:example.org",
        event_type="m.room.message",
    )

    assert BACKEND.send(message, target, DEFAULT, HTTP) == Delivered(201)

    (request,) = push.requests
    assert 4000 < len(request.body) <= MAX_BODY_BYTES
    payload = delivered(push)
    assert payload["body"].endswith("…")
    assert payload["body"].startswith("日本語のテキスト 日本語")
    assert payload["title"] == message.title  # the body gave way first
    assert payload["event_id"] == "$e"


def test_topic_is_per_room_and_per_subscription(push: FakePushService) -> None:
    first, second = push.subscribe(KEY.public_key), push.subscribe(KEY.public_key)
    for browser in (first, second):
        target = BACKEND.validate_target(browser.subscription(), LOCAL).target
        BACKEND.send(rendered(DM), target, DEFAULT, HTTP)
        BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)
        BACKEND.send(rendered("message_group_3_members.1.full"), target, DEFAULT, HTTP)

    topics = [m.topic for m in push.messages]
    assert all(t is not None and len(t) == 32 for t in topics)
    assert topics[0] == topics[1]  # same room, same subscription: replaces
    assert topics[0] != topics[2]  # another room
    assert topics[3] != topics[0]  # the same room, but unlinkable across subscriptions
    assert topics[2] == expected_topic(first, GROUP_ROOM)


# --- the answers --------------------------------------------------------------------------------


def test_unsubscribed_browser_is_rejected(
    push: FakePushService, browser: Browser, target: dict[str, Any]
) -> None:
    push.unsubscribe(browser)

    result = BACKEND.send(rendered(DM), target, DEFAULT, HTTP)

    assert isinstance(result, Rejected)
    assert "410" in result.reason
    assert push.messages == []


def test_unknown_subscription_is_rejected(push: FakePushService, target: dict[str, Any]) -> None:
    push.queue(push_error(404, "Unknown subscription"))

    result = BACKEND.send(rendered(DM), target, DEFAULT, HTTP)

    assert isinstance(result, Rejected)
    assert "404" in result.reason
    assert str(target["keys"]["auth"]) not in result.reason


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_overload_and_server_errors_are_transient(
    push: FakePushService, target: dict[str, Any], status: int
) -> None:
    push.queue(push_error(status, "busy"))

    with pytest.raises(TransientDeliveryError, match=str(status)):
        BACKEND.send(rendered(DM), target, DEFAULT, HTTP)

    assert len(push.requests) == 1


def test_too_large_is_permanent(push: FakePushService, target: dict[str, Any]) -> None:
    push.queue(push_error(413, "Payload Too Large"))

    with pytest.raises(PermanentDeliveryError, match="413: the push is too large"):
        BACKEND.send(rendered(DM), target, DEFAULT, HTTP)


def test_other_client_errors_are_permanent(push: FakePushService, target: dict[str, Any]) -> None:
    push.queue(push_error(400, "Invalid TTL header"))

    with pytest.raises(PermanentDeliveryError, match="400") as caught:
        BACKEND.send(rendered(DM), target, DEFAULT, HTTP)

    assert "Invalid TTL header" in caught.value.reason


def test_subscription_made_with_another_key_is_a_clear_failure(push: FakePushService) -> None:
    other = load_vapid_key(generate_private_key(), SUBJECT)
    browser = push.subscribe(other.public_key)
    target = BACKEND.validate_target(browser.subscription(), LOCAL).target

    with pytest.raises(PermanentDeliveryError, match=r"403.*VAPID") as caught:
        BACKEND.send(rendered(DM), target, DEFAULT, HTTP)

    assert push.messages == []
    assert "not the key this subscription was made with" in str(caught.value)


def test_redirect_is_permanent_and_not_followed(
    push: FakePushService, target: dict[str, Any]
) -> None:
    push.queue(Reply(307, None, {"Location": f"{push.url}/push/elsewhere"}))

    with pytest.raises(PermanentDeliveryError, match="redirect"):
        BACKEND.send(rendered(DM), target, DEFAULT, HTTP)

    assert len(push.requests) == 1


def test_connection_refused_is_transient(target: dict[str, Any]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    moved = {**target, "endpoint": f"http://127.0.0.1:{port}/push/x"}

    with pytest.raises(TransientDeliveryError) as caught:
        BACKEND.send(rendered(DM), moved, DEFAULT, HTTP)

    assert str(target["keys"]["auth"]) not in str(caught.value)


def test_endpoint_the_policy_forbids_at_send_time_is_permanent(
    push: FakePushService, target: dict[str, Any]
) -> None:
    strict = OutboundHttp(TargetPolicy(allow_private=False))

    with pytest.raises(PermanentDeliveryError):
        BACKEND.send(rendered(DM), target, DEFAULT, strict)

    assert push.requests == []


def test_without_a_vapid_key_nothing_is_sent(push: FakePushService, target: dict[str, Any]) -> None:
    def unavailable() -> VapidKey:
        raise WebPushUnavailable("no VAPID private key is configured")

    backend = WebPushBackend(unavailable)

    with pytest.raises(PermanentDeliveryError, match="Web Push is not enabled"):
        backend.send(rendered(DM), target, DEFAULT, HTTP)
    with pytest.raises(InvalidParam, match=r"^backend: Web Push is not enabled"):
        backend.validate_target(dict(target), LOCAL)
    assert push.requests == []


def test_an_unreadable_key_is_a_transient_error(
    push: FakePushService, target: dict[str, Any]
) -> None:
    def unreadable() -> VapidKey:
        raise WebPushKeyUnreadable

    backend = WebPushBackend(unreadable)

    # Step Functions retries it with backoff, by which time the key is read again.
    with pytest.raises(TransientDeliveryError, match="temporarily unavailable"):
        backend.send(rendered(DM), target, DEFAULT, HTTP)
    with pytest.raises(WebPushKeyUnreadable) as refused:
        backend.validate_target(dict(target), LOCAL)
    assert refused.value.status == 503
    assert push.requests == []


# --- the fake itself: it really checks ---------------------------------------------------------


def test_the_fake_refuses_a_body_encrypted_to_other_keys(
    push: FakePushService, browser: Browser
) -> None:
    stranger = push.subscribe(KEY.public_key)
    wrong_keys = BACKEND.validate_target(stranger.subscription(), LOCAL).target["keys"]
    misdirected = {"endpoint": browser.endpoint, "keys": wrong_keys}

    with pytest.raises(PermanentDeliveryError, match="400") as caught:
        BACKEND.send(rendered(DM), misdirected, DEFAULT, HTTP)
    assert "does not decrypt" in caught.value.reason

    assert push.messages == []


def test_the_fake_refuses_a_forged_signature(push: FakePushService, browser: Browser) -> None:
    impostor = load_vapid_key(generate_private_key(), SUBJECT)
    forged = VapidKey(KEY.public_key, SUBJECT, impostor.signer)

    backend = WebPushBackend(lambda: forged)
    target = BACKEND.validate_target(browser.subscription(), LOCAL).target
    # The impostor's signer puts its own key in k=: swap in ours, keeping its signature.
    original = forged.signer.sign

    def sign(claims: dict[str, Any]) -> dict[str, str]:
        header = str(original(claims)["Authorization"])
        token = header.split("t=")[1].split(",", maxsplit=1)[0]
        return {"Authorization": f"vapid t={token}, k={KEY.public_key}"}

    forged.signer.sign = sign
    with pytest.raises(PermanentDeliveryError, match=r"403.*bad signature"):
        backend.send(rendered(DM), target, DEFAULT, HTTP)
    assert push.messages == []


# --- validate_target ----------------------------------------------------------------------------


def test_browser_subscription_json_is_accepted_as_is(browser: Browser) -> None:
    checked = BACKEND.validate_target(browser.subscription(), LOCAL)

    assert checked.target == {
        "endpoint": browser.endpoint,
        "keys": {"p256dh": browser.p256dh, "auth": browser.auth},
    }
    assert checked.warnings == []  # expirationTime is known, and not stored


def test_padded_standard_base64_keys_are_normalized(browser: Browser) -> None:
    p256dh = base64.b64encode(base64.urlsafe_b64decode(browser.p256dh + "=")).decode()
    auth = base64.b64encode(browser.auth_secret).decode()
    assert auth.endswith("==")

    checked = BACKEND.validate_target(
        {"endpoint": browser.endpoint, "keys": {"p256dh": p256dh, "auth": auth}}, LOCAL
    )

    assert checked.target["keys"] == {"p256dh": browser.p256dh, "auth": browser.auth}


def test_unknown_fields_are_warned_about_and_dropped(browser: Browser) -> None:
    checked = BACKEND.validate_target({**browser.subscription(), "options": {}}, LOCAL)

    assert set(checked.target) == {"endpoint", "keys"}
    assert checked.warnings == ["target.options: unknown field for backend 'webpush', ignored"]


def _keys(browser: Browser, **changes: Any) -> dict[str, Any]:
    keys: dict[str, Any] = {"p256dh": browser.p256dh, "auth": browser.auth}
    keys.update(changes)
    return {k: v for k, v in keys.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


NOT_ON_CURVE = b64(b"\x04" + b"\x01" * 64)
COMPRESSED_SIZE = b64(b"\x02" + b"\x01" * 32)
UNCOMPRESSED_MARKER_WRONG = b64(b"\x05" + b"\x01" * 64)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"endpoint": None}, "target.endpoint"),
        ({"endpoint": ""}, "target.endpoint"),
        ({"endpoint": 5}, "target.endpoint"),
        ({"endpoint": "ftp://127.0.0.1/push"}, "target.endpoint"),
        ({"endpoint": "https://user:pw@127.0.0.1/push"}, "target.endpoint"),
        ({"endpoint": "http://169.254.169.254/push"}, "target.endpoint"),
        ({"keys": None}, "target.keys"),
        ({"keys": "p256dh,auth"}, "target.keys"),
        ({"keys": {"auth": "x"}}, "target.keys.p256dh"),
        ({"keys": {"p256dh": 7, "auth": "AAAAAAAAAAAAAAAAAAAAAA"}}, "target.keys.p256dh"),
        ({"expirationTime": "tomorrow"}, "target.expirationTime"),
    ],
)
def test_invalid_target_names_the_field(
    browser: Browser, change: dict[str, Any], field: str
) -> None:
    target = {**browser.subscription(), **change}
    target = {k: v for k, v in target.items() if v is not None}

    with pytest.raises(InvalidParam) as caught:
        BACKEND.validate_target(target, LOCAL)

    assert caught.value.error.startswith(field + ":"), caught.value.error


@pytest.mark.parametrize(
    ("keys", "field", "says"),
    [
        ({"p256dh": None}, "target.keys.p256dh", "required"),
        ({"p256dh": "not base64!"}, "target.keys.p256dh", "base64url"),
        ({"p256dh": "QUJD"}, "target.keys.p256dh", "65 bytes, not 3"),
        ({"p256dh": COMPRESSED_SIZE}, "target.keys.p256dh", "65 bytes, not 33"),
        ({"p256dh": NOT_ON_CURVE}, "target.keys.p256dh", "P-256 public key"),
        ({"p256dh": UNCOMPRESSED_MARKER_WRONG}, "target.keys.p256dh", "P-256 public key"),
        ({"auth": None}, "target.keys.auth", "required"),
        ({"auth": ""}, "target.keys.auth", "base64url"),
        ({"auth": b64(b"x" * 17)}, "target.keys.auth", "16 bytes, not 17"),
        ({"auth": "QUJD=A"}, "target.keys.auth", "base64url"),
    ],
)
def test_invalid_keys_are_refused(
    browser: Browser, keys: dict[str, Any], field: str, says: str
) -> None:
    target = {"endpoint": browser.endpoint, "keys": _keys(browser, **keys)}

    with pytest.raises(InvalidParam) as caught:
        BACKEND.validate_target(target, LOCAL)

    assert caught.value.error.startswith(field + ":"), caught.value.error
    assert says in caught.value.error


def test_endpoint_must_be_https_unless_private_targets_are_allowed(browser: Browser) -> None:
    def resolve(host: str, port: int) -> Sequence[str]:
        return [PUBLIC]

    public = TargetPolicy(resolver=resolve)
    keys = browser.subscription()["keys"]

    with pytest.raises(InvalidParam, match=r"^target\.endpoint: must be an https URL"):
        BACKEND.validate_target({"endpoint": "http://push.example.org/x", "keys": keys}, public)
    checked = BACKEND.validate_target(
        {"endpoint": "https://push.example.org/x", "keys": keys}, public
    )
    assert checked.target["endpoint"] == "https://push.example.org/x"


def test_private_endpoint_is_refused_by_default(browser: Browser) -> None:
    with pytest.raises(InvalidParam, match=r"^target\.endpoint: .*MXPUSH_ALLOW_PRIVATE_TARGETS"):
        BACKEND.validate_target(browser.subscription(), TargetPolicy())


# --- secrets and priorities ---------------------------------------------------------------------


def test_mask_target_hides_the_keys_and_the_endpoint_path(target: dict[str, Any]) -> None:
    masked = BACKEND.mask_target(target)

    origin, _, path = target["endpoint"].partition("://")[2].partition("/")
    assert masked["endpoint"] == f"http://{origin}/****{path[-3:]}"
    assert path not in json.dumps(masked)
    assert masked["keys"] == {
        "p256dh": "****" + target["keys"]["p256dh"][-3:],
        "auth": "****" + target["keys"]["auth"][-3:],
    }
    text = json.dumps(masked)
    assert target["keys"]["p256dh"] not in text
    assert target["keys"]["auth"] not in text


def test_validate_priority_takes_urgency_levels() -> None:
    assert BACKEND.validate_priority({"call": 3, "high": 2, "low": 0}) == {
        "call": 3,
        "high": 2,
        "low": 0,
    }
    with pytest.raises(InvalidParam, match=r"^options\.priority\.high: must be an integer from 0"):
        BACKEND.validate_priority({"high": 4})
