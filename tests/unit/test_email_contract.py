"""`EmailBackend` and its transports: the exact mail, against a real SMTP server on 127.0.0.1
(aiosmtpd: STARTTLS, AUTH, refusals) and moto's SES v2; the signed unsubscribe tokens."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import socket
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.ses.models import ses_backends

from mxpush import wiring
from mxpush.backends import get_backend
from mxpush.backends.base import Delivered, Rejected
from mxpush.backends.email import EmailBackend, recipient_name
from mxpush.config import Settings
from mxpush.errors import (
    ConfigError,
    DeliveryError,
    Forbidden,
    InvalidParam,
    MissingParam,
    NotFound,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from mxpush.events import summarize
from mxpush.mailer import (
    EmailUnavailable,
    Mailer,
    RecipientRefused,
    SesMailer,
    SmtpMailer,
    check_address,
    mask_address,
    parse_smtp_url,
)
from mxpush.model import Batch, EventRef, Registration, RegistrationOptions, Status
from mxpush.notification import parse_notify_body
from mxpush.outbound import OutboundHttp
from mxpush.render import PushMessage, render_batch, render_test
from mxpush.unsubscribe import (
    LINK_LIFETIME_SECONDS,
    UNSUBSCRIBED_REASON,
    UnsubscribeKeyUnreadable,
    check_token,
    make_token,
    unsubscribe,
)
from mxpush.urlsafety import TargetPolicy
from tests.fakes.smtp import FakeSmtp, self_signed
from tests.unit.backend_support import FIXTURES, rendered, rendered_batch

NOW = 1_800_000_000.0
ACCOUNT = "123456789012"  # moto's
KEY = b"k" * 32
SENDER = "mxpush <push@mx.example.org>"
TO = "bob@example.org"
RID = "ab" * 32
HTTP = OutboundHttp(TargetPolicy(allow_private=True))
POLICY = TargetPolicy(allow_private=True)
DM = "message_dm_2_members.1.full"
GROUP = "message_group_3_members.1.full"
DM_ROOM = "!YIkXvNfjndhc9gq49pm2feQdKxlW4LZTdsnotiA5TMg"


def registration(owner: str = "@bob:example.org", **changes: Any) -> Registration:
    base = Registration(
        rid=RID,
        pushkey="mxp_x",
        backend="email",
        target={"to": TO},
        app_id="org.mxpush.email",
        owner=owner,
        created_at=NOW,
        pusher={"data": {"url": "https://push.example.org/_matrix/push/v1/notify"}},
    )
    return dataclasses.replace(base, **changes)


class Recording:
    """A mailer that keeps what it was given."""

    sender = SENDER

    def __init__(self, error: Exception | None = None) -> None:
        self.sent: list[tuple[EmailMessage, str]] = []
        self.error = error

    def send(self, message: EmailMessage, recipient: str) -> None:
        if self.error is not None:
            raise self.error
        self.sent.append((message, recipient))


def backend(mailer: Mailer, public_url: str | None = None) -> EmailBackend:
    return EmailBackend(
        lambda: mailer,
        unsubscribe_key=lambda: KEY,
        public_url=lambda: public_url,
        clock=lambda: NOW,
    )


def mail_of(message: PushMessage, reg: Registration | None = None) -> EmailMessage:
    mailer = Recording()
    assert backend(mailer).send_to(message, reg or registration(), HTTP) == Delivered(250)
    [(mail, recipient)] = mailer.sent
    assert recipient == TO
    # As the server gets it: serialized, then parsed.
    parsed = email.message_from_bytes(mail.as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def text_of(mail: EmailMessage, subtype: str = "plain") -> str:
    part = mail.get_body(preferencelist=(subtype,))
    assert part is not None
    content: str = part.get_content()
    return content.replace("\r\n", "\n")


# --- registration -------------------------------------------------------------------------------


def test_registered_in_the_backend_registry() -> None:
    assert isinstance(get_backend("email"), EmailBackend)


def test_target_is_one_plain_address() -> None:
    checked = backend(Recording()).validate_target({"to": " Bob@Example.ORG ", "cc": 1}, POLICY)
    assert checked.target == {"to": "Bob@example.org"}
    assert checked.warnings == ["target.cc: unknown field for backend 'email', ignored"]


@pytest.mark.parametrize(
    "value",
    [
        "bob@example.org\r\nBcc: eve@example.org",
        "bob@exam\nple.org",
        "bob@example.org, eve@example.org",
        "bob@example.org;eve@example.org",
        "Bob <bob@example.org>",
        '"bob"@example.org',
        "bob",
        "bob@",
        "@example.org",
        "bob@localhost",
        "bob@exa_mple.org",
        "bob@-example.org",
        "bob..x@example.org",
        ".bob@example.org",
        "x" * 65 + "@example.org",
        "b@" + "a" * 250 + ".org",
        "bob@[127.0.0.1]",
        "",
        "   ",
        42,
        None,
    ],
)
def test_bad_addresses_are_400_naming_the_field(value: Any) -> None:
    with pytest.raises(InvalidParam) as caught:
        backend(Recording()).validate_target({"to": value}, POLICY)
    assert caught.value.error.startswith("target.to: ")


def test_without_a_mail_transport_registering_answers_400_saying_so() -> None:
    def unavailable() -> Mailer:
        raise EmailUnavailable("no mail transport is configured")

    with pytest.raises(InvalidParam) as caught:
        EmailBackend(unavailable).validate_target({"to": TO}, POLICY)
    assert caught.value.error == (
        "backend: email is not enabled on this gateway: no mail transport is configured"
    )


def test_no_priority_levels_and_the_address_is_masked() -> None:
    email_backend = backend(Recording())
    with pytest.raises(InvalidParam, match=r"options\.priority: email has no priority levels"):
        email_backend.validate_priority({"call": 1})
    assert email_backend.validate_priority({}) == {}
    assert email_backend.mask_target({"to": TO}) == {"to": "b***@example.org"}
    assert mask_address("x@y.org") == "x***@y.org"
    assert mask_address("nonsense") == "****"


# --- the mail -----------------------------------------------------------------------------------


def test_dm_mail_headers_and_both_parts() -> None:
    mail = mail_of(rendered(DM))
    assert mail["Subject"] == "bob: 1 unread message from alice"
    assert mail["From"] == SENDER
    assert mail["To"] == TO
    assert mail["Date"].datetime.timestamp() == NOW
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    token = make_token(KEY, RID, now=NOW)
    link = f"https://push.example.org/api/v1/unsubscribe?t={token}"
    assert mail["List-Unsubscribe"] == f"<{link}>"
    assert mail.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in mail.iter_parts()] == ["text/plain", "text/html"]
    text = text_of(mail)
    assert text.startswith("bob, you have 1 unread message.\n\nalice: 1 message\n")
    assert "  alice: hi, this is a DM\n" in text
    assert text.endswith(f"Unsubscribe: {link}\n")
    page = text_of(mail, "html")
    assert "<p>alice: hi, this is a DM</p>" in page
    assert f'<a href="{link}">Unsubscribe</a>' in page


def test_headers_go_out_as_mail_clients_read_them() -> None:
    """CRLF, and the unsubscribe URL as one `<URL>`: folded or encoded (RFC 2047), which a long
    header gets under the default policy, no mail client would find the link."""
    mailer = Recording()
    backend(mailer).send_to(rendered(DM), registration(), HTTP)
    raw = mailer.sent[0][0].as_bytes()
    token = make_token(KEY, RID, now=NOW)
    header = f"\r\nList-Unsubscribe: <https://push.example.org/api/v1/unsubscribe?t={token}>\r\n"
    assert header.encode() in raw
    assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in raw
    assert b"=?utf-8?" not in raw
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


def test_non_ascii_and_very_long_lines_are_encoded() -> None:
    notification = parse_notify_body((FIXTURES / f"{GROUP}.json").read_bytes())
    event = dataclasses.replace(
        summarize(notification, notification.devices[0]), room_name="Café ☕", body="é" * 500
    )
    ref = EventRef(event.event_id, event.room_id, NOW, event.urgency)
    mailer = Recording()
    backend(mailer).send_to(
        render_batch(Batch("b", event, (ref,), NOW), RegistrationOptions()), registration(), HTTP
    )
    raw = mailer.sent[0][0].as_bytes()
    raw.decode("ascii")  # 7 bit on the wire
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed["Subject"] == "bob: 1 unread message in Café ☕"
    assert "alice: " + "é" * 500 in text_of(parsed)


def test_the_public_url_wins_over_the_registrations_own() -> None:
    mailer = Recording()
    backend(mailer, "https://mx.example.org/push").send_to(rendered(DM), registration(), HTTP)
    [(mail, _)] = mailer.sent
    assert mail["List-Unsubscribe"].startswith("<https://mx.example.org/push/api/v1/unsubscribe?t=")


def test_no_public_url_at_all_is_a_permanent_failure() -> None:
    with pytest.raises(PermanentDeliveryError, match="MXPUSH_PUBLIC_URL"):
        backend(Recording()).send_to(rendered(DM), registration(pusher=None), HTTP)


@pytest.mark.parametrize(
    ("options", "name"),
    [
        (RegistrationOptions(include_content=False), GROUP),
        (RegistrationOptions(), "message_dm_2_members.0.eio"),
        (RegistrationOptions(), "encrypted_dm.1.full"),
    ],
)
def test_no_message_text_when_content_is_withheld(options: RegistrationOptions, name: str) -> None:
    mail = mail_of(rendered(name, options))
    raw = mail.as_string()
    for secret_text in ("hello group", "hi, this is a DM"):
        assert secret_text not in raw
    notification = parse_notify_body((FIXTURES / f"{name}.json").read_bytes())
    ciphertext = (notification.content or {}).get("ciphertext")
    if ciphertext:
        assert str(ciphertext)[:20] not in raw


def test_event_id_only_mail_names_nobody() -> None:
    mail = mail_of(rendered("message_dm_2_members.0.eio"))
    assert mail["Subject"] == "bob: 1 unread message"
    assert text_of(mail).startswith(f"bob, you have 1 unread message.\n\n{DM_ROOM}: 1 message\n")


def test_a_digest_of_two_rooms() -> None:
    mail = mail_of(rendered_batch([GROUP, GROUP, DM]), registration(owner="operator"))
    assert mail["Subject"] == "3 unread messages in 2 rooms"
    text = text_of(mail)
    assert text.startswith("You have 3 unread messages in 2 rooms.\n\nalice: 1 message\n")
    assert "!bbQQMCPwmd9aM1RGdKYA_jwXJsIG1Mb_o6KwYXBITTU: 2 messages\n" in text
    assert text.count("  Open: https://matrix.to/#/") == 2


def test_a_batch_larger_than_it_lists_gives_no_per_room_counts() -> None:
    notification = parse_notify_body((FIXTURES / f"{GROUP}.json").read_bytes())
    event = summarize(notification, notification.devices[0])
    refs = tuple(EventRef(f"$e{i}", event.room_id, NOW + i, event.urgency) for i in range(20))
    batch = Batch("b", event, refs, NOW, total=3000)
    mail = mail_of(render_batch(batch, RegistrationOptions()))
    assert mail["Subject"] == "bob: 3000 unread messages in E2E Group"
    assert "\nE2E Group\n" in text_of(mail)


def test_everything_is_escaped_in_html_and_kept_out_of_headers() -> None:
    notification = parse_notify_body((FIXTURES / f"{GROUP}.json").read_bytes())
    event = dataclasses.replace(
        summarize(notification, notification.devices[0]),
        room_name="<script>alert(1)</script>\r\nBcc: eve@example.org",
        sender_name='"><img src=x>',
        body="<b>bold</b> & co",
    )
    ref = EventRef(event.event_id, event.room_id, NOW, event.urgency)
    options = RegistrationOptions(click_url='https://x.example.org/"><script>/{room_id}')
    mail = mail_of(render_batch(Batch("b", event, (ref,), NOW), options))
    assert "\n" not in mail["Subject"]
    assert mail["Bcc"] is None
    page = text_of(mail, "html")
    assert "<script>" not in page
    assert "<img" not in page
    assert "<b>bold</b>" not in page
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in page
    assert 'href="https://x.example.org/&quot;&gt;&lt;script&gt;/' in page


def test_long_subjects_are_cut() -> None:
    notification = parse_notify_body((FIXTURES / f"{GROUP}.json").read_bytes())
    event = dataclasses.replace(
        summarize(notification, notification.devices[0]), room_name="R" * 300
    )
    ref = EventRef(event.event_id, event.room_id, NOW, event.urgency)
    mail = mail_of(render_batch(Batch("b", event, (ref,), NOW), RegistrationOptions()))
    assert len(mail["Subject"]) == 150
    assert mail["Subject"].endswith("…")


def test_calls_invites_and_the_test_push() -> None:
    assert mail_of(rendered("call_invite_dm.1.full"))["Subject"] == "bob: Incoming call from alice"
    invite = mail_of(rendered("member_invite_group.1.full"))["Subject"]
    assert invite.startswith("bob: alice invited you to ")
    test = mail_of(render_test())
    assert test["Subject"] == "bob: mxpush test"
    assert text_of(test).startswith("Your push gateway can reach this device.\n")


def test_recipient_name() -> None:
    assert recipient_name("@bob:example.org") == "bob"
    assert recipient_name("operator") is None
    assert recipient_name("@b\r\nx:example.org") == "b x"


def test_send_without_the_registration_is_refused() -> None:
    with pytest.raises(PermanentDeliveryError):
        backend(Recording()).send(rendered(DM), {"to": TO}, RegistrationOptions(), HTTP)


# --- outcomes -----------------------------------------------------------------------------------


def test_a_refused_recipient_is_rejected_others_raise() -> None:
    refused = Recording(RecipientRefused("SMTP server refused the address (550)", detail="550 x"))
    assert backend(refused).send_to(rendered(DM), registration(), HTTP) == Rejected(
        "SMTP server refused the address (550): 550 x"
    )
    for error in (TransientDeliveryError("later"), PermanentDeliveryError("never")):
        with pytest.raises(type(error)):
            backend(Recording(error)).send_to(rendered(DM), registration(), HTTP)


def test_an_unreadable_unsubscribe_key_is_transient() -> None:
    def unreadable() -> bytes:
        raise UnsubscribeKeyUnreadable

    email_backend = EmailBackend(Recording, unsubscribe_key=unreadable)
    with pytest.raises(TransientDeliveryError):
        email_backend.send_to(rendered(DM), registration(), HTTP)


# --- SMTP ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return self_signed(Path(tmp_path_factory.mktemp("smtp-tls")))


@pytest.fixture
def server() -> Iterator[FakeSmtp]:
    fake = FakeSmtp().start()
    yield fake
    fake.stop()


def smtp_mailer(url: str, **kwargs: Any) -> SmtpMailer:
    return SmtpMailer(parse_smtp_url(url), SENDER, **kwargs)


def a_mail() -> EmailMessage:
    mail = EmailMessage()
    mail["Subject"] = "test"
    mail["From"] = SENDER
    mail["To"] = TO
    mail.set_content("hello")
    return mail


def test_smtp_sends_the_exact_message(server: FakeSmtp) -> None:
    message = mail_of(rendered(DM))
    smtp_mailer(server.url()).send(message, TO)
    [received] = server.wait_for(1)
    assert received.mail_from == "push@mx.example.org"
    assert received.rcpt_tos == (TO,)
    assert received.tls is False
    assert received.message["List-Unsubscribe"] == message["List-Unsubscribe"]
    assert received.part("text/plain") == text_of(message)


def test_starttls_when_offered_with_login(tls: Any) -> None:
    server_context, client_context = tls
    fake = FakeSmtp(users={"mx": "p@ss:w/rd"}, tls_context=server_context).start()
    try:
        url = fake.url("mx", "p%40ss%3Aw%2Frd")
        smtp_mailer(url, ssl_context=client_context).send(a_mail(), TO)
        [received] = fake.wait_for(1)
        assert (received.tls, received.login) == (True, "mx")
        # MXPUSH_SMTP_STARTTLS=false: plain text even though the server offers it.
        smtp_mailer(fake.url(), starttls=False).send(a_mail(), TO)
        assert fake.wait_for(2)[1].tls is False
        # A certificate nobody vouches for is not a transient failure.
        with pytest.raises(PermanentDeliveryError, match="certificate"):
            smtp_mailer(fake.url()).send(a_mail(), TO)
    finally:
        fake.stop()


def test_implicit_tls(tls: Any) -> None:
    server_context, client_context = tls
    fake = FakeSmtp(tls_context=server_context, implicit_tls=True).start()
    try:
        smtp_mailer(fake.url(), ssl_context=client_context).send(a_mail(), TO)
        assert fake.wait_for(1)[0].tls is True
    finally:
        fake.stop()


def test_a_wrong_password_is_permanent_and_never_shown() -> None:
    fake = FakeSmtp(users={"mx": "right"}).start()
    try:
        mailer = smtp_mailer(fake.url("mx", "wrong-secret"))
        with pytest.raises(PermanentDeliveryError) as caught:
            mailer.send(a_mail(), TO)
        assert "refused the login" in caught.value.reason
        assert "wrong-secret" not in caught.value.reason
        assert "wrong-secret" not in repr(mailer)
        assert "wrong-secret" not in repr(mailer.server) + str(mailer.server)
    finally:
        fake.stop()


def test_a_login_without_auth_offered_is_permanent(server: FakeSmtp) -> None:
    with pytest.raises(PermanentDeliveryError, match="offers no AUTH"):
        smtp_mailer(server.url("mx", "pw")).send(a_mail(), TO)


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("550 5.1.1 <bob@example.org>: Recipient address rejected", RecipientRefused),
        ("550 No such user here", RecipientRefused),
        ("553 5.1.3 Bad recipient address syntax", RecipientRefused),
        ("551 5.1.6 User has moved", RecipientRefused),
        ("550 5.7.1 Relaying denied", PermanentDeliveryError),
        ("554 5.7.1 Relay access denied", PermanentDeliveryError),
        ("552 5.2.2 Mailbox full", PermanentDeliveryError),
        ("450 4.2.0 Greylisted, try again later", TransientDeliveryError),
        ("421 4.7.0 Try again later, closing connection", TransientDeliveryError),
    ],
)
def test_recipient_refusals_are_classified(
    server: FakeSmtp, reply: str, error: type[DeliveryError]
) -> None:
    server.refuse[TO] = reply
    with pytest.raises(error) as caught:
        smtp_mailer(server.url()).send(a_mail(), TO)
    assert type(caught.value) is error
    assert TO not in caught.value.reason
    if "<bob@" in reply:
        assert "b***@example.org" in caught.value.reason


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("451 4.3.0 Temporary local problem", TransientDeliveryError),
        ("554 5.7.1 Message rejected as spam", PermanentDeliveryError),
    ],
)
def test_data_refusals_are_classified(
    server: FakeSmtp, reply: str, error: type[DeliveryError]
) -> None:
    server.data_replies.append(reply)
    with pytest.raises(error) as caught:
        smtp_mailer(server.url()).send(a_mail(), TO)
    assert type(caught.value) is error
    assert caught.value.detail == reply


def test_no_server_is_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(TransientDeliveryError, match="cannot connect"):
        smtp_mailer(f"smtp://127.0.0.1:{port}", timeout=2).send(a_mail(), TO)


def test_smtp_urls() -> None:
    server = parse_smtp_url("smtp://user%40x:p%3Ass@mail.example.org:587")
    assert (server.host, server.port, server.implicit_tls) == ("mail.example.org", 587, False)
    assert (server.username, server.password) == ("user@x", "p:ss")
    assert str(server) == "smtp://user@x@mail.example.org:587"
    assert "p:ss" not in repr(server)
    assert parse_smtp_url("smtps://mail.example.org").port == 465
    assert parse_smtp_url("smtp://mail.example.org").port == 25
    for bad in (
        "http://mail.example.org",
        "smtp://",
        "smtp://h/path",
        "smtp://:pw@h",
        "smtp://h:x",
    ):
        with pytest.raises(ConfigError) as caught:
            parse_smtp_url(bad)
        assert "pw" not in str(caught.value)


def test_check_address() -> None:
    assert check_address("a.b+c@Sub.Example.ORG") == "a.b+c@sub.example.org"
    with pytest.raises(ValueError, match="one address"):
        check_address("a@b.org\r\n")


# --- Amazon SES v2 (moto) -----------------------------------------------------------------------


@pytest.fixture
def ses() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("sesv2", region_name="eu-west-1")
        yield client


def test_ses_sends_the_raw_message_with_our_headers(ses: Any) -> None:
    ses.create_email_identity(EmailIdentity="mx.example.org")
    message = mail_of(rendered(DM))
    SesMailer(SENDER, "eu-west-1", client=ses).send(message, TO)
    [sent] = ses_backends[ACCOUNT]["eu-west-1"].sent_messages
    assert sent.source == SENDER
    assert set(sent.destinations) == {TO}
    received = email.message_from_string(sent.raw_data, policy=email.policy.default)
    assert received["List-Unsubscribe"] == message["List-Unsubscribe"]
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert received["Subject"] == "bob: 1 unread message from alice"


def test_ses_refusing_an_unverified_sender_is_permanent(ses: Any) -> None:
    # A domain no test verifies: moto's SES keeps identities while an outer mock (the session's
    # local mode) is active, so SENDER's may have been verified by the test before.
    unverified = "push@never-verified.example.net"
    with pytest.raises(PermanentDeliveryError, match="MessageRejected") as caught:
        SesMailer(unverified, "eu-west-1", client=ses).send(a_mail(), TO)
    assert type(caught.value) is PermanentDeliveryError


class FailingSes:
    def __init__(self, code: str, message: str, status: int) -> None:
        response: Any = {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }
        self.error = ClientError(response, "SendEmail")

    def send_email(self, **kwargs: Any) -> None:
        raise self.error


@pytest.mark.parametrize(
    ("code", "message", "status", "error"),
    [
        ("TooManyRequestsException", "Maximum sending rate exceeded.", 429, TransientDeliveryError),
        ("LimitExceededException", "Daily message quota exceeded.", 400, TransientDeliveryError),
        ("InternalFailure", "", 500, TransientDeliveryError),
        ("MessageRejected", "Email address is not verified.", 400, PermanentDeliveryError),
        ("BadRequestException", "Illegal address: bob@example.org", 400, RecipientRefused),
        ("AccountSuspendedException", "suspended", 400, PermanentDeliveryError),
    ],
)
def test_ses_errors_are_classified(
    code: str, message: str, status: int, error: type[DeliveryError]
) -> None:
    mailer = SesMailer(SENDER, "eu-west-1", client=FailingSes(code, message, status))
    with pytest.raises(error) as caught:
        mailer.send(a_mail(), TO)
    assert type(caught.value) is error
    assert TO not in caught.value.reason


# --- configuration ------------------------------------------------------------------------------


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    values: dict[str, str] = {}
    monkeypatch.setattr(wiring, "settings", lambda: Settings.from_env(values))
    forget()
    yield values
    forget()


def forget() -> None:
    wiring._mailer.cache_clear()
    wiring._parameters.clear()
    wiring._parameter_failures.clear()


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({}, "no mail transport is configured"),
        ({"MXPUSH_SMTP_URL": "smtp://h"}, "no sender address"),
        (
            {"MXPUSH_SMTP_URL": "smtp://h", "MXPUSH_EMAIL_FROM": "not an address"},
            "the sender address",
        ),
        ({"MXPUSH_SMTP_URL": "smtp://h", "MXPUSH_EMAIL_FROM": "a@b.org"}, "no unsubscribe key"),
        (
            {
                "MXPUSH_SMTP_URL": "ftp://secret@h",
                "MXPUSH_EMAIL_FROM": "a@b.org",
                "MXPUSH_UNSUBSCRIBE_SECRET": "s" * 32,
            },
            "MXPUSH_SMTP_URL: must start with smtp://",
        ),
        (
            {
                "MXPUSH_EMAIL_TRANSPORT": "smtp",
                "MXPUSH_EMAIL_FROM": "a@b.org",
                "MXPUSH_UNSUBSCRIBE_SECRET": "s" * 32,
            },
            "MXPUSH_SMTP_URL is not set",
        ),
    ],
)
def test_what_email_needs(environment: dict[str, str], env: dict[str, str], problem: str) -> None:
    environment.update(env)
    with pytest.raises(EmailUnavailable) as caught:
        wiring.mailer()
    assert problem in caught.value.error
    assert "secret" not in caught.value.error


def test_smtp_and_ses_configurations(environment: dict[str, str]) -> None:
    environment.update(
        {
            "MXPUSH_SMTP_URL": "smtp://u:pw@mail.example.org:587",
            "MXPUSH_SMTP_STARTTLS": "false",
            "MXPUSH_EMAIL_FROM": SENDER,
            "MXPUSH_UNSUBSCRIBE_SECRET": "s" * 32,
        }
    )
    mailer = wiring.mailer()
    assert isinstance(mailer, SmtpMailer)
    assert (mailer.server.host, mailer.starttls, mailer.sender) == (
        "mail.example.org",
        False,
        SENDER,
    )
    assert wiring.unsubscribe_key() == b"s" * 32
    environment.pop("MXPUSH_SMTP_URL")
    environment["MXPUSH_EMAIL_TRANSPORT"] = "ses"
    forget()
    assert isinstance(wiring.mailer(), SesMailer)
    environment["MXPUSH_EMAIL_TRANSPORT"] = "carrier-pigeon"
    with pytest.raises(ConfigError):
        Settings.from_env(environment)


def test_the_unsubscribe_key_from_ssm(environment: dict[str, str]) -> None:
    with mock_aws():
        boto3.client("ssm", region_name="us-east-1").put_parameter(
            Name="/mxpush/unsubscribe-secret", Value="k" * 40, Type="SecureString"
        )
        environment["MXPUSH_UNSUBSCRIBE_SECRET_PARAMETER"] = "/mxpush/unsubscribe-secret"
        assert wiring.unsubscribe_key() == b"k" * 40
        forget()
        environment["MXPUSH_UNSUBSCRIBE_SECRET_PARAMETER"] = "/mxpush/missing"
        with pytest.raises(EmailUnavailable):
            wiring.unsubscribe_key()


# --- unsubscribe tokens -------------------------------------------------------------------------


def test_tokens_round_trip_and_expire() -> None:
    token = make_token(KEY, RID, now=NOW)
    assert check_token(KEY, token, now=NOW + LINK_LIFETIME_SECONDS - 1) == RID
    with pytest.raises(Forbidden, match="expired"):
        check_token(KEY, token, now=NOW + LINK_LIFETIME_SECONDS + 1)
    with pytest.raises(Forbidden, match="not valid"):
        check_token(b"another key" * 3, token, now=NOW)
    rid, expires, signature = token.split(".")
    for forged in (
        f"{'cd' * 32}.{expires}.{signature}",
        f"{rid}.{int(expires) + 3600}.{signature}",
        f"{rid}.{expires}.{signature[:-1]}A" if not signature.endswith("A") else "",
    ):
        if forged:
            with pytest.raises(Forbidden):
                check_token(KEY, forged, now=NOW)
    with pytest.raises(MissingParam):
        check_token(KEY, None, now=NOW)
    for malformed in ("x", f"{rid}.{expires}", token + ".x", token.upper(), "a" * 1000):
        with pytest.raises(InvalidParam):
            check_token(KEY, malformed, now=NOW)


class Store:
    def __init__(self, registration: Registration | None) -> None:
        self.registration = registration
        self.marked: list[str] = []

    def get_registration(self, rid: str) -> Registration | None:
        return self.registration if self.registration and self.registration.rid == rid else None

    def reject_backend_channels(self, rid: str, backend: str, *, reason: str, now: float) -> bool:
        assert backend == "email"
        self.marked.append(reason)
        return True


def test_unsubscribe_marks_the_registration_once() -> None:
    store = Store(registration())
    token = make_token(KEY, RID, now=NOW)
    unsubscribe(store, KEY, token, clock=lambda: NOW)
    assert store.marked == [UNSUBSCRIBED_REASON]
    store.registration = registration(status=Status.REJECTED)
    unsubscribe(store, KEY, token, clock=lambda: NOW)
    assert store.marked == [UNSUBSCRIBED_REASON]
    with pytest.raises(NotFound):
        unsubscribe(Store(None), KEY, token, clock=lambda: NOW)
