"""Email through local mode: registration over the API, the real state machine, the session's
SMTP server (aiosmtpd) checking the exact mail, and the unsubscribe link over HTTP."""

from __future__ import annotations

import re
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from urllib.parse import quote, urlsplit

import pytest

from mxpush import wiring
from mxpush.delivery import FIRST_RETRY_SECONDS
from mxpush.mailer import EmailUnavailable, Mailer
from tests.conftest import EMAIL_FROM, Api, synapse_body, wait_until, with_event_id
from tests.fakes.smtp import FakeSmtp
from tests.integration.flow_support import outcomes, register, wait_for_outcome

pytestmark = pytest.mark.slow

DM = "message_dm_2_members.1.full"
GROUP = "message_group_3_members.1.full"
DM_ROOM = "!YIkXvNfjndhc9gq49pm2feQdKxlW4LZTdsnotiA5TMg"
DM_EVENT = "$9YKtqgWbvfhsr99S2R_6S66iVIWunPAkPKPnHo_e5tI"
GROUP_ROOM = "!bbQQMCPwmd9aM1RGdKYA_jwXJsIG1Mb_o6KwYXBITTU"


@pytest.fixture
def address() -> str:
    """An address of this test's own: the SMTP server is the session's."""
    return f"bob.{secrets.token_hex(4)}@example.org"


def register_email(api: Api, address: str, *, delay: int = 0, **options: object) -> str:
    return register(api, "email", {"to": address}, delay=delay, options=options or None)


def unsubscribe_url(mail_text: str) -> str:
    match = re.search(r"^Unsubscribe: (\S+)$", mail_text, re.MULTILINE)
    assert match, mail_text
    return match.group(1)


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """(status, content type, body) of a plain HTTP request, as a mail client makes it."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def test_dm_is_mailed_as_a_digest_with_an_unsubscribe_link(
    api: Api, smtp: FakeSmtp, address: str
) -> None:
    pushkey = register_email(api, address)
    assert api.notify(synapse_body(DM, pushkey)).body == {"rejected": []}

    [mail] = smtp.wait_for_recipient(address)
    assert mail.mail_from == "push@mxpush.example.org"
    assert mail.rcpt_tos == (address,)
    message = mail.message
    assert message["From"] == EMAIL_FROM
    assert message["To"] == address
    assert message["Subject"] == "1 unread message from alice"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Message-ID"].endswith("@mxpush.example.org>")
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    text = mail.part("text/plain")
    link = unsubscribe_url(text)
    assert message["List-Unsubscribe"] == f"<{link}>"
    assert f"\r\nList-Unsubscribe: <{link}>\r\n".encode() in mail.data
    assert link.startswith(f"{api.base}/api/v1/unsubscribe?t=")
    click = f"https://matrix.to/#/{DM_ROOM}/{DM_EVENT}"
    assert text == (
        "You have 1 unread message.\n"
        "\n"
        "alice: 1 message\n"
        "  alice: hi, this is a DM\n"
        f"  Open: {click}\n"
        "\n"
        "-- \n"
        "Sent by mxpush, the push gateway of your Matrix account, because this address was "
        "registered for notifications.\n"
        f"Unsubscribe: {link}\n"
    )
    page = mail.part("text/html")
    assert "<p>alice: hi, this is a DM</p>" in page
    assert f'<a href="{click}">Open in Matrix</a>' in page
    assert f'<a href="{link.replace("&", "&amp;")}">Unsubscribe</a>' in page
    [entry] = wait_for_outcome(api, pushkey, "delivered")
    assert entry["event_id"] == DM_EVENT


def test_a_burst_in_two_rooms_is_one_mail(api: Api, smtp: FakeSmtp, address: str) -> None:
    pushkey = register_email(api, address, delay=2)
    api.notify(with_event_id(synapse_body(GROUP, pushkey), "$group-1"))
    api.notify(with_event_id(synapse_body(GROUP, pushkey), "$group-2"))
    api.notify(synapse_body(DM, pushkey))

    [mail] = smtp.wait_for_recipient(address)
    assert mail.message["Subject"] == "3 unread messages in 2 rooms"
    text = mail.part("text/plain")
    assert text.startswith(
        "You have 3 unread messages in 2 rooms.\n"
        "\n"
        "alice: 1 message\n"
        "  alice: hi, this is a DM\n"
        f"  Open: https://matrix.to/#/{DM_ROOM}/{DM_EVENT}\n"
        "\n"
        f"{GROUP_ROOM}: 2 messages\n"
        f"  Open: https://matrix.to/#/{GROUP_ROOM}/$group-2\n"
        "\n"
    )
    wait_for_outcome(api, pushkey, "delivered")
    assert sorted(outcomes(api, pushkey)) == ["coalesced", "coalesced", "delivered"]
    assert len(smtp.to(address)) == 1


def test_no_message_text_without_content(api: Api, smtp: FakeSmtp, address: str) -> None:
    pushkey = register_email(api, address, include_content=False)
    api.notify(synapse_body(GROUP, pushkey))

    [mail] = smtp.wait_for_recipient(address)
    wait_for_outcome(api, pushkey, "delivered")
    assert mail.message["Subject"] == "1 unread message in E2E Group"
    assert "hello group" not in mail.data.decode()
    text = mail.part("text/plain")
    assert "E2E Group: 1 message\n  alice: New message\n" in text
    assert "hello group" not in mail.part("text/html")


def test_event_id_only_pushers_mail_no_names_nor_text(
    api: Api, smtp: FakeSmtp, address: str
) -> None:
    pushkey = register_email(api, address)
    api.notify(synapse_body("message_dm_2_members.0.eio", pushkey))

    [mail] = smtp.wait_for_recipient(address)
    wait_for_outcome(api, pushkey, "delivered")
    assert mail.message["Subject"] == "1 unread message"
    text = mail.part("text/plain")
    assert text.startswith(
        f"You have 1 unread message.\n\n{DM_ROOM}: 1 message\n"
        f"  Open: https://matrix.to/#/{DM_ROOM}/{DM_EVENT}\n\n"
    )


def test_unsubscribe_link_disables_email_end_to_end(api: Api, smtp: FakeSmtp, address: str) -> None:
    pushkey = register_email(api, address)
    api.notify(synapse_body(DM, pushkey))
    [mail] = smtp.wait_for_recipient(address)
    wait_for_outcome(api, pushkey, "delivered")
    link = unsubscribe_url(mail.part("text/plain"))

    # A mail scanner or a browser opening the link: a page that asks, nothing changes.
    status, content_type, page = http("GET", link)
    assert (status, content_type) == (200, "text/html; charset=utf-8")
    token = link.split("?t=", 1)[1]
    assert f'<form method="post" action="?t={token}">' in page
    [listed] = [
        r
        for r in api.request("GET", "/api/v1/pushkeys").body["pushkeys"]
        if r["pushkey"] == pushkey
    ]
    assert listed["status"] == "active"

    # RFC 8058 one-click, as a mail client sends it.
    status, content_type, body = http(
        "POST",
        link,
        b"List-Unsubscribe=One-Click",
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert (status, content_type) == (200, "application/json")
    assert body == '{"unsubscribed":true,"status":"rejected"}'

    answer = api.request("GET", f"/api/v1/pushkeys/{pushkey}")
    assert answer.body["status"] == "rejected"
    assert answer.body["status_reason"].startswith("unsubscribed")
    assert answer.body["target"] == {"to": f"b***@{address.split('@')[1]}"}
    # Synapse is told, and nothing more is mailed.
    second = with_event_id(synapse_body(DM, pushkey), "$after-unsubscribe")
    assert api.notify(second).body == {"rejected": [pushkey]}
    # Again: idempotent, and a browser gets a page.
    status, content_type, page = http("POST", link, b"", {"Accept": "text/html"})
    assert (status, content_type) == (200, "text/html; charset=utf-8")
    assert "no more notification emails" in page
    assert len(smtp.to(address)) == 1


@pytest.mark.parametrize(
    ("query", "status", "errcode"),
    [
        ("", 400, "M_MISSING_PARAM"),
        ("?t=nonsense", 400, "M_INVALID_PARAM"),
        (f"?t={'a' * 64}.9999999999.{'A' * 43}", 403, "M_FORBIDDEN"),
    ],
)
def test_bad_or_forged_unsubscribe_tokens_are_4xx(
    api: Api, query: str, status: int, errcode: str
) -> None:
    for method in ("GET", "POST"):
        answer = api.request(method, f"/api/v1/unsubscribe{query}", token=None)
        assert answer.status == status, answer.body
        assert answer.body["errcode"] == errcode


def test_a_link_for_another_registration_does_not_carry_over(
    api: Api, smtp: FakeSmtp, address: str
) -> None:
    """The signature covers the registration id: swapping it in a real link is refused."""
    pushkey = register_email(api, address)
    api.notify(synapse_body(DM, pushkey))
    [mail] = smtp.wait_for_recipient(address)
    wait_for_outcome(api, pushkey, "delivered")
    link = unsubscribe_url(mail.part("text/plain"))
    token = link.split("?t=", 1)[1]
    forged = "f" * 64 + token[64:]
    answer = api.request("POST", f"/api/v1/unsubscribe?t={quote(forged)}", token=None)
    assert answer.status == 403
    assert api.request("GET", f"/api/v1/pushkeys/{pushkey}").body["status"] == "active"


def test_a_refused_address_rejects_the_registration(api: Api, smtp: FakeSmtp, address: str) -> None:
    smtp.refuse[address] = f"550 5.1.1 <{address}>: Recipient address rejected: no such user"
    try:
        pushkey = register_email(api, address)
        api.notify(synapse_body(DM, pushkey))
        [entry] = wait_for_outcome(api, pushkey, "rejected")
    finally:
        del smtp.refuse[address]
    assert entry["reason"].startswith("SMTP server 127.0.0.1")
    assert address not in entry["reason"]
    assert "b***@example.org" in entry["reason"]
    assert api.request("GET", f"/api/v1/pushkeys/{pushkey}").body["status"] == "rejected"


def test_a_test_push_is_mailed(api: Api, smtp: FakeSmtp, address: str) -> None:
    pushkey = register_email(api, address)
    answer = api.request("POST", f"/api/v1/pushkeys/{pushkey}/test")
    assert answer.body == {"outcome": "delivered"}
    [mail] = smtp.wait_for_recipient(address)
    assert mail.message["Subject"] == "mxpush test"


def test_registration_checks_the_address_and_masks_it(api: Api, address: str) -> None:
    answer = api.request(
        "POST",
        "/api/v1/pushkeys",
        {"backend": "email", "target": {"to": address, "cc": "x"}, "options": {"markdown": True}},
    )
    assert answer.status == 201, answer.body
    assert answer.body["warnings"] == [
        "target.cc: unknown field for backend 'email', ignored",
        "options.markdown: not supported by backend 'email', ignored",
    ]
    listed = api.request("GET", f"/api/v1/pushkeys/{answer.body['pushkey']}").body
    assert listed["target"] == {"to": "b***@example.org"}
    for bad in (
        "bob@example.org\r\nBcc: eve@example.org",
        "a@example.org, b@example.org",
        "Bob <bob@example.org>",
        "bob",
        "x" * 65 + "@example.org",
    ):
        refused = api.request(
            "POST", "/api/v1/pushkeys", {"backend": "email", "target": {"to": bad}}
        )
        assert refused.status == 400, bad
        assert refused.body["error"].startswith("target.to: ")


@pytest.fixture
def no_mail_transport(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def unavailable() -> Mailer:
        raise EmailUnavailable("no mail transport is configured (MXPUSH_SMTP_URL ...)")

    monkeypatch.setattr(wiring, "mailer", unavailable)
    yield


@pytest.mark.usefixtures("no_mail_transport")
def test_without_a_mail_transport_registering_email_answers_400(api: Api) -> None:
    answer = api.request(
        "POST", "/api/v1/pushkeys", {"backend": "email", "target": {"to": "bob@example.org"}}
    )
    assert answer.status == 400
    assert answer.body == {
        "errcode": "M_INVALID_PARAM",
        "error": "backend: email is not enabled on this gateway: no mail transport is "
        "configured (MXPUSH_SMTP_URL ...)",
    }


def test_the_link_points_at_the_public_url(api: Api, smtp: FakeSmtp, address: str) -> None:
    pushkey = register_email(api, address)
    api.notify(synapse_body(DM, pushkey))
    [mail] = smtp.wait_for_recipient(address)
    link = unsubscribe_url(mail.part("text/plain"))
    assert urlsplit(link).netloc == urlsplit(api.base).netloc
    wait_until(lambda: outcomes(api, pushkey) == ["delivered"])


def test_greylisting_is_retried_until_the_mail_goes_out(
    api: Api, smtp: FakeSmtp, address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 4xx is temporary: the retry execution tries again (its first wait shortened here from
    30 s), and the mail goes out once."""
    monkeypatch.setitem(FIRST_RETRY_SECONDS, "email", 1)
    smtp.data_replies.append("451 4.7.1 Greylisted, please try again later")
    pushkey = register_email(api, address)
    api.notify(synapse_body(DM, pushkey))

    [mail] = smtp.wait_for_recipient(address, timeout=20)
    assert mail.message["Subject"] == "1 unread message from alice"
    wait_for_outcome(api, pushkey, "delivered")
    assert len(smtp.to(address)) == 1
    assert smtp.data_replies == []
