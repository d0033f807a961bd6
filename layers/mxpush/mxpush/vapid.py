"""VAPID (RFC 8292): the key pair that identifies this gateway to browsers' push services.

A browser subscribes with our public key (`applicationServerKey`); its push service then only
accepts pushes signed with the matching private key. The private key comes from configuration:
`MXPUSH_VAPID_PRIVATE_KEY` (local mode generates one per session), or on AWS the SSM SecureString
named by `MXPUSH_VAPID_PRIVATE_KEY_PARAMETER`. Accepted forms: the base64url raw 32-byte P-256
private key (what `npx web-push generate-vapid-keys` prints as its private key), base64url DER,
or PEM. `MXPUSH_VAPID_SUBJECT` is the contact push services see (`mailto:` or `https:`).

The JWT is signed here with `cryptography` (ES256), as py_vapid's `Vapid02` did: same token
layout, same header. cryptography is imported inside the functions: only Web Push pays for it.
Errors raised here never carry key material.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from mxpush.errors import ConfigError, NotFound, ServiceUnavailable

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

# RFC 8292 §2: `exp` MUST NOT be more than 24 hours after the request; stay well inside it.
TOKEN_LIFETIME_SECONDS = 12 * 3600
_SUBJECT = r"^(mailto:[^@\s]+@[^@\s]+|https://[^\s/?#]+[^\s]*)$"  # compiled on first use
# RFC 8292 §2 / RFC 7515: a JWS in compact form, signed with ES256.
_JWT_HEADER = b'{"typ":"JWT","alg":"ES256"}'


class WebPushUnavailable(NotFound):
    """No usable VAPID key or subject: this gateway cannot push to browsers."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"Web Push is not enabled on this gateway: {reason}")
        self.reason = reason


class WebPushKeyUnreadable(ServiceUnavailable):
    """The VAPID key is configured but could not be read just now (SSM throttled, timed out,
    denied): a 503 for API callers, a transient error for the sender, tried again shortly."""

    def __init__(self) -> None:
        super().__init__("Web Push is temporarily unavailable: its key cannot be read; retry later")


class VapidSigner:
    """Signs VAPID claims with the private key it holds (never shown by `repr`)."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey, public_key: str) -> None:
        self._private_key = private_key
        self.public_key = public_key

    def __repr__(self) -> str:
        return f"VapidSigner(public_key={self.public_key!r})"

    def sign(self, claims: Mapping[str, Any]) -> dict[str, str]:
        """`{"Authorization": "vapid t=<JWT>,k=<public key>"}` (RFC 8292 §3). The claims are
        compact JSON sorted by name, byte for byte as py_vapid wrote them (its authors found that
        Chrome's push service wants them sorted)."""
        from cryptography.hazmat.primitives import hashes  # noqa: PLC0415
        from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
        from cryptography.hazmat.primitives.asymmetric.utils import (  # noqa: PLC0415
            decode_dss_signature,
        )

        payload = json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()
        signed = f"{b64url_encode(_JWT_HEADER)}.{b64url_encode(payload)}"
        der = self._private_key.sign(signed.encode(), ec.ECDSA(hashes.SHA256()))
        # RFC 7518 §3.4: a JWS carries r and s as two 32-byte big-endian integers, not DER.
        r, s = decode_dss_signature(der)
        token = f"{signed}.{b64url_encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
        return {"Authorization": f"vapid t={token},k={self.public_key}"}


class VapidKey:
    """A loaded key pair. `public_key` is the base64url uncompressed point browsers subscribe
    with; the private key stays inside `signer` (a `VapidSigner`, or anything with its `sign`)
    and out of `repr`.
    (A plain class: a dataclass would cost the registration Lambda's cold start a millisecond.)"""

    __slots__ = ("public_key", "signer", "subject")

    def __init__(self, public_key: str, subject: str, signer: Any) -> None:
        self.public_key = public_key
        self.subject = subject
        self.signer = signer

    def __repr__(self) -> str:
        return f"VapidKey(public_key={self.public_key!r}, subject={self.subject!r})"

    def authorization(self, endpoint: str, *, now: float) -> str:
        """The `Authorization: vapid t=<JWT>,k=<public key>` value for a push to `endpoint`.
        Raises ValueError when the endpoint has no origin to sign for (a port out of range)."""
        claims = {
            "aud": audience(endpoint),
            "exp": int(now) + TOKEN_LIFETIME_SECONDS,
            "sub": self.subject,
        }
        header: str = self.signer.sign(claims)["Authorization"]
        return header


def audience(endpoint: str) -> str:
    """The JWT `aud` (RFC 8292 §2): the origin of the push resource, default port omitted."""
    parts = urlsplit(endpoint)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{host}" if port in (None, default) else f"{scheme}://{host}:{port}"


def check_subject(subject: str) -> str:
    """Raise `ConfigError` unless `subject` is a `mailto:` address or an `https:` URL."""
    value = subject.strip()
    if not re.match(_SUBJECT, value):
        raise ConfigError(
            "MXPUSH_VAPID_SUBJECT must be a contact for push services: a mailto: address "
            "(mailto:ops@example.org) or an https: URL"
        )
    return value


def load_vapid_key(private_key: str, subject: str) -> VapidKey:
    """Parse the configured private key; raise `ConfigError` (without the key) if unusable."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    checked_subject = check_subject(subject)
    value = private_key.strip()
    try:
        if value.startswith("-----BEGIN"):
            loaded = serialization.load_pem_private_key(value.encode(), password=None)
        else:
            raw = b64url_decode(value)
            if len(raw) == 32:
                loaded = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
            else:
                loaded = serialization.load_der_private_key(raw, password=None)
    except (ValueError, TypeError, binascii.Error, OverflowError):
        raise ConfigError(
            "the VAPID private key is not a P-256 key (base64url raw 32 bytes, DER, or PEM)"
        ) from None
    if not isinstance(loaded, ec.EllipticCurvePrivateKey) or loaded.curve.name != "secp256r1":
        raise ConfigError("the VAPID private key must be an EC key on P-256 (prime256v1)")
    point = loaded.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    public_key = b64url_encode(point)
    signer = VapidSigner(loaded, public_key)
    return VapidKey(public_key=public_key, subject=checked_subject, signer=signer)


def generate_private_key() -> str:
    """A fresh key, in the form `MXPUSH_VAPID_PRIVATE_KEY` takes (base64url raw 32 bytes)."""
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    secret = ec.generate_private_key(ec.SECP256R1()).private_numbers().private_value
    return b64url_encode(secret.to_bytes(32, "big"))


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(value: str) -> bytes:
    """Decode base64url (or standard base64), padded or not; raise ValueError if it is not."""
    text = value.strip()
    if not re.fullmatch(r"[A-Za-z0-9_\-+/]*={0,2}", text):
        raise ValueError("not base64url")
    text = text.rstrip("=").replace("+", "-").replace("/", "_")
    if len(text) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
