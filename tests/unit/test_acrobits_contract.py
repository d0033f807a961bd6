"""`AcrobitsBackend` against `FakeAcrobitsPnm`, which checks requests and answers as PNM does."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from mxpush.backends import get_backend
from mxpush.backends.acrobits import DEFAULT_URL, AcrobitsBackend
from mxpush.backends.base import Delivered, Rejected
from mxpush.errors import InvalidParam, PermanentDeliveryError, TransientDeliveryError
from mxpush.events import Urgency
from mxpush.model import RegistrationOptions
from mxpush.outbound import OutboundHttp
from mxpush.render import MessageKind, PushMessage, render_test
from mxpush.urlsafety import TargetPolicy
from tests.fakes.acrobits import FakeAcrobitsPnm
from tests.fakes.server import Reply
from tests.unit.backend_support import DEFAULT, PUBLIC, rendered, resolving

TOKEN = "QVBBOTFiRzlhcVd2bW54bllCWldHOWh4dnRrZ3pUWFNvcGZpdWZ6bWM2dFAzS2J="
APP_ID = "com.cloudsoftphone.app"
CALL_TOKEN = "Udl99X2JFP1bWwS5gR/wGeLE1hmAB2CMpr1Ej0wxkrY="
CALL_APP_ID = "com.cloudsoftphone.app.pushkit"
SELECTOR = "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14"
DM_ROOM = "!YIkXvNfjndhc9gq49pm2feQdKxlW4LZTdsnotiA5TMg"
DM_EVENT = "$9YKtqgWbvfhsr99S2R_6S66iVIWunPAkPKPnHo_e5tI"
GROUP_ROOM = "!bbQQMCPwmd9aM1RGdKYA_jwXJsIG1Mb_o6KwYXBITTU"
GROUP_EVENT = "$qVYN4m3Z_uU6ednCv43VNRVpkUL2EvV13YUB5DoO74U"
CALL_EVENT = "$bObJ4sJMXlYweZxqmA6OVwGsSZZlM0cpBmzPhmED5ac"
BACKEND = AcrobitsBackend()
HTTP = OutboundHttp(TargetPolicy(allow_private=True))
WITHOUT_CONTENT = RegistrationOptions(include_content=False)


@pytest.fixture(scope="module")
def running_pnm() -> Iterator[FakeAcrobitsPnm]:
    server = FakeAcrobitsPnm()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def pnm(running_pnm: FakeAcrobitsPnm) -> FakeAcrobitsPnm:
    running_pnm.reset()
    running_pnm.code_field = "code"
    running_pnm.devices = {TOKEN: APP_ID, CALL_TOKEN: CALL_APP_ID}
    return running_pnm


@pytest.fixture
def target(pnm: FakeAcrobitsPnm) -> dict[str, Any]:
    return {
        "device_token": TOKEN,
        "app_id": APP_ID,
        "selector": SELECTOR,
        "url": pnm.send_url,
        "calls_device_token": CALL_TOKEN,
        "calls_app_id": CALL_APP_ID,
    }


def sent_body(pnm: FakeAcrobitsPnm) -> dict[str, Any]:
    (request,) = pnm.requests
    body: dict[str, Any] = request.json()
    return body


def test_registry_knows_acrobits() -> None:
    assert isinstance(get_backend("acrobits"), AcrobitsBackend)


# --- the request --------------------------------------------------------------------------------


def test_dm_is_a_text_message_to_the_messages_token(
    pnm: FakeAcrobitsPnm, target: dict[str, Any]
) -> None:
    result = BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)

    assert result == Delivered(200)
    (request,) = pnm.requests
    assert (request.method, request.path) == ("POST", "/pnm2/send")
    assert request.headers["content-type"] == "application/json"
    assert dict(request.query) == {}
    assert request.json() == {
        "verb": "NotifyTextMessage",
        "AppId": APP_ID,
        "DeviceToken": TOKEN,
        "Selector": SELECTOR,
        "Badge": 2,
        "Sound": "default",
        "UserName": "@alice:localhost",
        "UserDisplayName": "alice",
        "Message": "hi, this is a DM",
        "ContentType": "text/plain",
        "ThreadId": DM_ROOM,
        "Id": DM_EVENT,
    }
    assert pnm.pushes == [request.json()]  # PNM took it


def test_group_message_carries_the_message_text_and_the_room_thread(
    pnm: FakeAcrobitsPnm, target: dict[str, Any]
) -> None:
    BACKEND.send(rendered("message_group_3_members.1.full"), target, DEFAULT, HTTP)

    body = sent_body(pnm)
    # No sound tweak for a plain group message: PNM's "default", as matrix2acrobits sends.
    assert (body["Message"], body["Sound"], body["Badge"]) == ("hello group", "default", 1)
    assert (body["UserDisplayName"], body["ThreadId"], body["Id"]) == (
        "alice",
        GROUP_ROOM,
        GROUP_EVENT,
    )


def test_call_goes_to_the_calls_token_as_an_incoming_call(
    pnm: FakeAcrobitsPnm, target: dict[str, Any]
) -> None:
    message = rendered("call_invite_dm.1.full")
    assert message.kind is MessageKind.CALL

    assert BACKEND.send(message, target, DEFAULT, HTTP) == Delivered(200)

    assert sent_body(pnm) == {
        "verb": "NotifyIncomingCall",
        "AppId": CALL_APP_ID,
        "DeviceToken": CALL_TOKEN,
        "Selector": SELECTOR,
        "Id": CALL_EVENT,
        "UserName": "@alice:localhost",
        "UserDisplayName": "alice",
    }


def test_call_without_a_calls_token_is_a_text_message(
    pnm: FakeAcrobitsPnm, target: dict[str, Any]
) -> None:
    del target["calls_device_token"], target["calls_app_id"]

    BACKEND.send(rendered("call_invite_dm.1.full"), target, DEFAULT, HTTP)

    body = sent_body(pnm)
    assert (body["verb"], body["DeviceToken"], body["AppId"]) == (
        "NotifyTextMessage",
        TOKEN,
        APP_ID,
    )
    assert (body["Message"], body["Sound"], body["Id"]) == ("Voice call", "ring", CALL_EVENT)


def test_without_a_selector_the_generic_verb_says_who_and_what(
    pnm: FakeAcrobitsPnm, target: dict[str, Any]
) -> None:
    del target["selector"]

    for name in ("message_group_3_members.1.full", "call_invite_dm.1.full"):
        assert BACKEND.send(rendered(name), target, DEFAULT, HTTP) == Delivered(200)

    group, call = (r.json() for r in pnm.requests)
    assert group == {
        "verb": "NotifyGenericTextMessage",
        "AppId": APP_ID,
        "DeviceToken": TOKEN,
        "Message": "E2E Group: alice: hello group",
    }
    # Without a selector PNM cannot take NotifyIncomingCall: the messages token says it.
    assert call["verb"] == "NotifyGenericTextMessage"
    assert call["DeviceToken"] == TOKEN
    assert call["Message"] == "Incoming call from alice: Voice call"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("message_dm_2_members.1.full", "New message"),
        ("message_group_3_members.1.full", "alice: New message"),
    ],
)
def test_include_content_false_sends_no_message_text(
    pnm: FakeAcrobitsPnm, target: dict[str, Any], name: str, message: str
) -> None:
    BACKEND.send(rendered(name, WITHOUT_CONTENT), target, WITHOUT_CONTENT, HTTP)

    body = sent_body(pnm)
    assert body["Message"] == message
    assert body["UserDisplayName"] == "alice"  # "New message from alice"
    raw = pnm.requests[0].body.decode()
    assert "hi, this is a DM" not in raw and "hello group" not in raw


def test_encrypted_message_never_sends_ciphertext(
    pnm: FakeAcrobitsPnm, target: dict[str, Any]
) -> None:
    BACKEND.send(rendered("encrypted_group.1.full"), target, DEFAULT, HTTP)

    body = sent_body(pnm)
    assert body["Message"] == "alice: Encrypted message"
    assert "AwgAEnAC" not in pnm.requests[0].body.decode()


def test_event_id_only_push_invents_nothing(pnm: FakeAcrobitsPnm, target: dict[str, Any]) -> None:
    BACKEND.send(rendered("message_dm_2_members.0.eio"), target, DEFAULT, HTTP)

    body = sent_body(pnm)
    assert "UserName" not in body
    assert (body["UserDisplayName"], body["Message"]) == ("New message", "You have a new message.")
    assert (body["ThreadId"], body["Id"], body["Badge"]) == (DM_ROOM, DM_EVENT, 2)


def test_non_ascii_text_arrives_intact(pnm: FakeAcrobitsPnm, target: dict[str, Any]) -> None:
    message = PushMessage(
        title="Café ☕",
        body="naïve — 日本語",
        urgency=Urgency.HIGH,
        kind=MessageKind.MESSAGE,
        sender="@zoë:example.org",
        sender_name="Zoë",
        content_body="naïve — 日本語",
    )

    BACKEND.send(message, target, DEFAULT, HTTP)

    body = sent_body(pnm)
    assert (body["UserDisplayName"], body["Message"]) == ("Zoë", "naïve — 日本語")


def test_test_push_is_a_plain_text_message(pnm: FakeAcrobitsPnm, target: dict[str, Any]) -> None:
    assert BACKEND.send(render_test(), target, DEFAULT, HTTP) == Delivered(200)

    body = sent_body(pnm)
    assert body["verb"] == "NotifyTextMessage"
    assert body["UserDisplayName"] == "mxpush test"
    assert body["Message"] == "Your push gateway can reach this device."
    assert "Id" not in body and "ThreadId" not in body


# --- the answers --------------------------------------------------------------------------------


@pytest.mark.parametrize("code_field", ["code", "status"])
def test_unknown_device_token_is_rejected(
    pnm: FakeAcrobitsPnm, target: dict[str, Any], code_field: str
) -> None:
    pnm.code_field = code_field  # matrix2acrobits reads `code`, Acrobits' docs say `status`
    pnm.unregister(TOKEN)

    result = BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)

    assert isinstance(result, Rejected)
    assert "404" in result.reason
    assert TOKEN not in result.reason
    assert pnm.pushes == []
    assert pnm.requests[0].json()["DeviceToken"] == TOKEN  # the request itself was fine


def test_unknown_calls_token_is_rejected(pnm: FakeAcrobitsPnm, target: dict[str, Any]) -> None:
    pnm.unregister(CALL_TOKEN)

    result = BACKEND.send(rendered("call_invite_dm.1.full"), target, DEFAULT, HTTP)

    assert isinstance(result, Rejected)


def test_a_response_quoting_the_token_is_scrubbed(
    pnm: FakeAcrobitsPnm, target: dict[str, Any]
) -> None:
    pnm.queue(Reply(200, {"code": 404, "response": f"token {TOKEN} not registered"}))

    result = BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)

    assert isinstance(result, Rejected)
    assert TOKEN not in result.reason
    assert "token **** not registered" in result.reason


def test_code_404_without_a_response_text_is_rejected(
    pnm: FakeAcrobitsPnm, target: dict[str, Any]
) -> None:
    pnm.queue(Reply(200, {"code": "404"}))

    result = BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)

    assert result == Rejected(
        "Acrobits PNM answered code 404: the device token is no longer registered"
    )


def test_http_404_with_code_404_is_rejected(pnm: FakeAcrobitsPnm, target: dict[str, Any]) -> None:
    pnm.queue(Reply(404, {"code": 404, "response": "Device token not found"}))

    result = BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)

    assert isinstance(result, Rejected)


def test_http_404_without_a_code_is_a_wrong_url_not_a_dead_token(
    pnm: FakeAcrobitsPnm, target: dict[str, Any]
) -> None:
    target["url"] = pnm.url + "/pnm2/sendx"

    with pytest.raises(PermanentDeliveryError, match="404"):
        BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)


@pytest.mark.parametrize(
    "reply",
    [
        Reply(503, b"Service Unavailable"),
        Reply(500, {"code": 500, "response": "Internal error"}),
        Reply(429, b"Too Many Requests", {"Retry-After": "5"}),
        Reply(502, b"<html>Bad Gateway</html>"),
    ],
    ids=["503", "500", "429", "502"],
)
def test_overload_and_server_errors_are_transient(
    pnm: FakeAcrobitsPnm, target: dict[str, Any], reply: Reply
) -> None:
    pnm.queue(reply)

    with pytest.raises(TransientDeliveryError, match=str(reply.status)):
        BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)

    assert len(pnm.requests) == 1


def test_code_500_in_a_200_answer_is_transient(
    pnm: FakeAcrobitsPnm, target: dict[str, Any]
) -> None:
    pnm.queue(Reply(200, {"code": 500, "response": "APNs unavailable"}))

    with pytest.raises(TransientDeliveryError, match="code 500: APNs unavailable"):
        BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)


def test_code_400_is_permanent_with_pnms_reason(
    pnm: FakeAcrobitsPnm, target: dict[str, Any]
) -> None:
    pnm.queue(pnm.answer(400, "missing required attribute AppId"))

    with pytest.raises(PermanentDeliveryError, match="code 400") as caught:
        BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)

    assert "missing required attribute AppId" in str(caught.value)
    assert TOKEN not in str(caught.value)


def test_http_400_is_permanent(pnm: FakeAcrobitsPnm, target: dict[str, Any]) -> None:
    pnm.queue(Reply(400, b"Bad Request"))

    with pytest.raises(PermanentDeliveryError, match="answered 400: Bad Request"):
        BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)


@pytest.mark.parametrize("body", [b"<html>ok</html>", b"[]", {"response": "no code"}])
def test_a_2xx_without_a_code_is_permanent(
    pnm: FakeAcrobitsPnm, target: dict[str, Any], body: Any
) -> None:
    pnm.queue(Reply(200, body))

    with pytest.raises(PermanentDeliveryError, match="without a JSON code"):
        BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)


def test_redirect_is_permanent_and_not_followed(
    pnm: FakeAcrobitsPnm, target: dict[str, Any]
) -> None:
    pnm.queue(Reply(302, None, {"Location": pnm.url + "/elsewhere"}))

    with pytest.raises(PermanentDeliveryError, match="redirect"):
        BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)

    assert [r.path for r in pnm.requests] == ["/pnm2/send"]


def test_connection_refused_is_transient(target: dict[str, Any]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    target["url"] = f"http://127.0.0.1:{port}/pnm2/send"

    with pytest.raises(TransientDeliveryError) as caught:
        BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, HTTP)

    assert TOKEN not in str(caught.value)


def test_timeout_is_transient(pnm: FakeAcrobitsPnm, target: dict[str, Any]) -> None:
    pnm.queue(Reply(200, {"code": 200, "response": "late"}, delay=1.0))
    impatient = OutboundHttp(TargetPolicy(allow_private=True), read_timeout=0.2)

    with pytest.raises(TransientDeliveryError, match="timed out"):
        BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, impatient)


def test_target_the_policy_forbids_at_send_time_is_permanent(
    pnm: FakeAcrobitsPnm, target: dict[str, Any]
) -> None:
    strict = OutboundHttp(TargetPolicy(allow_private=False))

    with pytest.raises(PermanentDeliveryError):
        BACKEND.send(rendered("message_dm_2_members.1.full"), target, DEFAULT, strict)

    assert pnm.requests == []


# --- validate_target ----------------------------------------------------------------------------


def test_full_target_is_kept(pnm: FakeAcrobitsPnm, target: dict[str, Any]) -> None:
    checked = BACKEND.validate_target(dict(target), TargetPolicy(allow_private=True))

    assert checked.target == target
    assert checked.warnings == []
    assert pnm.requests == []  # validation does not push


def test_url_defaults_to_acrobits_pnm_without_a_dns_lookup() -> None:
    def no_dns(host: str, port: int) -> Sequence[str]:
        raise AssertionError("no lookup for the default URL")

    checked = BACKEND.validate_target(
        {"device_token": TOKEN, "app_id": APP_ID}, TargetPolicy(resolver=no_dns)
    )

    assert checked.target == {"device_token": TOKEN, "app_id": APP_ID, "url": DEFAULT_URL}
    assert DEFAULT_URL == "https://pnm.cloudsoftphone.com/pnm2/send"


def test_unknown_keys_are_warned_about_and_dropped() -> None:
    checked = BACKEND.validate_target(
        {"device_token": TOKEN, "app_id": APP_ID, "token_msgs": TOKEN}, TargetPolicy()
    )

    assert "token_msgs" not in checked.target
    assert checked.warnings == ["target.token_msgs: unknown field for backend 'acrobits', ignored"]


BASE = {"device_token": TOKEN, "app_id": APP_ID}


@pytest.mark.parametrize(
    ("target", "field"),
    [
        ({"app_id": APP_ID}, "target.device_token"),
        ({"device_token": TOKEN}, "target.app_id"),
        ({**BASE, "device_token": ""}, "target.device_token"),
        ({**BASE, "device_token": 42}, "target.device_token"),
        ({**BASE, "device_token": "two words"}, "target.device_token"),
        ({**BASE, "device_token": "a" * 513}, "target.device_token"),
        ({**BASE, "app_id": "com.cloud softphone"}, "target.app_id"),
        ({**BASE, "selector": ""}, "target.selector"),
        ({**BASE, "selector": ["x"]}, "target.selector"),
        ({**BASE, "calls_device_token": CALL_TOKEN}, "target.calls_app_id"),
        ({**BASE, "calls_app_id": CALL_APP_ID}, "target.calls_device_token"),
        ({**BASE, "calls_device_token": "", "calls_app_id": CALL_APP_ID}, "target.calls_device"),
        ({**BASE, "url": "ftp://pnm.example.org/send"}, "target.url"),
        ({**BASE, "url": f"https://user:pw@{PUBLIC}/pnm2/send"}, "target.url"),
        ({**BASE, "url": "http://127.0.0.1:8080/pnm2/send"}, "target.url"),
        ({**BASE, "url": "http://169.254.169.254/pnm2/send"}, "target.url"),
        ({**BASE, "url": "https://pnm.internal/pnm2/send"}, "target.url"),
    ],
)
def test_invalid_target_names_the_field(target: dict[str, Any], field: str) -> None:
    policy = resolving({"pnm.internal": ["10.0.0.5"]})

    with pytest.raises(InvalidParam) as caught:
        BACKEND.validate_target(target, policy)

    assert caught.value.error.startswith(field), caught.value.error


def test_a_public_custom_url_is_kept() -> None:
    policy = resolving({"pnm.example.org": [PUBLIC]})

    checked = BACKEND.validate_target({**BASE, "url": "https://pnm.example.org/pnm2/send"}, policy)

    assert checked.target["url"] == "https://pnm.example.org/pnm2/send"


def test_mask_target_hides_both_tokens(target: dict[str, Any]) -> None:
    masked = BACKEND.mask_target(target)

    assert masked["device_token"] == "****2J="
    assert masked["calls_device_token"] == "****rY="
    assert (masked["app_id"], masked["selector"]) == (APP_ID, SELECTOR)
    text = json.dumps(masked)
    assert TOKEN not in text and CALL_TOKEN not in text


def test_selector_is_the_claim() -> None:
    assert BACKEND.claim({**BASE, "selector": SELECTOR}) == SELECTOR
    assert BACKEND.claim(BASE) is None


# --- priorities ---------------------------------------------------------------------------------


def test_no_priority_overrides_is_fine() -> None:
    assert BACKEND.validate_priority({}) == {}


@pytest.mark.parametrize("overrides", [{"call": 1}, {"high": 0}, {"urgent": 5}])
def test_priority_overrides_are_refused_with_a_reason(overrides: dict[str, Any]) -> None:
    with pytest.raises(InvalidParam) as caught:
        BACKEND.validate_priority(overrides)

    assert caught.value.error.startswith("options.priority:")
    assert "no priority levels" in caught.value.error
