"""Web Push on the wire, below what the fake push service checks: the exact VAPID header and JWT
bytes mxpush signs itself, a fresh key and salt per push, and a crypto stack that works with
nothing but the crypto layer's packages (no pywebpush, py_vapid, requests or aiohttp)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mxpush.backends.webpush import MAX_BODY_BYTES, MAX_PLAINTEXT_BYTES, encrypt
from mxpush.vapid import generate_private_key, load_vapid_key
from tests.fakes.webpush import Browser, b64url, unb64url, verify_jwt

ROOT = Path(__file__).resolve().parents[2]
SUBJECT = "mailto:ops@example.org"
KEY = load_vapid_key(generate_private_key(), SUBJECT)


def browser() -> Browser:
    return Browser("sub1", "https://push.example.org/sub1", KEY.public_key)


def keys_of(subscriber: Browser) -> dict[str, str]:
    return {"p256dh": subscriber.p256dh, "auth": subscriber.auth}


def test_vapid_header_and_jwt_are_byte_for_byte_what_py_vapid_sent() -> None:
    now = 1_700_000_000.5

    header = KEY.authorization("https://push.example.org/sub/1", now=now)

    assert header.startswith("vapid t=")
    token, _, public_key = header.removeprefix("vapid t=").partition(",k=")
    assert public_key == KEY.public_key
    first, second, signature = token.split(".")
    assert unb64url(first) == b'{"typ":"JWT","alg":"ES256"}'
    # Compact, sorted by name, exp an integer.
    assert unb64url(second) == (
        b'{"aud":"https://push.example.org","exp":1700043200,"sub":"mailto:ops@example.org"}'
    )
    assert len(unb64url(signature)) == 64
    assert "=" not in token
    assert verify_jwt(token, public_key)["exp"] == int(now) + 12 * 3600


def test_each_signature_is_fresh_and_verifies() -> None:
    now = time.time()

    first = KEY.authorization("https://push.example.org/a", now=now)
    second = KEY.authorization("https://push.example.org/a", now=now)

    assert first != second  # ECDSA draws a new nonce for every signature
    for header in (first, second):
        token = header.removeprefix("vapid t=").partition(",k=")[0]
        assert verify_jwt(token, KEY.public_key)["aud"] == "https://push.example.org"


def test_an_ipv6_literal_endpoint_is_signed_for_its_origin() -> None:
    """py_vapid refused such an audience; RFC 8292 only asks for the origin."""
    header = KEY.authorization("https://[2001:DB8::1]:8443/push/1", now=time.time())

    token = header.removeprefix("vapid t=").partition(",k=")[0]
    assert verify_jwt(token, KEY.public_key)["aud"] == "https://[2001:db8::1]:8443"


def test_the_signer_keeps_the_private_key_out_of_repr() -> None:
    secret = ec.generate_private_key(ec.SECP256R1())
    raw = b64url(secret.private_numbers().private_value.to_bytes(32, "big"))
    pem = secret.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()

    key = load_vapid_key(raw, SUBJECT)

    for text in (repr(key), repr(key.signer)):
        assert raw not in text
        assert pem.splitlines()[1] not in text
    assert key.public_key in repr(key.signer)


def test_every_push_has_its_own_salt_and_ephemeral_key() -> None:
    subscriber = browser()
    plaintext = b'{"kind":"message"}'

    first = encrypt(plaintext, keys_of(subscriber))
    second = encrypt(plaintext, keys_of(subscriber))

    assert first[:16] != second[:16]  # salt
    assert first[21:86] != second[21:86]  # the sender's public key (keyid)
    assert subscriber.decrypt(first) == subscriber.decrypt(second) == plaintext


def test_the_largest_payload_is_one_record_within_4096_bytes() -> None:
    subscriber = browser()
    plaintext = b"x" * MAX_PLAINTEXT_BYTES

    body = encrypt(plaintext, keys_of(subscriber))

    assert len(body) == MAX_BODY_BYTES
    assert int.from_bytes(body[16:20], "big") == 4096  # record size
    assert body[20] == 65  # keyid length: the uncompressed P-256 point
    assert subscriber.decrypt(body) == plaintext


def test_padded_standard_base64_keys_encrypt_too() -> None:
    subscriber = browser()
    padded = {
        "p256dh": base64.b64encode(unb64url(subscriber.p256dh)).decode(),
        "auth": base64.b64encode(subscriber.auth_secret).decode(),
    }

    assert subscriber.decrypt(encrypt(b"{}", padded)) == b"{}"


def test_the_crypto_layer_needs_no_http_client_and_no_pywebpush() -> None:
    """Sign and encrypt in a fresh interpreter where importing any of pywebpush's stack fails:
    the crypto layer ships cryptography and http_ece only."""
    blocked = ["pywebpush", "py_vapid", "requests", "aiohttp"]
    code = f"""
import importlib.abc, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError("not in the crypto layer: " + name)
sys.meta_path.insert(0, Refuse())
sys.path[:0] = [{str(ROOT / "layers" / "mxpush")!r}, {str(ROOT)!r}]
from mxpush.backends.webpush import encrypt
from mxpush.vapid import generate_private_key, load_vapid_key
from tests.fakes.webpush import Browser
key = load_vapid_key(generate_private_key(), "mailto:ops@example.org")
subscriber = Browser("s", "https://push.example.org/s", key.public_key)
body = encrypt(b"{{}}", {{"p256dh": subscriber.p256dh, "auth": subscriber.auth}})
assert subscriber.decrypt(body) == b"{{}}"
print(key.authorization("https://push.example.org/s", now=0.0).split(",k=")[0][:8])
"""
    env = {**os.environ, "AWS_REGION": "us-east-1"}

    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "vapid t="


@pytest.mark.parametrize("name", ["requirements.txt", "requirements-pure.txt"])
def test_the_crypto_layer_pins_no_http_client(name: str) -> None:
    lines = (ROOT / "layers" / "crypto" / name).read_text().lower().splitlines()
    packages = {line.split("==")[0].strip() for line in lines if "==" in line}

    assert packages
    # urllib3 comes with the Lambda runtime; a copy in a layer would shadow it.
    assert not packages & {"pywebpush", "py-vapid", "requests", "aiohttp", "urllib3"}
