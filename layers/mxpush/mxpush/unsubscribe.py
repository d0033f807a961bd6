"""Signed unsubscribe links for emails (RFC 2369 `List-Unsubscribe`, RFC 8058 one-click).

A link is `{base}/api/v1/unsubscribe?t=<registration id>.<expiry>.<signature>`: the signature
is an HMAC-SHA256 over the scope (`email`), the registration id and the expiry, keyed with the
server's secret (`MXPUSH_UNSUBSCRIBE_SECRET`, or on AWS the SSM SecureString named by
`MXPUSH_UNSUBSCRIBE_SECRET_PARAMETER`). The registration id is the SHA-256 of the pushkey: the
link never carries the pushkey, and holding it allows nothing but this one unsubscribe.

`GET` shows a page that asks (mail scanners fetch links: a GET must not unsubscribe), `POST`
unsubscribes (the page's button, or a mail client's one-click `List-Unsubscribe=One-Click`).
Unsubscribing marks the registration `rejected` with `UNSUBSCRIBED_REASON`: nothing more is
mailed, its pending pushes end `rejected`, Synapse is answered `rejected` (and drops the
pusher), and the registration stays listed with that reason.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable
from typing import Protocol
from urllib.parse import quote

from mxpush.errors import Forbidden, InvalidParam, MissingParam, NotFound, ServiceUnavailable
from mxpush.model import Registration, Status

UNSUBSCRIBE_PATH = "/api/v1/unsubscribe"
# Mails are read late, and archived: a link works for 60 days after its mail was sent.
LINK_LIFETIME_SECONDS = 60 * 24 * 3600
UNSUBSCRIBED_REASON = "unsubscribed: the recipient used the unsubscribe link of an email"
SCOPE = "email"
_TOKEN = re.compile(r"^([0-9a-f]{64})\.([0-9]{1,12})\.([A-Za-z0-9_-]{43})$")
MAX_TOKEN_LENGTH = 200


class UnsubscribeKeyUnreadable(ServiceUnavailable):
    """The key is configured but cannot be read just now (SSM throttled, timed out, denied):
    503 for the unsubscribe route, a transient failure for the email sender."""

    def __init__(self) -> None:
        super().__init__("unsubscribing is temporarily unavailable: its key cannot be read")


class UnsubscribeStore(Protocol):
    def get_registration(self, rid: str) -> Registration | None: ...

    def reject_backend_channels(
        self, rid: str, backend: str, *, reason: str, now: float
    ) -> bool: ...


def make_token(key: bytes, rid: str, *, now: float) -> str:
    expires = int(now) + LINK_LIFETIME_SECONDS
    return f"{rid}.{expires}.{_signature(key, rid, expires)}"


def link(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}{UNSUBSCRIBE_PATH}?t={quote(token, safe='.')}"


def check_token(key: bytes, token: str | None, *, now: float) -> str:
    """The registration id a valid, unexpired token names. Raises `MissingParam` /
    `InvalidParam` (400) for no or a malformed token, `Forbidden` (403) for a wrong signature
    or an expired link."""
    if not token:
        raise MissingParam("t: required (the token of the unsubscribe link)")
    match = _TOKEN.match(token) if len(token) <= MAX_TOKEN_LENGTH else None
    if match is None:
        raise InvalidParam("t: not an unsubscribe token (copy the whole link from the email)")
    rid, expires_text, signature = match.groups()
    expires = int(expires_text)
    if not hmac.compare_digest(signature, _signature(key, rid, expires)):
        raise Forbidden("t: this unsubscribe link is not valid")
    if expires < now:
        raise Forbidden("t: this unsubscribe link has expired; use the link of a newer email")
    return rid


def unsubscribe(
    store: UnsubscribeStore, key: bytes, token: str | None, *, clock: Callable[[], float]
) -> Registration:
    """Disable email delivery of the registration the token names (idempotent); the
    registration as it is after."""
    now = clock()
    rid = check_token(key, token, now=now)
    registration = store.get_registration(rid)
    if registration is None:
        raise NotFound("this registration no longer exists: nothing is mailed to you")
    if registration.status is Status.REJECTED:
        return registration
    # Its email channels (a registration of one: itself); its other channels go on.
    store.reject_backend_channels(rid, "email", reason=UNSUBSCRIBED_REASON, now=now)
    # As it is now: rejected, or active with its other channels.
    return store.get_registration(rid) or registration


def confirmation_page(token: str, *, done: bool) -> str:
    """The small HTML page a browser gets: a button that POSTs the link (GET), or the result."""
    import html  # noqa: PLC0415 - html.entities is large: only this page needs it

    if done:
        text = "<p>You will get no more notification emails from this push gateway.</p>"
    else:
        # The same URL (a query-only reference): right behind a proxy's path prefix too.
        action = html.escape(f"?t={quote(token, safe='.')}", quote=True)
        text = (
            "<p>Stop the Matrix notification emails this push gateway sends you?</p>"
            f'<form method="post" action="{action}">'
            '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
            '<button type="submit">Unsubscribe</button></form>'
        )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>Unsubscribe</title></head>"
        f'<body style="font-family: sans-serif; max-width: 40em; margin: 2em auto">{text}'
        "</body></html>"
    )


def _signature(key: bytes, rid: str, expires: int) -> str:
    message = f"mxpush-unsubscribe\n{SCOPE}\n{rid}\n{expires}".encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
