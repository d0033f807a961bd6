"""Deployed-mode wiring: secrets from SSM (moto), and what happens when they cannot be read."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from mxpush import wiring
from mxpush.vapid import WebPushKeyUnreadable, generate_private_key, load_vapid_key


@pytest.fixture
def parameter(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A parameter name of this test's own: moto's state is shared with other tests when the
    local gateway's mock is active in the same process."""
    name = f"/mxpush/test-{uuid.uuid4().hex}"
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.delenv("MXPUSH_ADMIN_TOKEN", raising=False)
    monkeypatch.setenv("MXPUSH_ADMIN_TOKEN_PARAMETER", name)
    wiring.reset()
    with mock_aws():
        yield name
    wiring.reset()


def test_operator_token_comes_from_the_ssm_secure_string(parameter: str) -> None:
    boto3.client("ssm", region_name="us-east-1").put_parameter(
        Name=parameter, Value="from-ssm-secret", Type="SecureString"
    )
    assert wiring.admin_token() == "from-ssm-secret"


def test_missing_ssm_parameter_disables_the_operator_token_without_failing(
    parameter: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert wiring.admin_token() is None
    assert f"cannot read SSM parameter {parameter} (ParameterNotFound)" in caplog.text


def test_local_mode_token_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MXPUSH_ADMIN_TOKEN", "local-token")
    wiring.reset()
    try:
        assert wiring.admin_token() == "local-token"
    finally:
        wiring.reset()


class FlakySsm:
    """moto's SSM behind a switch: while `failing`, GetParameter answers ThrottlingException
    (what a burst of cold starts can get from SSM). Counts the calls that reach it."""

    def __init__(self) -> None:
        self.real = boto3.client("ssm", region_name="us-east-1")
        self.failing = False
        self.calls = 0

    def get_parameter(self, **kwargs: Any) -> Any:
        self.calls += 1
        if self.failing:
            error = {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}
            raise ClientError(error, "GetParameter")  # type: ignore[arg-type]
        return self.real.get_parameter(**kwargs)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ssm(parameter: str, monkeypatch: pytest.MonkeyPatch) -> FlakySsm:
    flaky = FlakySsm()
    monkeypatch.setattr(wiring, "_ssm_client", lambda: flaky)
    return flaky


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(wiring, "clock", fake)
    return fake


def test_a_parameter_created_after_the_deploy_is_picked_up(
    parameter: str, ssm: FlakySsm, clock: Clock
) -> None:
    assert wiring.admin_token() is None
    ssm.real.put_parameter(Name=parameter, Value="created-later", Type="SecureString")

    assert wiring.admin_token() is None  # not asked again at once: every request would
    assert ssm.calls == 1
    clock.now += wiring.SECRET_RETRY_SECONDS
    assert wiring.admin_token() == "created-later"
    assert ssm.calls == 2
    assert wiring.admin_token() == "created-later"  # read once, kept
    assert ssm.calls == 2


def test_a_throttled_read_heals_and_is_logged_without_the_value(
    parameter: str, ssm: FlakySsm, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    ssm.real.put_parameter(Name=parameter, Value="the-operator-secret", Type="SecureString")
    ssm.failing = True

    assert wiring.admin_token() is None
    assert f"cannot read SSM parameter {parameter} (ThrottlingException)" in caplog.text

    ssm.failing = False
    clock.now += wiring.SECRET_RETRY_SECONDS - 1
    assert wiring.admin_token() is None
    clock.now += 1
    assert wiring.admin_token() == "the-operator-secret"
    assert "the-operator-secret" not in caplog.text


def test_an_unreadable_vapid_key_is_a_503_then_works(
    ssm: FlakySsm, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"/mxpush/test-vapid-{uuid.uuid4().hex}"
    private = generate_private_key()
    ssm.real.put_parameter(Name=name, Value=private, Type="SecureString")
    monkeypatch.setenv("MXPUSH_VAPID_PRIVATE_KEY_PARAMETER", name)
    monkeypatch.setenv("MXPUSH_VAPID_SUBJECT", "mailto:ops@example.org")
    monkeypatch.delenv("MXPUSH_VAPID_PRIVATE_KEY", raising=False)
    wiring.reset()
    ssm.failing = True

    with pytest.raises(WebPushKeyUnreadable) as unreadable:
        wiring.vapid_key()
    assert (unreadable.value.status, unreadable.value.errcode) == (503, "M_UNKNOWN")

    ssm.failing = False
    clock.now += wiring.SECRET_RETRY_SECONDS
    key = wiring.vapid_key()
    assert key.public_key == load_vapid_key(private, "mailto:ops@example.org").public_key
