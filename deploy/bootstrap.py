"""`make deploy` and `make destroy`: `sam deploy` / `sam delete` with what SAM cannot do itself.

    python deploy/bootstrap.py deploy --sam .venv-sam/bin/sam
    python deploy/bootstrap.py destroy --sam .venv-sam/bin/sam

deploy: the first time (no stack yet) runs `sam deploy --guided`, which asks for the settings
and saves them in samconfig.toml; later runs deploy with them. Then it creates the SSM
SecureStrings the stack names (operator token, Web Push VAPID key, the key of the emails'
unsubscribe links) if they are missing -
CloudFormation cannot create SecureStrings - and prints the URLs and the parameters' names.
Secret values are never printed nor overwritten.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import boto3
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_ssm import SSMClient

ROOT = Path(__file__).resolve().parents[1]
SAMCONFIG = ROOT / "samconfig.toml"
DEFAULT_STACK_NAME = "mxpush"


def new_admin_token() -> str:
    return secrets.token_urlsafe(32)


def new_vapid_private_key() -> str:
    from mxpush.vapid import generate_private_key  # noqa: PLC0415 - cryptography, only here

    return generate_private_key()


@dataclass(frozen=True)
class Secret:
    template_parameter: str
    what: str
    make_value: Callable[[], str]


# The template parameters that name an SSM SecureString, and how to make a fresh value.
SECRETS = (
    Secret("AdminTokenParameterName", "operator token", new_admin_token),
    Secret("VapidPrivateKeyParameterName", "Web Push VAPID private key", new_vapid_private_key),
    Secret("UnsubscribeSecretParameterName", "email unsubscribe-link key", new_admin_token),
)


@dataclass(frozen=True)
class Target:
    """Where the stack lives, as samconfig.toml says (None = the AWS configuration's own)."""

    stack_name: str
    region: str | None
    profile: str | None


def read_samconfig(path: Path = SAMCONFIG, environment: str = "default") -> Target:
    """sam's own precedence: a command's section (deploy) over the global one."""
    config: dict[str, Any] = tomllib.loads(path.read_text()) if path.exists() else {}
    sections = config.get(environment, {})
    merged: dict[str, Any] = {
        **sections.get("global", {}).get("parameters", {}),
        **sections.get("deploy", {}).get("parameters", {}),
    }
    return Target(
        stack_name=str(merged.get("stack_name") or DEFAULT_STACK_NAME),
        region=merged.get("region") or None,
        profile=merged.get("profile") or None,
    )


@dataclass(frozen=True)
class Stack:
    name: str
    status: str
    parameters: Mapping[str, str]
    outputs: Mapping[str, str]


def describe_stack(cloudformation: CloudFormationClient, name: str) -> Stack | None:
    """None when there is no such stack (CloudFormation answers ValidationError)."""
    try:
        answer = cloudformation.describe_stacks(StackName=name)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ValidationError":
            return None
        raise
    [stack] = answer["Stacks"]
    return Stack(
        name=stack["StackName"],
        status=stack["StackStatus"],
        parameters={
            p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])
        },
        outputs={o["OutputKey"]: o.get("OutputValue", "") for o in stack.get("Outputs", [])},
    )


def ensure_secure_string(ssm: SSMClient, name: str, secret: Secret) -> bool:
    """Create the parameter unless it exists; True if created. Never overwrites: the operator
    token is in use, and browsers subscribed with the VAPID key's public half."""
    try:
        ssm.put_parameter(
            Name=name,
            Description=f"mxpush {secret.what} (created by make deploy)",
            Value=secret.make_value(),
            Type="SecureString",
            Overwrite=False,
        )
    except ssm.exceptions.ParameterAlreadyExists:
        return False
    return True


def sam_deploy_command(sam: str, target: Target, stack: Stack | None) -> list[str]:
    if stack is None:
        # Asks for region, stack name and parameters (offering samconfig.toml's values) and
        # saves the answers there for the next runs.
        return [sam, "deploy", "--guided"]
    command = [sam, "deploy", "--stack-name", target.stack_name]
    if target.region:
        command += ["--region", target.region]
    return command


def finish(stack: Stack, ssm: SSMClient, region: str, out: TextIO) -> None:
    """After a deploy: the missing SecureStrings, then what the operator needs."""
    print(f"\nmxpush is deployed: stack {stack.name} in {region} ({stack.status})", file=out)
    for key, meaning in (
        ("NotifyUrl", "pushers' data.url; mxpush fills it in for you"),
        ("ApiBaseUrl", "the registration API"),
    ):
        print(f"  {key:<11} {stack.outputs.get(key, '(missing)')}  ({meaning})", file=out)
    names = []
    for secret in SECRETS:
        name = stack.parameters.get(secret.template_parameter, "")
        if not name:
            print(f"  {secret.what}: none ({secret.template_parameter} is empty)", file=out)
            continue
        created = ensure_secure_string(ssm, name, secret)
        state = "created now" if created else "already there, kept"
        print(f"  {secret.what}: SSM SecureString {name} ({state})", file=out)
        names.append(name)
    if names:
        print("Read a value with:", file=out)
        for name in names:
            print(
                f"  aws ssm get-parameter --region {region} --with-decryption --name {name} "
                "--query Parameter.Value --output text",
                file=out,
            )
        print(
            "A parameter created now is picked up within 30 s by functions that already ran.",
            file=out,
        )
    if not stack.parameters.get("VapidSubject"):
        print(
            "Web Push stays off until VapidSubject is set (mailto:you@example.org): add "
            "VapidSubject=... to parameter_overrides in samconfig.toml and make deploy again.",
            file=out,
        )


def leftovers(stack_name: str, region: str, names: list[str], out: TextIO) -> None:
    """What `sam delete` keeps, on purpose, and how to remove it."""
    print(
        f"\nStack {stack_name} deleted. Kept: the DynamoDB table (DeletionPolicy Retain: "
        "registrations survive a redeploy) and the SSM parameters. To remove them too:",
        file=out,
    )
    print(f"  aws dynamodb list-tables --region {region}   # {stack_name}-Table-...", file=out)
    print(f"  aws dynamodb delete-table --region {region} --table-name <that table>", file=out)
    for name in names:
        print(f"  aws ssm delete-parameter --region {region} --name {name}", file=out)


def _session(target: Target) -> boto3.Session:
    # botocore reads AWS_DEFAULT_REGION and the profile's region, not AWS_REGION (sam does).
    region = target.region or os.environ.get("AWS_REGION") or None
    return boto3.Session(profile_name=target.profile, region_name=region)


def _region(session: boto3.Session) -> str:
    if not session.region_name:
        raise SystemExit(
            "mxpush deploy: no AWS region: set AWS_REGION, run `aws configure`, "
            "or put region = ... in samconfig.toml"
        )
    return session.region_name


def deploy(sam: str, out: TextIO) -> int:
    target = read_samconfig()
    session = _session(target)
    # No region anywhere yet: surely a first deploy, and --guided asks for one.
    stack = (
        describe_stack(session.client("cloudformation"), target.stack_name)
        if session.region_name
        else None
    )
    if stack is None:
        print(
            f"No stack {target.stack_name} yet: sam deploy --guided asks for the settings.",
            file=out,
        )
    if subprocess.run(sam_deploy_command(sam, target, stack), check=False).returncode != 0:  # noqa: S603
        return 1
    target = read_samconfig()  # --guided may have saved another region or stack name
    session = _session(target)
    region = _region(session)
    deployed = describe_stack(session.client("cloudformation"), target.stack_name)
    if deployed is None:
        print(f"mxpush deploy: stack {target.stack_name} not found in {region}", file=sys.stderr)
        return 1
    finish(deployed, session.client("ssm"), region, out)
    return 0


def destroy(sam: str, out: TextIO) -> int:
    target = read_samconfig()
    session = _session(target)
    region = _region(session)
    stack = describe_stack(session.client("cloudformation"), target.stack_name)
    if stack is None:
        print(f"No stack {target.stack_name} in {region}: nothing to delete.", file=out)
        return 0
    command = [sam, "delete", "--stack-name", target.stack_name, "--region", region]
    if subprocess.run(command, check=False).returncode != 0:  # noqa: S603
        return 1
    if describe_stack(session.client("cloudformation"), target.stack_name) is not None:
        return 0  # the operator answered no
    names = [stack.parameters.get(s.template_parameter, "") for s in SECRETS]
    leftovers(target.stack_name, region, [name for name in names if name], out)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python deploy/bootstrap.py", description=__doc__)
    parser.add_argument("action", choices=["deploy", "destroy"])
    parser.add_argument("--sam", default="sam", help="the sam CLI (default: sam on PATH)")
    args = parser.parse_args(argv)
    try:
        if args.action == "deploy":
            return deploy(args.sam, sys.stdout)
        return destroy(args.sam, sys.stdout)
    except (BotoCoreError, ClientError) as exc:
        # No credentials, an expired session, access denied: botocore's message says which.
        print(f"mxpush {args.action}: AWS said: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
