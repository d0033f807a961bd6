"""What `sam local invoke` does inside its container, without Docker: the Lambda Runtime
Interface Emulator (shipped inside aws-sam-cli) runs a handler through `awslambdaric`, in a
process of its own, with the environment the template gives the function; AWS is moto in server
mode on 127.0.0.1, reached through AWS_ENDPOINT_URL."""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mxpush_local.template import _CfnLoader

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
SAM_VENV = ROOT / ".venv-sam"
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's
STACK = "mxpush"
TABLE_NAME = "mxpush-rie"


def rie_binary() -> Path | None:
    """The emulator inside .venv-sam's aws-sam-cli (`make validate` installs it), for this CPU."""
    arch = "arm64" if platform.machine() in ("aarch64", "arm64") else "x86_64"
    pattern = f"lib/python3*/site-packages/samcli/local/rapid/aws-lambda-rie-{arch}"
    found = sorted(SAM_VENV.glob(pattern))
    return found[0] if found else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Function:
    logical_id: str
    code_dir: Path
    handler: str
    environment: dict[str, str]


class Stack:
    """The template with its references resolved as a deployed stack would resolve them:
    parameters to their defaults (or overrides), resources to the names created on moto."""

    def __init__(self, overrides: Mapping[str, str]) -> None:
        document = yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)  # noqa: S506 - SafeLoader
        self.document: dict[str, Any] = document
        self.parameters = {
            name: str(overrides.get(name, spec.get("Default", "")))
            for name, spec in document["Parameters"].items()
        }
        self.resources: dict[str, Any] = document["Resources"]

    def physical(self, logical_id: str) -> str:
        kind = self.resources[logical_id]["Type"]
        if kind == "AWS::DynamoDB::Table":
            return TABLE_NAME
        if kind == "AWS::Serverless::StateMachine":
            return f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{self.machine_name(logical_id)}"
        if kind == "AWS::Serverless::Function":
            return f"{STACK}-{logical_id}"
        raise ValueError(f"no physical name for {logical_id} ({kind})")

    def machine_name(self, logical_id: str) -> str:
        name = self.resources[logical_id]["Properties"].get("Name")
        return self.resolve(name) if name else f"{STACK}-{logical_id}"

    def resolve(self, value: Any) -> str:
        if isinstance(value, str | int):
            return str(value)
        if "Ref" in value:
            ref = value["Ref"]
            return self.parameters[ref] if ref in self.parameters else self.physical(ref)
        if "Fn::Sub" in value:
            pseudo = {
                "AWS::Region": REGION,
                "AWS::AccountId": ACCOUNT,
                "AWS::Partition": "aws",
                "AWS::StackName": STACK,
                "AWS::URLSuffix": "amazonaws.com",
            }

            def one(match: re.Match[str]) -> str:
                name = match.group(1)
                if name in pseudo:
                    return pseudo[name]
                return self.resolve({"Ref": name})

            return re.sub(r"\$\{([^}]+)\}", one, value["Fn::Sub"])
        raise ValueError(f"cannot resolve {value!r}")

    def functions(self) -> dict[str, Function]:
        globals_env = self.document["Globals"]["Function"]["Environment"]["Variables"]
        found = {}
        for logical_id, resource in self.resources.items():
            if resource["Type"] != "AWS::Serverless::Function":
                continue
            props = resource["Properties"]
            variables = {**globals_env, **props.get("Environment", {}).get("Variables", {})}
            found[logical_id] = Function(
                logical_id=logical_id,
                code_dir=ROOT / props["CodeUri"],
                handler=props["Handler"],
                environment={k: self.resolve(v) for k, v in variables.items()},
            )
        return found


class Rie:
    """One function behind the emulator: `invoke(event)` is what `sam local invoke -e` sends."""

    def __init__(self, function: Function, aws_env: Mapping[str, str], log: Path) -> None:
        binary = rie_binary()
        if binary is None:
            raise RuntimeError("no aws-lambda-rie: run make validate (installs .venv-sam)")
        self.function = function
        self.port = free_port()
        self._log = log.open("wb")
        env = {
            "PATH": os.environ["PATH"],
            # The function's code and the layer, where Lambda puts them (/var/task, /opt/python).
            "PYTHONPATH": f"{function.code_dir}:{ROOT / 'layers' / 'mxpush'}",
            "AWS_LAMBDA_FUNCTION_NAME": f"{STACK}-{function.logical_id}",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            **aws_env,
            **function.environment,
        }
        self.process = subprocess.Popen(
            [
                str(binary),
                "--runtime-interface-emulator-address",
                f"127.0.0.1:{self.port}",
                "--runtime-api-address",
                f"127.0.0.1:{free_port()}",
                sys.executable,
                "-m",
                "awslambdaric",
                function.handler,
            ],
            cwd=function.code_dir,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def invoke(self, event: Any, timeout: float = 60) -> Any:
        url = f"http://127.0.0.1:{self.port}/2015-03-31/functions/function/invocations"
        deadline = time.monotonic() + timeout
        while True:
            request = urllib.request.Request(url, data=json.dumps(event).encode(), method="POST")
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    return json.loads(response.read())
            except urllib.error.URLError as exc:
                if (
                    not isinstance(exc.reason, ConnectionRefusedError)
                    or time.monotonic() > deadline
                ):
                    raise
                time.sleep(0.05)  # the emulator is still starting

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()
