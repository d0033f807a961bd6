"""The fuzz battery: generated hostile requests on every route and method. Whatever comes in,
the answer is below 500, every error is a Matrix JSON error, nothing is logged as an error, and
the gateway still accepts a valid notify afterwards.

Most requests go through `LocalGateway.handle` (the template's routes and the real handlers, in
process, no socket); `test_over_http` sends its share over real HTTP. `make test` runs a fixed,
derandomized set (>= 2,000 requests); `make fuzz` sets MXPUSH_FUZZ_SCALE=10 and explores at
random (>= 20,000), keeping failures in `.hypothesis/` (not in git) to replay them.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mxpush import urlsafety
from mxpush.errors import TargetUnreachable
from mxpush_local.gateway import LocalGateway
from tests.conftest import ADMIN_TOKEN, GOTIFY_TOKEN, synapse_body
from tests.fakes.gotify import FakeGotify
from tests.fuzz import strategies as fz

SCALE = int(os.environ.get("MXPUSH_FUZZ_SCALE", "1"))
EXPLORE = SCALE > 1
NOTIFY = "/_matrix/push/v1/notify"
# Requests each test sends at least (times MXPUSH_FUZZ_SCALE): 2,250 in all.
REQUESTS = {
    "test_notify_mutated_synapse_bodies": 600,
    "test_notify_hostile_json_text": 2 * 200,
    "test_registration_bodies": 400,
    "test_push_token_reports": 250,
    "test_any_route_any_method": 300,
    "test_over_http": 300,
}
# A registered pushkey takes this many events before the next is used: one pending batch must
# not grow past what one DynamoDB item holds (the store's business, not this battery's).
EVENTS_PER_PUSHKEY = 100


def fuzz_settings(examples: int) -> settings:
    chosen = settings(
        max_examples=examples * SCALE,
        deadline=None,
        derandomize=not EXPLORE,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
        print_blob=EXPLORE,
    )
    # Reproducible runs need no example database; exploring ones keep failures to replay.
    return chosen if EXPLORE else settings(chosen, database=None)


@dataclass
class Battery:
    gateway: LocalGateway
    gotify: FakeGotify
    errors: list[logging.LogRecord]
    sent: int = 0
    registered: list[str] = field(default_factory=list)
    uses: int = 0
    created: int = 0

    def pushkeys(self) -> list[str]:
        """Registered pushkeys for the notify bodies, a fresh one every `EVENTS_PER_PUSHKEY`."""
        if not self.registered or self.uses >= EVENTS_PER_PUSHKEY:
            body = {
                "backend": "gotify",
                "target": {"url": self.gotify.base_url, "token": GOTIFY_TOKEN},
                "delay_seconds": 3600,
            }
            status, _, payload = self.gateway.handle(
                "POST", "/api/v1/pushkeys", self.headers(), json.dumps(body).encode()
            )
            assert status == 201, payload
            self.registered = [json.loads(payload)["pushkey"]]
            self.uses = 0
        self.uses += 1
        return self.registered

    def headers(self, authorization: str | None = f"Bearer {ADMIN_TOKEN}") -> dict[str, str]:
        headers = {"Host": "127.0.0.1", "Content-Type": "application/json"}
        if authorization is not None:
            headers["Authorization"] = authorization
        return headers

    def send(
        self, method: str, path: str, body: bytes, authorization: str | None = None
    ) -> tuple[int, bytes]:
        auth = f"Bearer {ADMIN_TOKEN}" if authorization == "admin" else authorization
        status, headers, payload = self.gateway.handle(method, path, self.headers(auth), body)
        self.sent += 1
        check(method, status, headers, payload, self.errors)
        return status, payload


def check(
    method: str,
    status: int,
    headers: dict[str, str],
    payload: bytes,
    errors: list[logging.LogRecord],
) -> None:
    logged = [(r.getMessage(), r.__dict__.get("traceback")) for r in errors]
    errors.clear()  # each example on its own, or shrinking would blame the next one
    assert status < 500, (status, payload[:300])
    assert not logged, logged
    if status >= 400 and method != "HEAD":
        answer = json.loads(payload)
        assert isinstance(answer, dict), payload[:300]
        assert isinstance(answer.get("errcode"), str), payload[:300]
        assert isinstance(answer.get("error"), str), payload[:300]
    elif payload:
        json.loads(payload)
    if payload:
        assert headers.get("Content-Type") == "application/json", headers


def no_dns(host: str, port: int) -> list[str]:
    """Registration resolves target hosts: here only `localhost` resolves, nothing leaves the
    machine; a name the system resolver could not even encode fails as it would there."""
    try:
        host.encode("idna")
    except UnicodeError:
        raise TargetUnreachable(f"{host}: cannot resolve") from None
    if host.lower() == "localhost":
        return ["127.0.0.1"]
    raise TargetUnreachable(f"{host}: cannot resolve (no DNS in the fuzz battery)")


@pytest.fixture
def battery(
    gateway: LocalGateway, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[Battery]:
    monkeypatch.setattr(urlsafety, "system_resolver", no_dns)
    errors: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR or record.exc_info or "traceback" in record.__dict__:
                errors.append(record)

    # Both API functions answer once first: Powertools takes the first handler of the "mxpush"
    # logger for its own when a function's module creates its Logger.
    gateway.handle("GET", NOTIFY, {}, b"")
    gateway.handle("GET", "/api/v1/webpush/vapid-public-key", {}, b"")
    handler = Collect(level=logging.DEBUG)
    loggers = [logging.getLogger(name) for name in ("mxpush", "mxpush_local")]
    for logger in loggers:
        logger.addHandler(handler)
    gotify = FakeGotify(prefix="/gotify").start()
    battery = Battery(gateway, gotify, errors)
    try:
        yield battery
        # Hypothesis runs fewer examples than asked only when it runs out of new ones.
        assert battery.sent >= REQUESTS[request.node.originalname] * SCALE
        # Still serving: a valid notify is accepted, for a registered pushkey too.
        body = synapse_body("message_dm_2_members.1.full", battery.pushkeys()[0])
        status, payload = battery.send("POST", NOTIFY, json.dumps(body).encode())
        assert status == 200, payload
        assert json.loads(payload) == {"rejected": []}
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        gotify.stop()


# --- In process ---------------------------------------------------------------------------------


@fuzz_settings(examples=600)
@given(data=st.data())
def test_notify_mutated_synapse_bodies(battery: Battery, data: st.DataObject) -> None:
    raw = data.draw(fz.mutated_fixtures(battery.pushkeys()))
    battery.send("POST", NOTIFY, raw)


@fuzz_settings(examples=200)
@given(
    body=st.one_of(fz.hostile_values, fz.deep_nesting), junk=fz.invalid_utf8, where=st.integers()
)
def test_notify_hostile_json_text(battery: Battery, body: str, junk: bytes, where: int) -> None:
    raw = body.encode("utf-8")
    battery.send("POST", NOTIFY, raw)
    battery.send("POST", NOTIFY, fz.corrupt(raw, where, junk))


@fuzz_settings(examples=400)
@given(data=st.data(), auth=st.sampled_from(["admin", "admin", "Bearer bob-token"]))
def test_registration_bodies(battery: Battery, data: st.DataObject, auth: str) -> None:
    raw = data.draw(fz.registration_bodies(battery.gotify.port))
    status, payload = battery.send("POST", "/api/v1/pushkeys", raw, auth)
    if status == 201:
        battery.created += 1
        pushkey = json.loads(payload)["pushkey"]
        battery.send("DELETE", f"/api/v1/pushkeys/{pushkey}", b"", "admin")


@fuzz_settings(examples=250)
@given(data=st.data(), auth=st.sampled_from(["admin", "Bearer bob-token", "Bearer eve-token"]))
def test_push_token_reports(battery: Battery, data: st.DataObject, auth: str) -> None:
    raw = data.draw(fz.push_token_reports(battery.gotify.port))
    battery.send("POST", "/api/client/push_token_report", raw, auth)


@fuzz_settings(examples=300)
@given(
    data=st.data(),
    method=st.sampled_from(fz.METHODS),
    path=fz.paths_and_queries(),
    authorization=fz.authorizations,
)
def test_any_route_any_method(
    battery: Battery, data: st.DataObject, method: str, path: str, authorization: str | None
) -> None:
    body = data.draw(fz.any_bodies(battery.gotify.port))
    battery.send(method, path, body, authorization)


# --- Over real HTTP -----------------------------------------------------------------------------


@fuzz_settings(examples=300)
@given(
    data=st.data(),
    method=st.sampled_from(["GET", "POST", "DELETE", "PUT"]),
    path=fz.paths_and_queries(),
)
def test_over_http(battery: Battery, data: st.DataObject, method: str, path: str) -> None:
    body = data.draw(fz.any_bodies(battery.gotify.port))
    request = urllib.request.Request(battery.gateway.url + path, data=body, method=method)
    request.add_header("Authorization", f"Bearer {ADMIN_TOKEN}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, headers, payload = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        status, headers, payload = error.code, dict(error.headers), error.read()
    battery.sent += 1
    check(method, status, headers, payload, battery.errors)


def test_battery_size() -> None:
    assert sum(REQUESTS.values()) >= 2_000
