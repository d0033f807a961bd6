"""Email: a digest mail through Amazon SES v2 (AWS) or an SMTP server (local mode, operators).

Target: `{"to": "bob@example.org"}` — one plain address. Registering one answers 400 when the
gateway has no mail transport (`mxpush.wiring.mailer`: `MXPUSH_SMTP_URL` + `MXPUSH_EMAIL_FROM`,
or the template's `EmailFromAddress` for SES).

A push is one mail for everything its batch holds: subject "bob: 5 unread messages in 2
rooms", a text/plain part and a simple text/html alternative (everything escaped), each room
with its click URL. The text follows `mxpush.render`'s rules: the latest message's text only
when the registration allows content and the pusher sent it (never for `event_id_only`, never
ciphertext). Headers: `List-Unsubscribe` with a signed link (`mxpush.unsubscribe`) and
`List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058), `Auto-Submitted:
auto-generated` (RFC 3834: no vacation replies).

A read cannot recall a sent mail: like every push, the mail waits for the registration's delay
and a read within it cancels it; after that it is in the recipient's mailbox.

The address is masked in API answers and never logged (`b***@example.org`); servers' answers
that quote it are masked too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, ClassVar

from mxpush.backends.base import Backend, Delivered, Rejected, SendResult
from mxpush.errors import (
    InvalidParam,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from mxpush.mailer import (
    EmailUnavailable,
    Mailer,
    RecipientRefused,
    check_address,
    envelope_address,
    mask_address,
)
from mxpush.model import Registration, RegistrationOptions
from mxpush.outbound import OutboundHttp
from mxpush.render import MessageKind, PushMessage, RoomDigest
from mxpush.unsubscribe import UnsubscribeKeyUnreadable, link, make_token
from mxpush.urlsafety import TargetPolicy

MAX_SUBJECT_CHARS = 150
# Headers are folded only past SMTP's own line limit (RFC 5322 §2.1.1).
MAX_LINE_BYTES = 998
NOTIFY_PATH = "/_matrix/push/v1/notify"


def _configured_mailer() -> Mailer:
    from mxpush import wiring  # noqa: PLC0415 - the deployed configuration, read on first use

    return wiring.mailer()


def _configured_unsubscribe_key() -> bytes:
    from mxpush import wiring  # noqa: PLC0415

    return wiring.unsubscribe_key()


def _configured_public_url() -> str | None:
    from mxpush import wiring  # noqa: PLC0415

    return wiring.settings().public_url


class EmailBackend(Backend):
    name: ClassVar[str] = "email"
    display_name: ClassVar[str] = "Email"
    known_fields: ClassVar[frozenset[str]] = frozenset({"to"})
    default_priority: ClassVar[Mapping[str, int]] = {}
    priority_range: ClassVar[tuple[int, int]] = (0, 0)
    # A mail has both a text and an HTML part; Markdown would be neither.
    ignored_options: ClassVar[frozenset[str]] = frozenset({"markdown"})

    def __init__(
        self,
        mailer: Callable[[], Mailer] = _configured_mailer,
        *,
        unsubscribe_key: Callable[[], bytes] = _configured_unsubscribe_key,
        public_url: Callable[[], str | None] = _configured_public_url,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._mailer = mailer
        self._unsubscribe_key = unsubscribe_key
        self._public_url = public_url
        self._clock = clock

    # --- registration -------------------------------------------------------------------------

    def check(self, target: dict[str, Any], policy: TargetPolicy) -> dict[str, Any]:
        try:
            self._mailer()
        except EmailUnavailable as exc:
            raise InvalidParam(f"backend: {exc}") from None
        value = target.get("to")
        if value is None:
            raise InvalidParam("target.to: required (the address to mail)")
        if not isinstance(value, str) or not value.strip():
            raise InvalidParam("target.to: must be an email address")
        try:
            return {"to": check_address(value.strip())}
        except ValueError as exc:
            raise InvalidParam(f"target.to: {exc}") from None

    def validate_priority(self, overrides: Mapping[str, Any]) -> dict[str, int]:
        if overrides:
            raise InvalidParam("options.priority: email has no priority levels")
        return {}

    def mask_target(self, target: Mapping[str, Any]) -> dict[str, Any]:
        masked = dict(target)
        if "to" in target:
            masked["to"] = mask_address(str(target["to"]))
        return masked

    # --- delivery -----------------------------------------------------------------------------

    def send(
        self,
        message: PushMessage,
        target: Mapping[str, Any],
        options: RegistrationOptions,
        http: OutboundHttp,
    ) -> SendResult:
        raise PermanentDeliveryError(
            "Email: needs its registration (for the unsubscribe link); use send_to"
        )

    def send_to(
        self,
        message: PushMessage,
        registration: Registration,
        http: OutboundHttp,
        *,
        target: Mapping[str, Any] | None = None,
    ) -> SendResult:
        recipient = str((registration.target if target is None else target)["to"])
        try:
            mailer = self._mailer()
        except EmailUnavailable as exc:
            raise PermanentDeliveryError(f"Email: {exc}") from None
        unsubscribe_url = self.unsubscribe_url(registration)
        mail = self.compose(
            message,
            registration,
            sender=mailer.sender,
            recipient=recipient,
            unsubscribe_url=unsubscribe_url,
        )
        try:
            mailer.send(mail, recipient)
        except RecipientRefused as exc:
            return Rejected(exc.reason)
        return Delivered(250)

    def unsubscribe_url(self, registration: Registration) -> str:
        try:
            key = self._unsubscribe_key()
        except UnsubscribeKeyUnreadable as exc:
            raise TransientDeliveryError(f"Email: {exc}") from None
        except EmailUnavailable as exc:
            raise PermanentDeliveryError(f"Email: {exc}") from None
        base = self._public_url() or _gateway_url(registration)
        if not base:
            raise PermanentDeliveryError(
                "Email: no public URL for the unsubscribe link (set MXPUSH_PUBLIC_URL)"
            )
        return link(base, make_token(key, registration.rid, now=self._clock()))

    # --- the mail -----------------------------------------------------------------------------

    def compose(
        self,
        message: PushMessage,
        registration: Registration,
        *,
        sender: str,
        recipient: str,
        unsubscribe_url: str,
    ) -> EmailMessage:
        digest = Digest(message, recipient_name(registration.owner))
        # CRLF line ends, and no folding below 998: a `List-Unsubscribe` longer than 78
        # characters must stay one `<URL>`, which the default policy would turn into an RFC 2047
        # encoded word that no mail client reads as a link. (Imported here: `email.policy`
        # weighs on every handler's cold start, and only the email sender needs it.)
        import email.policy  # noqa: PLC0415

        mail = EmailMessage(policy=email.policy.SMTP.clone(max_line_length=MAX_LINE_BYTES))
        mail["Subject"] = digest.subject()
        mail["From"] = sender
        mail["To"] = recipient
        mail["Date"] = formatdate(self._clock(), usegmt=True)
        domain = envelope_address(sender).rpartition("@")[2] or None
        mail["Message-ID"] = make_msgid("mxpush", domain=domain)
        mail["Auto-Submitted"] = "auto-generated"
        mail["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        mail.set_content(digest.text(unsubscribe_url))
        mail.add_alternative(digest.html(unsubscribe_url), subtype="html")
        return mail


def recipient_name(owner: str) -> str | None:
    """The greeting's name: a Matrix owner's localpart (`@bob:example.org` -> `bob`)."""
    if owner.startswith("@") and ":" in owner:
        return one_line(owner[1:].split(":", 1)[0]) or None
    return None


def one_line(text: str) -> str:
    """`text` without control characters (header-safe), whitespace runs made one space."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def _gateway_url(registration: Registration) -> str | None:
    """This gateway's base URL as the registration was made with (its pusher's notify URL)."""
    data = (registration.pusher or {}).get("data") or {}
    url = str(data.get("url") or "")
    if url.endswith(NOTIFY_PATH) and url.startswith(("https://", "http://")):
        return url.removesuffix(NOTIFY_PATH)
    return None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class Digest:
    """What the mail says, in text and in HTML, from one rendered batch."""

    def __init__(self, message: PushMessage, name: str | None) -> None:
        self.message = message
        self.name = name
        self.rooms = message.rooms
        # Per-room counts are exact only when the batch still lists every event it holds.
        self.counted = sum(room.count for room in self.rooms) == message.count

    def subject(self) -> str:
        message = self.message
        if message.kind is MessageKind.TEST or (
            message.kind is MessageKind.CALL and message.count == 1
        ):
            what = message.title
        elif message.kind is MessageKind.INVITE and message.count == 1:
            what = message.body
        else:
            what = _plural(message.count, "unread message")
            if len(self.rooms) > 1:
                what += f" in {len(self.rooms)} rooms"
            elif self.rooms and self.rooms[0].name:
                room = self.rooms[0]
                # A named room, or a DM (its name is the sender's).
                joiner = "in" if message.room_name else "from"
                what += f" {joiner} {room.name}"
        subject = one_line(f"{self.name}: {what}" if self.name else what)
        if len(subject) > MAX_SUBJECT_CHARS:
            subject = subject[: MAX_SUBJECT_CHARS - 1].rstrip() + "…"
        return subject

    def intro(self) -> str:
        message = self.message
        if message.kind is MessageKind.TEST:
            return message.body
        what = _plural(message.count, "unread message")
        if len(self.rooms) > 1:
            what += f" in {len(self.rooms)} rooms"
        return f"{self.name}, you have {what}." if self.name else f"You have {what}."

    def heading(self, room: RoomDigest) -> str:
        where = one_line(room.name) if room.name else room.room_id
        if self.counted and room.count:
            return f"{where}: {_plural(room.count, 'message')}"
        return where

    def text(self, unsubscribe_url: str) -> str:
        lines = [self.intro(), ""]
        for room in self.rooms:
            lines.append(self.heading(room))
            if room.line:
                lines.append(f"  {one_line(room.line)}")
            if room.click_url:
                lines.append(f"  Open: {room.click_url}")
            lines.append("")
        lines += [
            "-- ",
            "Sent by mxpush, the push gateway of your Matrix account, because this address "
            "was registered for notifications.",
            f"Unsubscribe: {unsubscribe_url}",
            "",
        ]
        return "\n".join(lines)

    def html(self, unsubscribe_url: str) -> str:
        import html  # noqa: PLC0415 - html.entities is large: only the email sender loads it

        def e(text: str) -> str:
            return html.escape(text, quote=True)

        parts = [
            '<!DOCTYPE html><html><head><meta charset="utf-8"></head>',
            '<body style="font-family: sans-serif">',
            f"<p>{e(self.intro())}</p>",
        ]
        for room in self.rooms:
            parts.append(f"<h3>{e(self.heading(room))}</h3>")
            if room.line:
                parts.append(f"<p>{e(one_line(room.line))}</p>")
            if room.click_url:
                parts.append(f'<p><a href="{e(room.click_url)}">Open in Matrix</a></p>')
        parts += [
            '<hr><p style="font-size: small; color: #666">Sent by mxpush, the push gateway of '
            "your Matrix account, because this address was registered for notifications. "
            f'<a href="{e(unsubscribe_url)}">Unsubscribe</a></p>',
            "</body></html>",
        ]
        return "\n".join(parts) + "\n"
