"""The VAPID key: the forms it is accepted in, the subject, and where it comes from (the
environment in local mode, an SSM SecureString on AWS), and what happens without one."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator

import boto3
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from moto import mock_aws

from mxpush import wiring
from mxpush.errors import ConfigError
from mxpush.http_api import Request, error_response
from mxpush.vapid import (
    WebPushUnavailable,
    audience,
    b64url_decode,
    check_subject,
    generate_private_key,
    load_vapid_key,
)
from registration_handler import router
from tests.fakes.webpush import verify_jwt

SUBJECT = "mailto:ops@example.org"
PUBLIC_KEY_PATH = "/api/v1/webpush/vapid-public-key"


def raw_private(key: ec.EllipticCurvePrivateKey) -> str:
    value = key.private_numbers().private_value.to_bytes(32, "big")
    return base64.urlsafe_b64encode(value).decode().rstrip("=")


def public_point(key: ec.EllipticCurvePrivateKey) -> str:
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return base64.urlsafe_b64encode(point).decode().rstrip("=")


# --- the key and the subject --------------------------------------------------------------------


def test_generated_key_is_raw_base64url_and_loads() -> None:
    private = generate_private_key()

    assert len(b64url_decode(private)) == 32
    assert "=" not in private
    key = load_vapid_key(private, SUBJECT)
    assert len(b64url_decode(key.public_key)) == 65
    assert b64url_decode(key.public_key)[0] == 4
    assert generate_private_key() != private


@pytest.mark.parametrize("form", ["raw", "raw-padded", "der", "pem"])
def test_key_forms_give_the_same_public_key(form: str) -> None:
    secret = ec.generate_private_key(ec.SECP256R1())
    values = {
        "raw": raw_private(secret),
        "raw-padded": base64.urlsafe_b64encode(b64url_decode(raw_private(secret))).decode(),
        "der": base64.urlsafe_b64encode(
            secret.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        ).decode(),
        "pem": secret.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
    }

    key = load_vapid_key(values[form], SUBJECT)

    assert key.public_key == public_point(secret)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "not a key",
        base64.urlsafe_b64encode(b"\x00" * 32).decode(),  # zero is not a private key
        base64.urlsafe_b64encode(b"\x01" * 20).decode(),
        ec.generate_private_key(ec.SECP384R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode(),
    ],
    ids=["empty", "text", "zero", "short", "p384"],
)
def test_unusable_keys_are_refused_without_echoing_them(value: str) -> None:
    with pytest.raises(ConfigError, match="VAPID private key") as caught:
        load_vapid_key(value, SUBJECT)

    if len(value) > 8:
        assert value not in str(caught.value)


@pytest.mark.parametrize(
    "subject",
    [
        "mailto:ops@example.org",
        "https://example.org",
        "https://example.org/contact",
        " mailto:a@b ",
    ],
)
def test_contact_subjects_are_accepted(subject: str) -> None:
    assert check_subject(subject) == subject.strip()


@pytest.mark.parametrize(
    "subject", ["", "ops@example.org", "mailto:ops", "http://example.org", "https://", "tel:123"]
)
def test_other_subjects_are_refused(subject: str) -> None:
    with pytest.raises(ConfigError, match="MXPUSH_VAPID_SUBJECT"):
        check_subject(subject)


@pytest.mark.parametrize(
    ("endpoint", "aud"),
    [
        ("https://fcm.googleapis.com/fcm/send/abc", "https://fcm.googleapis.com"),
        ("https://Push.Example.org:443/x?y=1", "https://push.example.org"),
        ("https://push.example.org:8443/x", "https://push.example.org:8443"),
        ("http://127.0.0.1:8080/push/1", "http://127.0.0.1:8080"),
        ("http://127.0.0.1:80/push/1", "http://127.0.0.1"),
    ],
)
def test_audience_is_the_endpoint_origin(endpoint: str, aud: str) -> None:
    assert audience(endpoint) == aud


def test_authorization_is_an_rfc8292_vapid_header() -> None:
    secret = ec.generate_private_key(ec.SECP256R1())
    key = load_vapid_key(raw_private(secret), "https://example.org/contact")
    now = time.time()

    header = key.authorization("https://push.example.org/sub/1", now=now)

    scheme, _, params = header.partition(" ")
    assert scheme == "vapid"
    parts = dict(p.strip().split("=", 1) for p in params.split(","))
    assert parts["k"] == public_point(secret)
    claims = verify_jwt(parts["t"], parts["k"])
    assert claims == {
        "aud": "https://push.example.org",
        "exp": int(now) + 12 * 3600,
        "sub": "https://example.org/contact",
    }


def test_key_repr_never_shows_the_private_key() -> None:
    private = generate_private_key()
    key = load_vapid_key(private, SUBJECT)

    assert private not in repr(key)
    assert key.public_key in repr(key)


# --- where the key comes from ---------------------------------------------------------------------


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Deployed-mode settings of this test's own (moto's state and the environment are shared
    with the session's local gateway, which is restored afterwards)."""
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    for name in (
        "MXPUSH_VAPID_PRIVATE_KEY",
        "MXPUSH_VAPID_PRIVATE_KEY_PARAMETER",
        "MXPUSH_VAPID_SUBJECT",
    ):
        monkeypatch.delenv(name, raising=False)
    wiring.reset()
    with mock_aws():
        yield monkeypatch
    wiring.reset()


def public_key_answer() -> tuple[int, dict[str, str]]:
    request = Request("GET", PUBLIC_KEY_PATH, {}, {}, b"")
    try:
        response = router.dispatch(request)
    except WebPushUnavailable as exc:
        response = error_response(exc)
    body: dict[str, str] = json.loads(response["body"])
    return int(response["statusCode"]), body


def test_key_from_the_ssm_secure_string(environment: pytest.MonkeyPatch) -> None:
    name = f"/mxpush/test-vapid-{uuid.uuid4().hex}"
    private = generate_private_key()
    boto3.client("ssm", region_name="us-east-1").put_parameter(
        Name=name, Value=private, Type="SecureString"
    )
    environment.setenv("MXPUSH_VAPID_PRIVATE_KEY_PARAMETER", name)
    environment.setenv("MXPUSH_VAPID_SUBJECT", SUBJECT)

    key = wiring.vapid_key()

    assert key.public_key == load_vapid_key(private, SUBJECT).public_key
    assert key.subject == SUBJECT
    assert public_key_answer() == (200, {"public_key": key.public_key})


def test_missing_ssm_parameter_disables_web_push(
    environment: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"/mxpush/test-vapid-{uuid.uuid4().hex}"
    environment.setenv("MXPUSH_VAPID_PRIVATE_KEY_PARAMETER", name)
    environment.setenv("MXPUSH_VAPID_SUBJECT", SUBJECT)

    with pytest.raises(WebPushUnavailable, match="VAPID private key cannot be read"):
        wiring.vapid_key()

    assert f"cannot read SSM parameter {name} (ParameterNotFound)" in caplog.text
    status, body = public_key_answer()
    assert status == 404
    assert body == {
        "errcode": "M_NOT_FOUND",
        "error": "Web Push is not enabled on this gateway: its VAPID private key cannot be read",
    }
    assert name not in body["error"]  # the parameter's name is for the operator's log only


def test_environment_key_wins_over_the_parameter(environment: pytest.MonkeyPatch) -> None:
    private = generate_private_key()
    environment.setenv("MXPUSH_VAPID_PRIVATE_KEY", private)
    environment.setenv("MXPUSH_VAPID_PRIVATE_KEY_PARAMETER", "/mxpush/not-read")
    environment.setenv("MXPUSH_VAPID_SUBJECT", SUBJECT)

    assert wiring.vapid_key().public_key == load_vapid_key(private, SUBJECT).public_key


def test_no_key_configured(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("MXPUSH_VAPID_SUBJECT", SUBJECT)

    status, body = public_key_answer()

    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    assert body["error"] == (
        "Web Push is not enabled on this gateway: no VAPID private key is configured"
    )


def test_no_subject_configured(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("MXPUSH_VAPID_PRIVATE_KEY", generate_private_key())

    with pytest.raises(WebPushUnavailable, match="no VAPID subject"):
        wiring.vapid_key()


def test_bad_key_is_logged_and_answered_without_the_key(
    environment: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    bad = base64.urlsafe_b64encode(b"\x00" * 32).decode()
    environment.setenv("MXPUSH_VAPID_PRIVATE_KEY", bad)
    environment.setenv("MXPUSH_VAPID_SUBJECT", SUBJECT)

    status, body = public_key_answer()

    assert status == 404
    assert "not a P-256 key" in body["error"]
    assert "Web Push unavailable: the VAPID private key is not a P-256 key" in caplog.text
    assert bad not in caplog.text
    assert bad not in body["error"]


def test_the_public_key_route_needs_no_authentication(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("MXPUSH_VAPID_PRIVATE_KEY", generate_private_key())
    environment.setenv("MXPUSH_VAPID_SUBJECT", SUBJECT)

    status, body = public_key_answer()  # no Authorization header at all

    assert status == 200
    assert set(body) == {"public_key"}
