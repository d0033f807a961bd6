"""Shared fixtures: the local gateway (real handlers, real ASL under moto, real HTTP on
127.0.0.1), fake backends, and the captured Synapse notify bodies."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
import pytest
from botocore.client import BaseClient

from mxpush_local.gateway import LocalGateway, LocalSettings
from tests.fakes.gotify import FakeGotify
from tests.fakes.homeserver import FakeHomeserver
from tests.fakes.ntfy import FakeNtfy
from tests.fakes.smtp import FakeSmtp

FIXTURES = Path(__file__).parent / "fixtures" / "synapse-1.163.2"
ADMIN_TOKEN = "test-admin-token"
GOTIFY_TOKEN = "AppToken.Valid1"
# The fake ntfy server's access token, and the topic its user may publish to.
NTFY_TOKEN = "tk_AgQdq7mVBoFD37zQVN29RhuMzNIz2"
NTFY_TOPIC = "bob_phone_x7"
EMAIL_FROM = "mxpush <push@mxpush.example.org>"


def synapse_body(name: str, pushkey: str | None = None) -> dict[str, Any]:
    """A captured Synapse notify body, with its pushkey replaced by `pushkey`."""
    body: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    if pushkey is not None:
        for device in body["notification"]["devices"]:
            device["pushkey"] = pushkey
    return body


def with_event_id(body: dict[str, Any], event_id: str) -> dict[str, Any]:
    body = json.loads(json.dumps(body))
    body["notification"]["event_id"] = event_id
    body["notification"]["id"] = event_id
    return body


@dataclass
class HttpAnswer:
    status: int
    body: Any
    headers: dict[str, str]


class Api:
    """Real HTTP calls to the local gateway."""

    def __init__(self, gateway: LocalGateway) -> None:
        self.gateway = gateway
        self.base = gateway.url

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = ADMIN_TOKEN,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> HttpAnswer:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                payload = response.read()
                status = response.status
                answer_headers = dict(response.headers.items())
        except urllib.error.HTTPError as error:
            payload = error.read()
            status = error.code
            answer_headers = dict(error.headers.items())
        parsed = json.loads(payload) if payload else None
        return HttpAnswer(status, parsed, answer_headers)

    def notify(self, body: Any) -> HttpAnswer:
        return self.request("POST", "/_matrix/push/v1/notify", body, token=None)

    def register(
        self,
        gotify: FakeGotify,
        *,
        delay: int | None = 1,
        token: str = GOTIFY_TOKEN,
        options: dict[str, Any] | None = None,
        auth: str = ADMIN_TOKEN,
        **extra: Any,
    ) -> str:
        body: dict[str, Any] = {
            "backend": "gotify",
            "target": {"url": gotify.base_url, "token": token},
            **extra,
        }
        if delay is not None:
            body["delay_seconds"] = delay
        if options is not None:
            body["options"] = options
        answer = self.request("POST", "/api/v1/pushkeys", body, token=auth)
        assert answer.status == 201, answer.body
        return str(answer.body["pushkey"])

    def deliveries(self, pushkey: str, auth: str = ADMIN_TOKEN) -> list[dict[str, Any]]:
        answer = self.request(
            "GET", f"/api/v1/pushkeys/{quote(pushkey, safe='')}/deliveries", token=auth
        )
        assert answer.status == 200, answer.body
        return list(answer.body["deliveries"])


@pytest.fixture(scope="session")
def homeserver() -> Iterator[FakeHomeserver]:
    server = FakeHomeserver().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def smtp() -> Iterator[FakeSmtp]:
    """The session gateway's mail server (the email backend's SMTP transport)."""
    server = FakeSmtp().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gateway(homeserver: FakeHomeserver, smtp: FakeSmtp) -> Iterator[LocalGateway]:
    settings = LocalSettings(
        port=0,
        admin_token=ADMIN_TOKEN,
        delay_seconds=1,
        allowed_homeservers=homeserver.url,
        allow_private_targets=True,
        access_log=False,
        smtp_url=smtp.url(),
        email_from=EMAIL_FROM,
    )
    local = LocalGateway(settings)
    # No sweep on a timer: it would re-drive what earlier tests left (their executions are
    # stopped when they end) to fake servers long gone. Tests run the sweep themselves.
    local.aws.run_schedules = False
    local.start()
    yield local
    local.stop()


@pytest.fixture(autouse=True)
def _no_execution_outlives_its_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """The gateway lives for the whole session, a test's pushes need not: one a test left waiting
    (a 60 s delay) would later go to its fake server's port, which by then the OS may have given
    to another test's fake. Cancel them when the test ends."""
    yield
    if "gateway" in request.fixturenames:
        gateway: LocalGateway = request.getfixturevalue("gateway")
        gateway.aws.abandon_pending_deliveries()


@pytest.fixture
def api(gateway: LocalGateway) -> Api:
    return Api(gateway)


@pytest.fixture
def gotify() -> Iterator[FakeGotify]:
    server = FakeGotify(prefix="/gotify").start()
    yield server
    server.stop()


@pytest.fixture
def ntfy() -> Iterator[FakeNtfy]:
    server = FakeNtfy(
        prefix="/ntfy", tokens={NTFY_TOKEN: "bob"}, grants={"bob": {NTFY_TOPIC}}
    ).start()
    yield server
    server.stop()


@pytest.fixture
def sfn(gateway: LocalGateway) -> Any:
    return boto3.client("stepfunctions", region_name="us-east-1")


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


class AwsCallCounter:
    """Counts AWS API calls made by the current thread (not by the state machine's threads)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._thread = threading.get_ident()

    def record(self, operation: str) -> None:
        if threading.get_ident() == self._thread:
            self.calls.append(operation)


@contextmanager
def count_aws_calls() -> Iterator[AwsCallCounter]:
    counter = AwsCallCounter()
    original = BaseClient._make_api_call  # type: ignore[attr-defined]

    def counting(self: BaseClient, operation_name: str, api_params: Any) -> Any:
        counter.record(operation_name)
        return original(self, operation_name, api_params)

    BaseClient._make_api_call = counting  # type: ignore[attr-defined]
    try:
        yield counter
    finally:
        BaseClient._make_api_call = original  # type: ignore[attr-defined]
