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
from mxpush.store.models import OwnerIndex, RegistrationItem
from mxpush_local.aws import Functions
from mxpush_local.template import _CfnLoader, load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = load_template(ROOT / "template.yaml")
RAW: dict[str, Any] = yaml.load((ROOT / "template.yaml").read_text(), Loader=_CfnLoader)  # noqa: S506
RETRY = TEMPLATE.state_machines["RetryStateMachine"]
SLOT = TEMPLATE.state_machines["SlotStateMachine"]
ASL: dict[str, Any] = json.loads(RETRY.definition_path.read_text())
SLOT_ASL: dict[str, Any] = json.loads(SLOT.definition_path.read_text())


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
        logical_id = RETRY.function_substitutions[substitution.group(1)]
        handler_file = TEMPLATE.functions[logical_id].code_uri
        source = "".join(p.read_text() for p in handler_file.glob("*.py"))
        assert f"mxpush.backends.{backend}" in source
        retried = {e for r in state["Retry"] for e in r["ErrorEquals"]}
        assert "TransientDeliveryError" in retried
        assert state["Catch"][0]["Next"] == "RecordFailure"
        assert state["Parameters"]["retry"] is True


def test_definition_substitutions_match_the_asl_placeholders() -> None:
    for machine in TEMPLATE.state_machines.values():
        text = machine.definition_path.read_text()
        placeholders = set(re.findall(r"\$\{(\w+)\}", text))
        assert placeholders == set(machine.function_substitutions), machine.logical_id


def test_slot_state_machine_is_two_transitions_wait_then_deliver() -> None:
    """A slot costs two state transitions however many pushes share it."""
    props = RAW["Resources"]["SlotStateMachine"]["Properties"]
    assert props["Type"] == "STANDARD"
    assert SLOT_ASL["StartAt"] == "WaitForSlot"
    assert SLOT_ASL["States"]["WaitForSlot"] == {
        "Type": "Wait",
        "TimestampPath": "$.at",
        "Next": "DeliverSlot",
    }
    deliver = SLOT_ASL["States"]["DeliverSlot"]
    assert deliver["End"] is True
    assert SLOT.function_substitutions == {"DeliverSlotFunctionArn": "DeliverSlotFunction"}


def test_retry_state_machine_name_matches_what_the_senders_start() -> None:
    """The senders get the retry machine's ARN by its fixed name (a reference would be a
    cycle: the machine invokes the senders)."""
    props = RAW["Resources"]["RetryStateMachine"]["Properties"]
    assert props["Name"] == {"Fn::Sub": "${AWS::StackName}-retry"}
    for logical_id, resource in RAW["Resources"].items():
        if logical_id.endswith("SenderFunction"):
            variables = resource["Properties"]["Environment"]["Variables"]
            assert variables["MXPUSH_RETRY_MACHINE_ARN"]["Fn::Sub"].endswith(
                ":stateMachine:${AWS::StackName}-retry"
            )
            destination = resource["Properties"]["EventInvokeConfig"]["DestinationConfig"]
            assert destination["OnFailure"]["Destination"] == {
                "Fn::GetAtt": ["RecordOutcomeFunction", "Arn"]
            }


def test_every_sender_is_named_for_the_slot_delivery() -> None:
    """Notify, the slot's delivery step and the sweep invoke senders by backend name."""
    for logical_id in ("NotifyFunction", "DeliverSlotFunction", "SweepFunction"):
        names = json.loads(
            re.sub(
                r"\$\{(\w+)\}",
                r"\1",
                TEMPLATE.functions[logical_id].environment["MXPUSH_SENDER_FUNCTIONS"],
            )
        )
        assert set(names) == set(BACKENDS), logical_id
        for backend, function in names.items():
            assert f"mxpush.backends.{backend}" in "".join(
                p.read_text() for p in TEMPLATE.functions[function].code_uri.glob("*.py")
            )


def test_notify_never_stops_executions() -> None:
    """A cancel is a DynamoDB write: nothing may call StopExecution."""
    for logical_id, resource in RAW["Resources"].items():
        for policy in resource.get("Properties", {}).get("Policies", []) or []:
            for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
                actions = statement["Action"]
                actions = actions if isinstance(actions, list) else [actions]
                assert "states:StopExecution" not in actions, logical_id


def test_table_matches_the_store_models() -> None:
    props = TEMPLATE.table_properties
    keys = {k["AttributeName"]: k["KeyType"] for k in props["KeySchema"]}
    model_keys = {
        RegistrationItem._hash_keyname: "HASH",
        RegistrationItem._range_keyname: "RANGE",
    }
    assert keys == model_keys
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


# Actions that have no resource-level permissions: `Resource: "*"` is the only form AWS accepts.
UNSCOPED_ACTIONS = {
    # Step Functions' log delivery to CloudWatch Logs.
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
    # X-Ray tracing.
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
}


def _statements(resource: dict[str, Any]) -> list[dict[str, Any]]:
    """Every IAM statement in a SAM resource's Policies, both branches of an `!If` included."""
    statements = []
    for policy in resource.get("Properties", {}).get("Policies", []) or []:
        conditional = isinstance(policy, dict) and "Fn::If" in policy
        branches = policy["Fn::If"][1:] if conditional else [policy]
        for branch in branches:
            if isinstance(branch, dict):
                statements.extend(branch.get("Statement", []))
    return statements


def test_policies_name_their_resources() -> None:
    """Least privilege: no IAM statement on `Resource: "*"`, except for actions that cannot
    name one."""
    for logical_id, resource in RAW["Resources"].items():
        for statement in _statements(resource):
            if statement["Resource"] == "*":
                assert set(statement["Action"]) <= UNSCOPED_ACTIONS, logical_id


def test_the_email_sender_may_send_only_as_the_configured_identity() -> None:
    resource = RAW["Resources"]["EmailSenderFunction"]
    variables = resource["Properties"]["Environment"]["Variables"]
    assert variables["MXPUSH_EMAIL_FROM"] == {"Ref": "EmailFromAddress"}
    assert variables["MXPUSH_EMAIL_TRANSPORT"] == "ses"
    assert variables["MXPUSH_UNSUBSCRIBE_SECRET_PARAMETER"] == {
        "Ref": "UnsubscribeSecretParameterName"
    }
    [ses] = [s for s in _statements(resource) if "ses:SendEmail" in s["Action"]]
    [address, domain] = ses["Resource"]
    assert address == {
        "Fn::Sub": "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:identity/"
        "${EmailFromAddress}"
    }
    assert domain["Fn::Sub"][1] == {
        "Domain": {"Fn::Select": [1, {"Fn::Split": ["@", {"Ref": "EmailFromAddress"}]}]}
    }
    # Only when email is configured (an empty address would name no identity).
    [conditional] = [
        p
        for p in resource["Properties"]["Policies"]
        if isinstance(p, dict) and "Fn::If" in p and p["Fn::If"][0] == "HasEmail"
    ]
    assert conditional["Fn::If"][2] == {"Ref": "AWS::NoValue"}
    assert RAW["Parameters"]["EmailFromAddress"]["Default"] == ""
    assert RAW["Parameters"]["UnsubscribeSecretParameterName"]["Default"] == (
        "/mxpush/unsubscribe-secret"
    )


def test_the_unsubscribe_route_goes_to_the_registration_function() -> None:
    routes = {route.path for route in TEMPLATE.functions["RegistrationFunction"].routes}
    assert "/api/v1/unsubscribe" in routes
