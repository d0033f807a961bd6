"""Deployed-mode wiring: the operator token from SSM (moto), and what happens without it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from mxpush import wiring


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
