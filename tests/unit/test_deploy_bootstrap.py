"""`make deploy`'s helper (deploy/bootstrap.py): SSM SecureStrings on moto, the stack's
description through botocore's Stubber (moto's CloudFormation needs openapi-spec-validator and
its dependencies, which nothing else here uses), samconfig.toml as sam reads it."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from deploy import bootstrap
from deploy.bootstrap import (
    SAMCONFIG,
    SECRETS,
    Secret,
    Stack,
    Target,
    describe_stack,
    ensure_secure_string,
    finish,
    leftovers,
    read_samconfig,
    sam_deploy_command,
)
from mxpush.vapid import load_vapid_key

if TYPE_CHECKING:
    from mypy_boto3_ssm import SSMClient

# Apart from the local gateway's us-east-1 (moto's backends are per process).
REGION = "eu-central-1"
NOTIFY_URL = "https://abc123.execute-api.eu-central-1.amazonaws.com/_matrix/push/v1/notify"
API_BASE_URL = "https://abc123.execute-api.eu-central-1.amazonaws.com/api/v1"


@pytest.fixture
def ssm() -> Iterator[SSMClient]:
    with mock_aws():
        yield boto3.client("ssm", region_name=REGION)


def names() -> tuple[str, str]:
    run = uuid.uuid4().hex
    return f"/mxpush-{run}/admin-token", f"/mxpush-{run}/vapid-private-key"


def stack(admin: str, vapid: str, subject: str = "") -> Stack:
    return Stack(
        name="mxpush",
        status="CREATE_COMPLETE",
        parameters={
            "AdminTokenParameterName": admin,
            "VapidPrivateKeyParameterName": vapid,
            "VapidSubject": subject,
            "DefaultDelaySeconds": "25",
        },
        outputs={"NotifyUrl": NOTIFY_URL, "ApiBaseUrl": API_BASE_URL},
    )


def value(ssm: SSMClient, name: str) -> tuple[str, str]:
    parameter = ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]
    return parameter["Type"], parameter["Value"]


def test_missing_secrets_are_created_as_secure_strings(ssm: SSMClient) -> None:
    admin, vapid = names()
    out = io.StringIO()

    finish(stack(admin, vapid), ssm, REGION, out)

    token_type, token = value(ssm, admin)
    key_type, key = value(ssm, vapid)
    assert (token_type, key_type) == ("SecureString", "SecureString")
    assert len(token) >= 40  # 32 random bytes, base64url
    # A usable P-256 key, in the form the functions read.
    assert load_vapid_key(key, "mailto:ops@example.org").public_key.startswith("B")
    printed = out.getvalue()
    assert f"operator token: SSM SecureString {admin} (created now)" in printed
    assert f"Web Push VAPID private key: SSM SecureString {vapid} (created now)" in printed
    assert token not in printed
    assert key not in printed
    assert f"--with-decryption --name {admin} " in printed


def test_existing_secrets_are_never_overwritten(ssm: SSMClient) -> None:
    admin, vapid = names()
    ssm.put_parameter(Name=admin, Value="the-operators-own-token", Type="SecureString")
    out = io.StringIO()

    finish(stack(admin, vapid), ssm, REGION, out)
    finish(stack(admin, vapid), ssm, REGION, out)

    assert value(ssm, admin) == ("SecureString", "the-operators-own-token")
    assert f"SSM SecureString {admin} (already there, kept)" in out.getvalue()
    first_key = out.getvalue().count(f"{vapid} (created now)")
    assert first_key == 1
    assert out.getvalue().count(f"{vapid} (already there, kept)") == 1


def test_ensure_reports_whether_it_created(ssm: SSMClient) -> None:
    admin, _ = names()
    made = []

    def make() -> str:
        made.append(1)
        return f"secret-{len(made)}"

    secret = Secret("AdminTokenParameterName", "operator token", make)

    assert ensure_secure_string(ssm, admin, secret) is True
    assert ensure_secure_string(ssm, admin, secret) is False
    assert value(ssm, admin) == ("SecureString", "secret-1")


def test_urls_printed_and_an_empty_parameter_name_skipped(ssm: SSMClient) -> None:
    admin, _ = names()
    out = io.StringIO()

    finish(stack(admin, "", subject="mailto:ops@example.org"), ssm, REGION, out)

    printed = out.getvalue()
    assert f"NotifyUrl   {NOTIFY_URL}" in printed
    assert f"ApiBaseUrl  {API_BASE_URL}" in printed
    assert "Web Push VAPID private key: none (VapidPrivateKeyParameterName is empty)" in printed
    assert "VapidSubject is set" not in printed
    created = ssm.describe_parameters()["Parameters"]
    assert [p["Name"] for p in created if p["Name"].startswith(admin.rsplit("/", 1)[0])] == [admin]


def test_without_a_vapid_subject_it_says_web_push_is_off(ssm: SSMClient) -> None:
    admin, vapid = names()
    out = io.StringIO()

    finish(stack(admin, vapid), ssm, REGION, out)

    assert "Web Push stays off until VapidSubject is set" in out.getvalue()


def test_the_secrets_are_the_templates_ssm_parameters() -> None:
    template = (Path(__file__).resolve().parents[2] / "template.yaml").read_text()
    for secret in SECRETS:
        assert f"  {secret.template_parameter}:\n    Type: String" in template


def describe_answer(**overrides: Any) -> dict[str, Any]:
    return {
        "Stacks": [
            {
                "StackName": "mxpush",
                "StackStatus": "UPDATE_COMPLETE",
                "CreationTime": "2026-12-01T10:00:00Z",
                "Parameters": [
                    {"ParameterKey": "AdminTokenParameterName", "ParameterValue": "/a/b"},
                    {"ParameterKey": "VapidSubject", "ParameterValue": ""},
                ],
                "Outputs": [
                    {"OutputKey": "NotifyUrl", "OutputValue": NOTIFY_URL},
                    {"OutputKey": "ApiBaseUrl", "OutputValue": API_BASE_URL},
                ],
                **overrides,
            }
        ]
    }


def test_describe_stack_reads_parameters_and_outputs() -> None:
    client = boto3.client("cloudformation", region_name=REGION)
    with Stubber(client) as stub:
        stub.add_response("describe_stacks", describe_answer(), {"StackName": "mxpush"})
        described = describe_stack(client, "mxpush")

    assert described == Stack(
        name="mxpush",
        status="UPDATE_COMPLETE",
        parameters={"AdminTokenParameterName": "/a/b", "VapidSubject": ""},
        outputs={"NotifyUrl": NOTIFY_URL, "ApiBaseUrl": API_BASE_URL},
    )


def test_describe_stack_of_a_missing_stack_is_none() -> None:
    client = boto3.client("cloudformation", region_name=REGION)
    with Stubber(client) as stub:
        stub.add_client_error(
            "describe_stacks",
            service_error_code="ValidationError",
            service_message="Stack with id mxpush does not exist",
            http_status_code=400,
        )
        assert describe_stack(client, "mxpush") is None


def test_describe_stack_lets_other_errors_through() -> None:
    client = boto3.client("cloudformation", region_name=REGION)
    with Stubber(client) as stub:
        stub.add_client_error("describe_stacks", service_error_code="AccessDenied")
        with pytest.raises(client.exceptions.ClientError, match="AccessDenied"):
            describe_stack(client, "mxpush")


def test_first_deploy_is_guided_later_ones_are_not() -> None:
    target = Target(stack_name="mxpush", region="eu-central-1", profile=None)
    deployed = stack("/a", "/b")

    assert sam_deploy_command("sam", target, None) == ["sam", "deploy", "--guided"]
    assert sam_deploy_command("sam", target, deployed) == [
        "sam",
        "deploy",
        "--stack-name",
        "mxpush",
        "--region",
        "eu-central-1",
    ]


def test_the_committed_samconfig() -> None:
    assert read_samconfig(SAMCONFIG) == Target(stack_name="mxpush", region=None, profile=None)


def test_samconfig_deploy_section_wins_over_global(tmp_path: Path) -> None:
    path = tmp_path / "samconfig.toml"
    path.write_text(
        "version = 0.1\n"
        '[default.global.parameters]\nstack_name = "a"\nregion = "eu-west-1"\n'
        '[default.deploy.parameters]\nstack_name = "b"\nprofile = "ops"\n'
    )

    assert read_samconfig(path) == Target(stack_name="b", region="eu-west-1", profile="ops")
    assert read_samconfig(tmp_path / "absent.toml").stack_name == "mxpush"


def test_leftovers_name_what_destroy_keeps() -> None:
    out = io.StringIO()

    leftovers("mxpush", REGION, ["/mxpush/admin-token"], out)

    removal = f"aws ssm delete-parameter --region {REGION} --name /mxpush/admin-token"
    assert removal in out.getvalue()
    assert "DeletionPolicy Retain" in out.getvalue()


@pytest.fixture
def fake_sam(tmp_path: Path) -> tuple[str, Path]:
    """A `sam` that records its arguments and succeeds."""
    calls = tmp_path / "calls"
    script = tmp_path / "sam"
    script.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    script.chmod(0o755)
    return str(script), calls


def test_make_deploy_guided_first_then_secrets_and_urls(
    ssm: SSMClient,
    fake_sam: tuple[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sam, calls = fake_sam
    admin, vapid = names()
    monkeypatch.setenv("AWS_REGION", REGION)
    # Before sam deploy: no stack yet; after it: the deployed stack.
    answers: list[Stack | None] = [None, stack(admin, vapid)]
    monkeypatch.setattr(bootstrap, "describe_stack", lambda client, name: answers.pop(0))

    assert bootstrap.main(["deploy", "--sam", sam]) == 0

    assert calls.read_text() == "deploy --guided\n"
    assert value(ssm, admin)[0] == "SecureString"
    printed = capsys.readouterr().out
    assert "No stack mxpush yet" in printed
    assert f"NotifyUrl   {NOTIFY_URL}" in printed


def test_make_deploy_later_is_not_guided_and_a_failed_sam_stops_it(
    ssm: SSMClient, fake_sam: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    sam, calls = fake_sam
    monkeypatch.setenv("AWS_REGION", REGION)
    deployed = stack(*names())
    monkeypatch.setattr(bootstrap, "describe_stack", lambda client, name: deployed)

    assert bootstrap.main(["deploy", "--sam", sam]) == 0
    assert calls.read_text() == "deploy --stack-name mxpush\n"

    deployed = stack(*names())
    assert bootstrap.main(["deploy", "--sam", "false"]) == 1
    # No secrets for a deploy that failed.
    for name in deployed.parameters.values():
        if name.startswith("/"):
            with pytest.raises(ssm.exceptions.ParameterNotFound):
                ssm.get_parameter(Name=name)
