"""Mail transports for the email backend: Amazon SES v2 (`SendEmail`, raw MIME) and SMTP
(stdlib `smtplib`), with their failures sorted the way every backend sorts them.

- `RecipientRefused`: the address itself is refused for good (SMTP 550/551/553 or an enhanced
  status 5.1.x, SES "bad address"): the email backend answers `Rejected`;
- `PermanentDeliveryError`: retrying will not help (SMTP 5xx for another reason, a refused
  login, SES `MessageRejected`, an unverified sender);
- `TransientDeliveryError`: SMTP 4xx (greylisting, a full queue), a refused or dropped
  connection, a timeout, SES throttling or a 5xx.

Nothing here logs or raises the recipient's address in full (`mask_address`), nor the SMTP
password: `SmtpServer` keeps it out of `repr` and `str`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlsplit

from mxpush.errors import (
    ConfigError,
    NotFound,
    PermanentDeliveryError,
    TransientDeliveryError,
)

if TYPE_CHECKING:
    import smtplib
    import ssl
    from email.message import EmailMessage

SMTP_TIMEOUT_SECONDS = 15.0
MAX_ADDRESS_LENGTH = 254  # RFC 5321 §4.5.3.1.3 (a path of 256 octets with its brackets)
MAX_LOCAL_PART_LENGTH = 64
_LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_DOMAIN_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
# Anything that looks like an address in a server's answer (they often quote the recipient).
_ADDRESS_IN_TEXT = re.compile(r"[^\s<>\"'(),;:\[\]]+@[A-Za-z0-9.-]+")
# SMTP answers that say the mailbox itself is unusable, not that this message was refused.
_MAILBOX_CODES = frozenset({550, 551, 553})
_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SES_TRANSIENT = frozenset(
    {
        "TooManyRequestsException",
        "LimitExceededException",
        "ThrottlingException",
        "Throttling",
        "InternalFailure",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
    }
)


class EmailUnavailable(NotFound):
    """This gateway has no working email configuration (`reason` says what is missing): 404
    for the unsubscribe route; registering an email target answers 400 with it."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"email is not enabled on this gateway: {reason}")
        self.reason = reason


class RecipientRefused(PermanentDeliveryError):
    """The mail server or SES refuses the address itself: the registration is rejected."""


class Mailer(Protocol):
    """Sends one finished message to one recipient; raises the errors above."""

    @property
    def sender(self) -> str:
        """The `From` header's value (`mxpush <push@example.org>` or a bare address)."""
        ...

    def send(self, message: EmailMessage, recipient: str) -> None: ...


# --- addresses ----------------------------------------------------------------------------------


def check_address(value: str) -> str:
    """A single plain address (`bob@example.org`), domain lowercased. Raises ValueError with
    what is wrong (never quoting the value): no display name, no list, no CR/LF, RFC 5321's
    lengths, a dotted domain of DNS labels (or an `[IP]` literal is refused: too odd to be
    meant)."""
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        raise ValueError("must be one address without spaces or control characters")
    if len(value) > MAX_ADDRESS_LENGTH:
        raise ValueError(f"must be at most {MAX_ADDRESS_LENGTH} characters")
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain:
        raise ValueError("must be an address like bob@example.org")
    if len(local) > MAX_LOCAL_PART_LENGTH:
        raise ValueError(f"the part before @ must be at most {MAX_LOCAL_PART_LENGTH} characters")
    if not _LOCAL_PART.match(local):
        raise ValueError("must be one plain address like bob@example.org (no name, no list)")
    labels = domain.rstrip(".").split(".")
    if len(labels) < 2 or not all(_DOMAIN_LABEL.match(label) for label in labels):
        raise ValueError("must end in a domain name like example.org")
    return f"{local}@{'.'.join(labels).lower()}"


def mask_address(value: str) -> str:
    """`bob@example.org` -> `b***@example.org`: enough for its owner to recognise it."""
    local, at, domain = str(value).rpartition("@")
    if not at:
        return "****"
    return f"{local[:1]}***@{domain}"


def mask_addresses(text: str) -> str:
    """`text` with every address in it masked (for servers' answers, which quote them)."""
    return _ADDRESS_IN_TEXT.sub(lambda m: mask_address(m.group(0)), text)


def envelope_address(sender: str) -> str:
    """The bare address of a `From` value (`mxpush <push@example.org>` -> the address)."""
    return parseaddr(sender)[1]


# --- SMTP ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmtpServer:
    """`MXPUSH_SMTP_URL` parsed: `smtp://user:password@host:port` (STARTTLS when offered) or
    `smtps://...` (TLS from the first byte). The password is never shown."""

    host: str
    port: int
    implicit_tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        scheme = "smtps" if self.implicit_tls else "smtp"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


def parse_smtp_url(url: str) -> SmtpServer:
    """Raise `ConfigError` (which never quotes the URL: it may hold a password)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ConfigError("MXPUSH_SMTP_URL: not a URL (smtp://user:password@host:port)") from None
    scheme = parts.scheme.lower()
    if scheme not in ("smtp", "smtps"):
        raise ConfigError("MXPUSH_SMTP_URL: must start with smtp:// or smtps://")
    if not parts.hostname:
        raise ConfigError("MXPUSH_SMTP_URL: names no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError("MXPUSH_SMTP_URL: takes no path, query or fragment")
    implicit = scheme == "smtps"
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if password and not username:
        raise ConfigError("MXPUSH_SMTP_URL: a password needs a user name")
    return SmtpServer(
        host=parts.hostname,
        port=port or (465 if implicit else 25),
        implicit_tls=implicit,
        username=username,
        password=password,
    )


class SmtpMailer:
    """One SMTP connection per message: EHLO, STARTTLS when the server offers it (unless
    `starttls=False`), AUTH when a user is configured, MAIL/RCPT/DATA, QUIT."""

    def __init__(
        self,
        server: SmtpServer,
        sender: str,
        *,
        starttls: bool = True,
        timeout: float = SMTP_TIMEOUT_SECONDS,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.server = server
        self._sender = sender
        self.starttls = starttls
        self.timeout = timeout
        self._ssl_context = ssl_context

    def __repr__(self) -> str:
        return f"SmtpMailer({self.server}, starttls={self.starttls})"

    @property
    def sender(self) -> str:
        return self._sender

    def send(self, message: EmailMessage, recipient: str) -> None:
        import smtplib  # noqa: PLC0415 - only the email sender pays for these
        import ssl  # noqa: PLC0415

        where = f"SMTP server {self.server.host}:{self.server.port}"
        try:
            with self._connect() as smtp:
                self._secure_and_login(smtp)
                smtp.send_message(
                    message, from_addr=envelope_address(self._sender), to_addrs=[recipient]
                )
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()), (554, b""))
            raise _recipient_error(where, code, text) from None
        except smtplib.SMTPAuthenticationError as exc:
            raise PermanentDeliveryError(
                f"{where} refused the login ({exc.smtp_code}): check MXPUSH_SMTP_URL's user "
                "and password"
            ) from None
        except smtplib.SMTPResponseException as exc:
            # SMTPSenderRefused, SMTPDataError, SMTPConnectError, SMTPHeloError, ...
            raise _reply_error(where, exc.smtp_code, exc.smtp_error) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise PermanentDeliveryError(f"{where}: {exc}") from None
        except smtplib.SMTPException as exc:
            # SMTPServerDisconnected and the like: the connection broke.
            raise TransientDeliveryError(
                f"{where}: connection lost ({type(exc).__name__})"
            ) from None
        except ssl.SSLCertVerificationError:
            raise PermanentDeliveryError(f"{where}: its TLS certificate does not verify") from None
        except (OSError, TimeoutError) as exc:
            raise TransientDeliveryError(
                f"{where}: cannot connect ({type(exc).__name__})"
            ) from None

    def _connect(self) -> smtplib.SMTP:
        import smtplib  # noqa: PLC0415

        if self.server.implicit_tls:
            return smtplib.SMTP_SSL(
                self.server.host,
                self.server.port,
                timeout=self.timeout,
                context=self._context(),
            )
        return smtplib.SMTP(self.server.host, self.server.port, timeout=self.timeout)

    def _secure_and_login(self, smtp: smtplib.SMTP) -> None:
        import smtplib  # noqa: PLC0415

        smtp.ehlo()
        if not self.server.implicit_tls and self.starttls and smtp.has_extn("starttls"):
            smtp.starttls(context=self._context())
            smtp.ehlo()
        if self.server.username:
            if not smtp.has_extn("auth"):
                raise smtplib.SMTPNotSupportedError(
                    "the server offers no AUTH (over plain text, some offer it only after "
                    "STARTTLS), but MXPUSH_SMTP_URL names a user"
                )
            smtp.login(self.server.username, self.server.password or "")

    def _context(self) -> ssl.SSLContext:
        import ssl  # noqa: PLC0415

        return self._ssl_context or ssl.create_default_context()


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return mask_addresses(" ".join(text.split()))[:300]


def _reply_error(
    where: str, code: int, reply: bytes | str
) -> PermanentDeliveryError | TransientDeliveryError:
    detail = f"{code} {_text(reply)}".strip()
    if 400 <= code < 500 or code < 200:
        return TransientDeliveryError(f"{where} answered {code} (temporary)", detail=detail)
    return PermanentDeliveryError(f"{where} answered {code}", detail=detail)


def _recipient_error(
    where: str, code: int, reply: bytes | str
) -> PermanentDeliveryError | TransientDeliveryError:
    text = _text(reply)
    enhanced = _ENHANCED.search(text)
    policy = (enhanced is not None and enhanced.group(2) == "7") or "relay" in text.lower()
    mailbox = (enhanced is not None and enhanced.group(1) == "5" and enhanced.group(2) == "1") or (
        code in _MAILBOX_CODES and enhanced is None
    )
    if 500 <= code < 600 and mailbox and not policy:
        return RecipientRefused(
            f"{where} refused the address ({code}): it does not exist or takes no mail",
            detail=f"{code} {text}".strip(),
        )
    return _reply_error(where, code, reply)


# --- Amazon SES v2 ------------------------------------------------------------------------------


class SesMailer:
    """`SendEmail` with `Content.Raw`: the raw MIME message carries our own headers
    (List-Unsubscribe, List-Unsubscribe-Post), which `Content.Simple` only gained later and
    moto does not keep. The client is made on the first send (the registration function only
    asks whether email is configured)."""

    def __init__(self, sender: str, region: str, *, client: Any = None) -> None:
        self._sender = sender
        self.region = region
        self._client = client

    def __repr__(self) -> str:
        return f"SesMailer(region={self.region!r})"

    @property
    def sender(self) -> str:
        return self._sender

    def send(self, message: EmailMessage, recipient: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        try:
            self._ses().send_email(
                FromEmailAddress=self._sender,
                Destination={"ToAddresses": [recipient]},
                Content={"Raw": {"Data": message.as_bytes()}},
            )
        except ClientError as exc:
            raise _ses_error(exc.response) from None
        except BotoCoreError as exc:
            raise TransientDeliveryError(
                f"Amazon SES: cannot reach the service ({type(exc).__name__})"
            ) from None

    def _ses(self) -> Any:
        if self._client is None:
            import boto3  # noqa: PLC0415 - only the email sender pays for it
            from botocore.config import Config  # noqa: PLC0415

            config = Config(
                connect_timeout=3,
                read_timeout=10,
                retries={"max_attempts": 3, "mode": "standard"},
            )
            self._client = boto3.client("sesv2", region_name=self.region, config=config)
        return self._client


def _ses_error(response: Any) -> PermanentDeliveryError | TransientDeliveryError:
    error = response.get("Error", {}) if isinstance(response, dict) else {}
    code = str(error.get("Code") or "ClientError")
    text = mask_addresses(" ".join(str(error.get("Message") or "").split()))[:300]
    status = int((response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
    if code in _SES_TRANSIENT or status == 429 or status >= 500:
        return TransientDeliveryError(
            f"Amazon SES answered {code} (temporary)", detail=text or None
        )
    if code in ("BadRequestException", "InvalidParameterValue") and "address" in text.lower():
        return RecipientRefused(f"Amazon SES refused the address ({code})", detail=text or None)
    return PermanentDeliveryError(f"Amazon SES answered {code}", detail=text or None)
