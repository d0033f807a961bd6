"""A real SMTP server on 127.0.0.1 (aiosmtpd) that records every mail it accepts, and can
refuse recipients, answer DATA with an error, ask for a login and offer STARTTLS."""

from __future__ import annotations

import datetime
import email
import email.policy
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    # Whether the mail came over TLS (STARTTLS or implicit), and who logged in.
    tls: bool
    login: str | None

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    def part(self, content_type: str) -> str:
        found = self.message.get_body(preferencelist=(content_type.split("/")[1],))
        assert found is not None and found.get_content_type() == content_type
        content: str = found.get_content()
        return content.replace("\r\n", "\n")  # as sent over SMTP: CRLF line ends


@dataclass
class FakeSmtp:
    """`start()` it; `url` is what `MXPUSH_SMTP_URL` takes."""

    users: dict[str, str] = field(default_factory=dict)
    # STARTTLS offered with this context (see `self_signed`); `implicit_tls`: TLS from the start.
    tls_context: ssl.SSLContext | None = None
    implicit_tls: bool = False
    # recipient -> the RCPT reply, e.g. "550 5.1.1 <bob@example.org>: no such user".
    refuse: dict[str, str] = field(default_factory=dict)
    mails: list[ReceivedMail] = field(default_factory=list)
    # DATA replies to give instead of accepting, one per mail ("451 4.7.1 try later").
    data_replies: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Condition()
        self._controller: Controller | None = None
        self.port = 0

    def start(self) -> Self:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        kwargs: dict[str, Any] = {}
        if self.users:
            kwargs.update(authenticator=self._authenticate, auth_require_tls=False)
        if self.tls_context is not None and not self.implicit_tls:
            kwargs.update(tls_context=self.tls_context)
        self._controller = Controller(
            _Handler(self),
            hostname="127.0.0.1",
            port=self.port,
            ssl_context=self.tls_context if self.implicit_tls else None,
            server_hostname="127.0.0.1",
            ready_timeout=10,
            **kwargs,
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def url(self, user: str | None = None, password: str | None = None) -> str:
        scheme = "smtps" if self.implicit_tls else "smtp"
        login = f"{user}:{password}@" if user is not None else ""
        return f"{scheme}://{login}127.0.0.1:{self.port}"

    def wait_for(self, count: int, timeout: float = 15.0) -> list[ReceivedMail]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.mails) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {count} mails, got {len(self.mails)}")
                self._lock.wait(left)
            return list(self.mails)

    def wait_for_recipient(
        self, address: str, count: int = 1, timeout: float = 15.0
    ) -> list[ReceivedMail]:
        """The mails to `address` (a shared server: each test mails its own address)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                found = [m for m in self.mails if address in m.rcpt_tos]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {count} mails to {address}, got {len(found)}")
                self._lock.wait(left)

    def to(self, address: str) -> list[ReceivedMail]:
        with self._lock:
            return [m for m in self.mails if address in m.rcpt_tos]

    def record(self, mail: ReceivedMail) -> None:
        with self._lock:
            self.mails.append(mail)
            self._lock.notify_all()

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            user = auth_data.login.decode()
            if self.users.get(user) == auth_data.password.decode():
                return AuthResult(success=True, auth_data=user)
        return AuthResult(success=False, handled=False)


class _Handler:
    def __init__(self, fake: FakeSmtp) -> None:
        self.fake = fake

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook names
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        refused = self.fake.refuse.get(address)
        if refused:
            return refused
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.fake.data_replies:
            return self.fake.data_replies.pop(0)
        auth = session.auth_data if session.authenticated else None
        self.fake.record(
            ReceivedMail(
                mail_from=str(envelope.mail_from),
                rcpt_tos=tuple(envelope.rcpt_tos),
                data=bytes(envelope.original_content or envelope.content),
                tls=server.transport.get_extra_info("ssl_object") is not None,
                login=str(auth) if auth is not None else None,
            )
        )
        return "250 2.0.0 Message accepted"


def self_signed(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a fresh certificate for 127.0.0.1, and a client context that
    trusts exactly that certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_file = directory / "smtp-cert.pem"
    key_file = directory / "smtp-key.pem"
    cert_file.write_bytes(cert_pem)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cadata=cert_pem.decode())
    return server, client
