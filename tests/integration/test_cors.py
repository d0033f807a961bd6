"""CORS over real HTTP: local mode answers as API Gateway does with the template's
CorsConfiguration (`CorsAllowedOrigins` / `MXPUSH_CORS_ORIGINS`): preflights answered before any
function, `Access-Control-Allow-Origin` on every answer to an allowed origin, nothing for
others, and nothing at all when no origin is configured (the default)."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

import pytest

from mxpush_local.cors import CorsPolicy
from mxpush_local.gateway import LocalGateway, LocalSettings
from tests.conftest import ADMIN_TOKEN
from tests.integration.test_local_mode import ROOT, free_port, running

APP = "https://app.example.org"
OTHER = "https://evil.example.net"
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization,content-type",
}


def send(
    base: str, method: str, path: str, headers: dict[str, str], body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(base + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return (
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                response.read(),
            )
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def cors_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.startswith("access-control-")}


@pytest.fixture
def with_origins(gateway: LocalGateway, monkeypatch: pytest.MonkeyPatch) -> str:
    """The session gateway with CORS for `APP` for this test only."""
    monkeypatch.setattr(gateway, "cors", CorsPolicy.from_setting(f"{APP}, http://localhost:8080/"))
    return gateway.url


def test_a_preflight_from_an_allowed_origin_is_answered_before_any_function(
    with_origins: str,
) -> None:
    status, headers, body = send(
        with_origins, "OPTIONS", "/api/v1/pushkeys", {"Origin": APP, **PREFLIGHT}
    )
    # The gateway's answer: the function would give no CORS headers (see below).
    assert (status, body) == (204, b"")
    assert cors_headers(headers) == {
        "access-control-allow-origin": APP,
        "access-control-allow-methods": "GET,POST,DELETE,OPTIONS",
        "access-control-allow-headers": "authorization,content-type",
        "access-control-max-age": "600",
    }
    assert headers["vary"] == "Origin"
    # The configured origin was written with a trailing slash: browsers send none.
    status, headers, _ = send(
        with_origins,
        "OPTIONS",
        "/api/v1/pushkeys/mxp_x/deliveries",
        {"Origin": "http://localhost:8080", **PREFLIGHT},
    )
    assert status == 204
    assert headers["access-control-allow-origin"] == "http://localhost:8080"


def test_a_preflight_from_another_origin_gets_no_cors_headers(with_origins: str) -> None:
    status, headers, _ = send(
        with_origins, "OPTIONS", "/api/v1/pushkeys", {"Origin": OTHER, **PREFLIGHT}
    )
    assert status == 204
    assert cors_headers(headers) == {}


def test_answers_to_an_allowed_origin_carry_allow_origin_errors_too(with_origins: str) -> None:
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    status, headers, _ = send(with_origins, "GET", "/api/v1/pushkeys", {"Origin": APP, **auth})
    assert status == 200
    assert headers["access-control-allow-origin"] == APP
    # A web app must be able to read why it was refused.
    status, headers, _ = send(with_origins, "GET", "/api/v1/pushkeys", {"Origin": APP})
    assert status == 401
    assert headers["access-control-allow-origin"] == APP
    status, headers, _ = send(
        with_origins, "GET", "/api/v1/webpush/vapid-public-key", {"Origin": APP}
    )
    assert status == 200
    assert headers["access-control-allow-origin"] == APP
    # API Gateway's CORS covers the whole API, the notify endpoint too.
    status, headers, _ = send(with_origins, "GET", "/_matrix/push/v1/notify", {"Origin": APP})
    assert status == 200
    assert headers["access-control-allow-origin"] == APP


def test_answers_to_other_origins_or_without_origin_carry_none(with_origins: str) -> None:
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for headers_sent in ({"Origin": OTHER, **auth}, auth):
        status, headers, _ = send(with_origins, "GET", "/api/v1/pushkeys", headers_sent)
        assert status == 200
        assert cors_headers(headers) == {}


def test_any_origin(gateway: LocalGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway, "cors", CorsPolicy.from_setting("*"))
    status, headers, _ = send(
        gateway.url, "GET", "/api/v1/webpush/vapid-public-key", {"Origin": OTHER}
    )
    assert status == 200
    assert headers["access-control-allow-origin"] == "*"


def test_without_configured_origins_there_is_no_cors(gateway: LocalGateway) -> None:
    assert gateway.cors is None  # the default
    # The preflight reaches the function, which answers it 204 (see http_api.Router), without
    # CORS headers: the browser refuses.
    status, headers, _ = send(
        gateway.url, "OPTIONS", "/api/v1/pushkeys", {"Origin": APP, **PREFLIGHT}
    )
    assert status == 204
    assert cors_headers(headers) == {}
    status, headers, _ = send(
        gateway.url, "GET", "/api/v1/webpush/vapid-public-key", {"Origin": APP}
    )
    assert status == 200
    assert cors_headers(headers) == {}


def test_the_setting_reaches_local_mode() -> None:
    assert LocalSettings.from_env({"MXPUSH_CORS_ORIGINS": APP}).cors_origins == APP
    port = free_port()
    env = {
        "PYTHONPATH": f"{ROOT / 'layers' / 'mxpush'}:{ROOT / 'local'}",
        "PORT": str(port),
        # Not the in-process test gateway's values, which are in os.environ.
        "MXPUSH_PUBLIC_URL": "",
        "MXPUSH_ADMIN_TOKEN": "",
        "MXPUSH_CORS_ORIGINS": f"{APP},http://localhost:8080",
    }
    with running([sys.executable, "-m", "mxpush_local"], env) as process:
        process.wait_for_line(rf"listening on http://127\.0\.0\.1:{port}")
        base = f"http://127.0.0.1:{port}"
        status, headers, _ = send(
            base, "OPTIONS", "/api/v1/webpush/vapid-public-key", {"Origin": APP, **PREFLIGHT}
        )
        assert status == 204
        assert headers["access-control-allow-origin"] == APP
