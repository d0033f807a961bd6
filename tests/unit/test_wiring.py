"""Deployed-mode wiring: the operator token from SSM (moto), and what happens without it."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from mxpush import wiring


@pytest.fixture
def deployed_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.delenv("MXPUSH_ADMIN_TOKEN", raising=False)
    monkeypatch.setenv("MXPUSH_ADMIN_TOKEN_PARAMETER", "/mxpush/admin-token")
    wiring.reset()
    with mock_aws():
        yield
    wiring.reset()


def test_operator_token_comes_from_the_ssm_secure_string(deployed_env: None) -> None:
    boto3.client("ssm", region_name="us-east-1").put_parameter(
        Name="/mxpush/admin-token", Value="from-ssm-secret", Type="SecureString"
    )
    assert wiring.admin_token() == "from-ssm-secret"


def test_missing_ssm_parameter_disables_the_operator_token_without_failing(
    deployed_env: None, caplog: pytest.LogCaptureFixture
) -> None:
    assert wiring.admin_token() is None
    assert "cannot read SSM parameter /mxpush/admin-token (ParameterNotFound)" in caplog.text


def test_local_mode_token_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MXPUSH_ADMIN_TOKEN", "local-token")
    wiring.reset()
    try:
        assert wiring.admin_token() == "local-token"
    finally:
        wiring.reset()
