"""What is deployed must match what the code expects: routes, state machine, table, layer."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from mxpush.backends import BACKENDS
from mxpush.errors import Unrecognized
from mxpush.http_api import Request
from mxpush.store import LogItem, OwnerIndex, RegistrationItem
from mxpush_local.aws import Functions
from mxpush_local.template import _CfnLoader, load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = load_template(ROOT / "template.yaml")
RAW: dict[str, Any] = yaml.load((ROOT / "template.yaml").read_text(), Loader=_CfnLoader)  # noqa: S506
ASL: dict[str, Any] = json.loads(TEMPLATE.state_machine.definition_path.read_text())


def test_every_route_reaches_a_handler_route() -> None:
    functions = Functions(TEMPLATE.functions)
    for spec in TEMPLATE.functions.values():
        if not spec.routes:
            continue
        module = functions.handler(spec.logical_id).__module__
        router = __import__(module).router
        for route in spec.routes:
            if route.path == "$default":
                continue
            path = re.sub(r"\{\w+\}", "mxp_example", route.path)
            handled = []
            for method in ("GET", "POST", "DELETE"):
                try:
                    router.dispatch(Request(method, path, {}, {}, b""))
                    handled.append(method)
                except Unrecognized as exc:
                    if type(exc) is not Unrecognized:  # 405: the path exists
                        handled.append(method)
                except Exception:
                    handled.append(method)
            assert handled, f"{route.path} of {spec.logical_id} reaches no handler route"


def test_state_machine_has_a_sender_branch_for_every_backend() -> None:
    choice = ASL["States"]["ChooseBackend"]
    branches = {c["StringEquals"]: c["Next"] for c in choice["Choices"]}
    assert set(branches) == set(BACKENDS)
    for backend, state_name in branches.items():
        state = ASL["States"][state_name]
        substitution = re.fullmatch(r"\$\{(\w+)\}", state["Resource"])
        assert substitution, state["Resource"]
        logical_id = TEMPLATE.state_machine.function_substitutions[substitution.group(1)]
        handler_file = TEMPLATE.functions[logical_id].code_uri
        source = "".join(p.read_text() for p in handler_file.glob("*.py"))
        assert f"mxpush.backends.{backend}" in source
        retried = {e for r in state["Retry"] for e in r["ErrorEquals"]}
        assert "TransientDeliveryError" in retried
        assert state["Catch"][0]["Next"] == "RecordOutcome"


def test_definition_substitutions_match_the_asl_placeholders() -> None:
    text = TEMPLATE.state_machine.definition_path.read_text()
    placeholders = set(re.findall(r"\$\{(\w+)\}", text))
    assert placeholders == set(TEMPLATE.state_machine.function_substitutions)


def test_state_machine_is_standard_and_waits_on_the_delay() -> None:
    props = RAW["Resources"]["DeliveryStateMachine"]["Properties"]
    assert props["Type"] == "STANDARD"  # Express executions cannot be stopped
    assert ASL["States"]["Hold"] == {
        "Comment": ASL["States"]["Hold"]["Comment"],
        "Type": "Wait",
        "SecondsPath": "$.delay_seconds",
        "Next": "ChooseBackend",
    }


def test_table_matches_the_store_models() -> None:
    props = TEMPLATE.table_properties
    keys = {k["AttributeName"]: k["KeyType"] for k in props["KeySchema"]}
    model_keys = {
        RegistrationItem._hash_keyname: "HASH",
        RegistrationItem._range_keyname: "RANGE",
    }
    assert keys == model_keys
    assert LogItem._hash_keyname == "rid" and LogItem._range_keyname == "sk"
    [index] = props["GlobalSecondaryIndexes"]
    assert index["IndexName"] == OwnerIndex.Meta.index_name
    assert index["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    assert [k["AttributeName"] for k in index["KeySchema"]] == ["owner", "created_at"]
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert props["BillingMode"] == "PAY_PER_REQUEST"


def test_functions_run_arm64_python313_with_the_layer() -> None:
    function_globals = RAW["Globals"]["Function"]
    assert function_globals["Runtime"] == "python3.13"
    assert function_globals["Architectures"] == ["arm64"]
    assert function_globals["Layers"] == [{"Ref": "MxpushLayer"}]
    layer = RAW["Resources"]["MxpushLayer"]
    assert layer["Metadata"]["BuildMethod"] == "makefile"
    requirements = (ROOT / "layers" / "mxpush" / "requirements.txt").read_text().lower()
    packages = {line.split("==")[0] for line in requirements.splitlines() if "==" in line}
    assert not packages & {"boto3", "botocore", "s3transfer", "jmespath", "urllib3"}


def test_policies_name_their_resources() -> None:
    """Least privilege: no IAM statement on `Resource: "*"`."""
    for logical_id, resource in RAW["Resources"].items():
        for policy in resource.get("Properties", {}).get("Policies", []) or []:
            statements = policy.get("Statement", []) if isinstance(policy, dict) else []
            for statement in statements:
                assert statement["Resource"] != "*", logical_id
