"""A fake Web Push service (the server behind a browser's `PushSubscription.endpoint`), and the
browser side of a subscription.

The check is independent of what mxpush uses to build the request (pywebpush, py_vapid,
http_ece): the JWT is verified and the body decrypted here with `cryptography`'s primitives,
step by step as the RFCs describe.

What it enforces, as push services do:
- RFC 8030 §5: `POST` to a subscription's push resource; unknown resource -> 404, an expired
  or unsubscribed one -> 410 (autopush, FCM); accepted -> 201 with a `Location`.
- RFC 8030 §5.2: `TTL` is required (400 without it), a non-negative integer.
- RFC 8030 §5.3: `Urgency`, if present, is one of very-low, low, normal, high.
- RFC 8030 §5.4: `Topic`, if present, is at most 32 characters of the base64url alphabet.
- RFC 8030 §7.2: a body over 4096 bytes -> 413.
- RFC 8292 §3: `Authorization: vapid t=<JWT>, k=<public key>`; no or malformed authentication
  -> 401, invalid authentication -> 403 (§4.2), also when `k` is not the key the browser
  subscribed with. §2: the JWT is ES256 over `{"typ":"JWT","alg":"ES256"}`, `aud` is the
  origin of the push resource, `exp` is in the future and at most 24 h away, `sub` is a
  `mailto:` or `https:` contact.
- RFC 8291 / RFC 8188: `Content-Encoding: aes128gcm`, one record that decrypts with the
  subscription's private key and auth secret, padding delimiter 0x02.

mxpush promises more than push services check, and the fake holds it to it: the body is JSON,
and `Content-Type: application/octet-stream`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.fakes.server import Received, RecordingServer, Reply

URGENCIES = ("very-low", "low", "normal", "high")
MAX_BODY = 4096
_BASE64URL = re.compile(r"^[A-Za-z0-9_-]+$")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    if not _BASE64URL.match(text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


@dataclass
class Browser:
    """One subscription as the browser holds it: its ECDH key pair and auth secret (RFC 8291 §2)."""

    subscription_id: str
    endpoint: str
    application_server_key: str  # the VAPID public key it subscribed with
    private_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1()), repr=False
    )
    auth_secret: bytes = field(default_factory=lambda: os.urandom(16), repr=False)
    # What the README's example service worker leaves on screen: tag -> the push shown.
    shown: dict[str, dict[str, Any]] = field(default_factory=dict)

    def service_worker(self, push: dict[str, Any]) -> None:
        """The README's minimal service worker: show a push under its tag (replacing one with
        the same tag); a `retract` push closes the notifications with its tags."""
        if push.get("kind") == "retract":
            for tag in push.get("tags") or push.get("room_ids") or []:
                self.shown.pop(tag, None)
            return
        tag = push.get("tag") or push.get("room_id") or f"untagged-{len(self.shown)}"
        self.shown[tag] = push

    @property
    def p256dh(self) -> str:
        return b64url(point(self.private_key.public_key()))

    @property
    def auth(self) -> str:
        return b64url(self.auth_secret)

    def subscription(self) -> dict[str, Any]:
        """What `PushSubscription.toJSON()` gives a web app."""
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": self.p256dh, "auth": self.auth},
        }

    def decrypt(self, body: bytes) -> bytes:
        """RFC 8291 §3.4 and RFC 8188 §2, by hand. Raises ValueError if anything is off."""
        if len(body) < 21:
            raise ValueError("shorter than the aes128gcm header")
        salt, record_size, id_length = body[:16], int.from_bytes(body[16:20], "big"), body[20]
        if id_length != 65:
            raise ValueError("keyid must be the sender's 65-byte public key (RFC 8291 §4)")
        sender_point = body[21:86]
        ciphertext = body[86:]
        if record_size < 18:
            raise ValueError("record size below 18")
        if len(ciphertext) > record_size or len(ciphertext) < 17:
            raise ValueError("a push message is exactly one record (RFC 8291 §4)")
        sender = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), sender_point)
        ecdh_secret = self.private_key.exchange(ec.ECDH(), sender)
        ua_point = point(self.private_key.public_key())
        prk_key = _hmac(self.auth_secret, ecdh_secret)
        ikm = _hmac(prk_key, b"WebPush: info\x00" + ua_point + sender_point + b"\x01")
        prk = _hmac(salt, ikm)
        cek = _hmac(prk, b"Content-Encoding: aes128gcm\x00\x01")[:16]
        nonce = _hmac(prk, b"Content-Encoding: nonce\x00\x01")[:12]
        try:
            padded = AESGCM(cek).decrypt(nonce, ciphertext, None)
        except InvalidTag:
            raise ValueError("does not decrypt with this subscription's keys") from None
        stripped = padded.rstrip(b"\x00")
        if not stripped.endswith(b"\x02"):
            raise ValueError("the last record's padding delimiter must be 0x02")
        return stripped[:-1]


@dataclass(frozen=True)
class PushedMessage:
    """A push the service accepted, decrypted as the browser's service worker would see it."""

    subscription_id: str
    ttl: int
    urgency: str | None
    topic: str | None
    claims: dict[str, Any]
    plaintext: bytes

    def json(self) -> Any:
        return json.loads(self.plaintext)


def push_error(status: int, reason: str) -> Reply:
    """Autopush-style error body."""
    return Reply(status, {"code": status, "errno": 0, "error": reason, "message": reason})


class FakePushService(RecordingServer):
    def __init__(self) -> None:
        super().__init__()
        self.browsers: dict[str, Browser] = {}
        self.gone: set[str] = set()
        self.messages: list[PushedMessage] = []
        self._ids = itertools.count(1)

    def reset(self) -> None:
        super().reset()
        self.messages.clear()
        self.gone.clear()

    def subscribe(self, application_server_key: str) -> Browser:
        """A browser subscribing with `PushManager.subscribe({applicationServerKey})`."""
        subscription_id = f"sub{next(self._ids)}-{b64url(os.urandom(12))}"
        browser = Browser(
            subscription_id,
            f"{self.url}/push/{subscription_id}",
            application_server_key,
        )
        self.browsers[subscription_id] = browser
        return browser

    def unsubscribe(self, browser: Browser) -> None:
        """The user revoked the permission or the subscription expired: 410 from now on."""
        self.gone.add(browser.subscription_id)

    def wait_for_pushes(self, count: int, timeout: float = 10.0) -> list[PushedMessage]:
        """Wait until `count` pushes were accepted (and decrypted); return them."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"expected {count} pushes within {timeout}s, got {len(self.messages)}"
                    )
                self._lock.wait(remaining)
            return list(self.messages)

    def respond(self, request: Received) -> Reply:
        match = re.fullmatch(r"/push/([\w-]+)", request.path)
        if request.method != "POST" or match is None:
            return push_error(404, "Not Found")
        subscription_id = match.group(1)
        if subscription_id in self.gone:
            return push_error(410, "Subscription expired or unsubscribed")
        browser = self.browsers.get(subscription_id)
        if browser is None:
            return push_error(404, "Unknown subscription")
        headers = request.headers
        auth = check_vapid(headers.get("authorization"), browser, self.url)
        if isinstance(auth, Reply):
            return auth
        problem = check_headers(headers, request.body)
        if problem:
            return problem
        try:
            plaintext = browser.decrypt(request.body)
            push = json.loads(plaintext)
        except ValueError as exc:
            return push_error(400, f"Bad payload: {exc}")
        if not isinstance(push, dict):
            return push_error(400, "Bad payload: not a JSON object")
        browser.service_worker(push)
        message_id = f"m{next(self._ids)}"
        with self._lock:
            self.messages.append(
                PushedMessage(
                    subscription_id=subscription_id,
                    ttl=int(headers["ttl"]),
                    urgency=headers.get("urgency"),
                    topic=headers.get("topic"),
                    claims=auth,
                    plaintext=plaintext,
                )
            )
            self._lock.notify_all()
        return Reply(201, b"", {"Location": f"{self.url}/message/{message_id}"})


def check_headers(headers: dict[str, str] | Any, body: bytes) -> Reply | None:
    ttl = headers.get("ttl")
    if ttl is None:
        return push_error(400, "Missing TTL header")
    if not ttl.isdigit():
        return push_error(400, "Invalid TTL header")
    urgency = headers.get("urgency")
    if urgency is not None and urgency not in URGENCIES:
        return push_error(400, "Invalid Urgency header")
    topic = headers.get("topic")
    if topic is not None and (len(topic) > 32 or not _BASE64URL.match(topic)):
        return push_error(400, "Invalid Topic header")
    if len(body) > MAX_BODY:
        return push_error(413, "Payload Too Large")
    if headers.get("content-encoding") != "aes128gcm":
        return push_error(400, "Content-Encoding must be aes128gcm")
    if headers.get("content-type") != "application/octet-stream":
        return push_error(400, "mxpush promises Content-Type: application/octet-stream")
    return None


def check_vapid(header: str | None, browser: Browser, origin: str) -> dict[str, Any] | Reply:
    """The JWT's claims, or the answer for missing (401) or invalid (403) authentication."""
    if not header:
        return push_error(401, "Missing Authorization header")
    scheme, _, params = header.partition(" ")
    if scheme.lower() != "vapid":
        return push_error(401, "Authorization scheme must be vapid")
    parts: dict[str, str] = {}
    for item in params.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep:
            return push_error(401, "Malformed vapid parameters")
        parts[name.strip()] = value.strip()
    if set(parts) != {"t", "k"}:
        return push_error(401, "vapid needs exactly t= and k=")
    if parts["k"] != browser.application_server_key:
        return push_error(403, "k is not the key this subscription was made with")
    try:
        claims = verify_jwt(parts["t"], parts["k"])
    except ValueError as exc:
        return push_error(403, f"Invalid VAPID token: {exc}")
    now = time.time()
    if claims.get("aud") != origin:
        return push_error(403, "aud is not the push resource's origin")
    exp = claims.get("exp")
    if not isinstance(exp, int) or not now < exp <= now + 24 * 3600:
        return push_error(403, "exp must be in the future and within 24 hours")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not re.match(r"^(mailto:[^@\s]+@\S+|https://\S+)$", sub):
        return push_error(403, "sub must be a mailto: or https: contact")
    return claims


def verify_jwt(token: str, public_key: str) -> dict[str, Any]:
    """ES256 (RFC 7515, RFC 7518 §3.4: the signature is r || s, 32 bytes each)."""
    pieces = token.split(".")
    if len(pieces) != 3:
        raise ValueError("not a JWS compact serialization")
    header = json.loads(unb64url(pieces[0]))
    if header.get("alg") != "ES256" or header.get("typ", "JWT") != "JWT":
        raise ValueError("alg must be ES256")
    signature = unb64url(pieces[2])
    if len(signature) != 64:
        raise ValueError("an ES256 signature is 64 bytes")
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(public_key))
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    try:
        key.verify(der, f"{pieces[0]}.{pieces[1]}".encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise ValueError("bad signature") from None
    claims: dict[str, Any] = json.loads(unb64url(pieces[1]))
    return claims


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()
