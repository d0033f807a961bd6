"""The template's operations side: log groups, access log, tracing, throttling, alarms and the
dashboard. Each test fails if a function, state machine or backend is added without its share."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from mxpush.backends import BACKENDS
from mxpush_local.template import _CfnLoader

ROOT = Path(__file__).resolve().parents[2]
RAW: dict[str, Any] = yaml.load((ROOT / "template.yaml").read_text(), Loader=_CfnLoader)  # noqa: S506
RESOURCES: dict[str, Any] = RAW["Resources"]
PARAMETERS: dict[str, Any] = RAW["Parameters"]


def _of_type(kind: str) -> dict[str, Any]:
    return {k: v for k, v in RESOURCES.items() if v["Type"] == kind}


FUNCTIONS = _of_type("AWS::Serverless::Function")
STATE_MACHINES = _of_type("AWS::Serverless::StateMachine")
LOG_GROUPS = _of_type("AWS::Logs::LogGroup")
ALARMS = _of_type("AWS::CloudWatch::Alarm")


def _metrics(alarm: dict[str, Any]) -> list[dict[str, Any]]:
    """An alarm's metrics as {namespace, name, dimensions}: its single metric, or those its
    metric math reads."""
    props = alarm["Properties"]
    if "MetricName" in props:
        stats = [{"Namespace": props["Namespace"], "MetricName": props["MetricName"]} | props]
    else:
        stats = [m["MetricStat"]["Metric"] for m in props["Metrics"] if "MetricStat" in m]
    return [
        {
            "namespace": s["Namespace"],
            "name": s["MetricName"],
            "dimensions": {d["Name"]: d["Value"] for d in s.get("Dimensions", [])},
        }
        for s in stats
    ]


def _alarmed(namespace: str, name: str, dimensions: dict[str, Any]) -> list[str]:
    """The alarms that watch this exact metric."""
    wanted = {"namespace": namespace, "name": name, "dimensions": dimensions}
    return [lid for lid, alarm in ALARMS.items() if wanted in _metrics(alarm)]


def test_every_function_has_a_log_group_with_the_retention_parameter() -> None:
    by_name = {
        group["Properties"]["LogGroupName"]["Fn::Sub"]: group["Properties"]
        for group in LOG_GROUPS.values()
    }
    for logical_id in FUNCTIONS:
        group = by_name.get(f"/aws/lambda/${{{logical_id}}}")
        assert group, f"{logical_id} has no declared log group"
        assert group["RetentionInDays"] == {"Ref": "LogRetentionInDays"}, logical_id
    for group in LOG_GROUPS.values():
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionInDays"}
    assert PARAMETERS["LogRetentionInDays"]["Default"] == 14
    # The delivery log's TTL is another parameter, still passed to the functions.
    env = RAW["Globals"]["Function"]["Environment"]["Variables"]
    assert env["MXPUSH_LOG_RETENTION_DAYS"] == {"Ref": "LogRetentionDays"}


def test_state_machines_log_errors_to_their_own_log_groups() -> None:
    groups = []
    for logical_id, machine in STATE_MACHINES.items():
        logging = machine["Properties"]["Logging"]
        assert logging["Level"] == "ERROR", logical_id
        assert logging["IncludeExecutionData"] is False, logical_id
        [destination] = logging["Destinations"]
        group = destination["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"][0]
        assert group in LOG_GROUPS, logical_id
        groups.append(group)
    assert len(set(groups)) == len(STATE_MACHINES) == 2


def test_access_log_is_json_by_route_key_and_never_has_the_path() -> None:
    """The path of /api/v1/pushkeys/{pushkey} carries the pushkey; the route key does not."""
    settings = RESOURCES["GatewayApi"]["Properties"]["AccessLogSettings"]
    assert settings["DestinationArn"]["Fn::GetAtt"][0] in LOG_GROUPS
    fields = json.loads(settings["Format"])
    assert fields["routeKey"] == "$context.routeKey"
    assert fields["requestId"] == "$context.requestId"
    assert fields["status"] == "$context.status"
    assert fields["responseLatency"] == "$context.responseLatency"
    assert fields["integrationError"] == "$context.integrationErrorMessage"
    variables = re.findall(r"\$context\.[\w.]+", settings["Format"])
    assert not [v for v in variables if "path" in v.lower() or "querystring" in v.lower()]


def test_tracing_is_a_parameter_off_by_default() -> None:
    assert PARAMETERS["Tracing"]["Default"] == "PassThrough"
    assert set(PARAMETERS["Tracing"]["AllowedValues"]) == {"Active", "PassThrough"}
    assert RAW["Globals"]["Function"]["Tracing"] == {"Ref": "Tracing"}
    assert RAW["Conditions"]["TracingActive"] == {"Fn::Equals": [{"Ref": "Tracing"}, "Active"]}
    for logical_id, machine in STATE_MACHINES.items():
        enabled = machine["Properties"]["Tracing"]["Enabled"]
        assert enabled == {"Fn::If": ["TracingActive", True, False]}, logical_id


def test_notify_is_throttled_apart_from_the_rest_sized_for_a_large_homeserver() -> None:
    api = RESOURCES["GatewayApi"]["Properties"]
    notify_event = FUNCTIONS["NotifyFunction"]["Properties"]["Events"]["Notify"]["Properties"]
    route_key = f"{notify_event['Method']} {notify_event['Path']}"
    assert list(api["RouteSettings"]) == [route_key]
    notify = api["RouteSettings"][route_key]
    assert notify == {
        "ThrottlingBurstLimit": {"Ref": "NotifyThrottlingBurstLimit"},
        "ThrottlingRateLimit": {"Ref": "NotifyThrottlingRateLimit"},
    }
    assert PARAMETERS["NotifyThrottlingRateLimit"]["Default"] >= 1000
    assert PARAMETERS["NotifyThrottlingBurstLimit"]["Default"] >= 2000
    assert api["DefaultRouteSettings"] == {
        "ThrottlingBurstLimit": {"Ref": "ApiThrottlingBurstLimit"},
        "ThrottlingRateLimit": {"Ref": "ApiThrottlingRateLimit"},
    }


def test_every_function_has_an_errors_and_a_throttles_alarm() -> None:
    for logical_id in FUNCTIONS:
        for metric in ("Errors", "Throttles"):
            dimensions = {"FunctionName": {"Ref": logical_id}}
            assert _alarmed("AWS/Lambda", metric, dimensions), f"{logical_id}: no {metric} alarm"


def test_every_state_machine_alarms_on_failed_and_timed_out_executions() -> None:
    for logical_id in STATE_MACHINES:
        dimensions = {"StateMachineArn": {"Ref": logical_id}}
        assert _alarmed("AWS/States", "ExecutionsFailed", dimensions), logical_id
        assert _alarmed("AWS/States", "ExecutionsTimedOut", dimensions), logical_id


def test_every_backend_has_a_delivery_failure_rate_alarm() -> None:
    for backend in BACKENDS:
        [failed] = _alarmed("mxpush", "Pushes", {"Backend": backend, "Outcome": "failed"})
        [delivered] = _alarmed("mxpush", "Pushes", {"Backend": backend, "Outcome": "delivered"})
        assert failed == delivered, backend
        props = ALARMS[failed]["Properties"]
        assert props["Threshold"] == {"Ref": "DeliveryFailureAlarmPercent"}
        ids = {}
        for metric in props["Metrics"]:
            if "MetricStat" in metric:
                dimensions = metric["MetricStat"]["Metric"]["Dimensions"]
                ids[{d["Name"]: d["Value"] for d in dimensions}["Outcome"]] = metric["Id"]
        [expression] = [m["Expression"] for m in props["Metrics"] if m.get("ReturnData")]
        failed_id, delivered_id = ids["failed"], ids["delivered"]
        # failed / (delivered + failed), in percent.
        rate = f"100 * FILL({failed_id}, 0) / (FILL({delivered_id}, 0) + FILL({failed_id}, 0))"
        assert rate in expression, backend


def test_api_table_and_given_up_pushes_are_alarmed() -> None:
    assert _alarmed("AWS/ApiGateway", "5xx", {"ApiId": {"Ref": "GatewayApi"}})
    assert _alarmed("AWS/DynamoDB", "ReadThrottleEvents", {"TableName": {"Ref": "Table"}})
    assert _alarmed("AWS/DynamoDB", "WriteThrottleEvents", {"TableName": {"Ref": "Table"}})
    assert _alarmed("AWS/Lambda", "Invocations", {"FunctionName": {"Ref": "RecordOutcomeFunction"}})


def test_every_async_sender_alarms_on_lost_hand_overs_to_its_destination() -> None:
    for logical_id, function in FUNCTIONS.items():
        if "EventInvokeConfig" not in function["Properties"]:
            continue
        if "DestinationConfig" not in function["Properties"]["EventInvokeConfig"]:
            continue
        dimensions = {"FunctionName": {"Ref": logical_id}}
        assert _alarmed("AWS/Lambda", "DestinationDeliveryFailures", dimensions), logical_id


def test_metric_math_reads_what_it_fetches() -> None:
    """Every fetched metric is used by the one expression the alarm returns, and the expression
    names no metric it does not fetch."""
    for logical_id, alarm in ALARMS.items():
        metrics = alarm["Properties"].get("Metrics")
        if not metrics:
            continue
        fetched = {m["Id"] for m in metrics if "MetricStat" in m}
        assert all(m["ReturnData"] is False for m in metrics if "MetricStat" in m), logical_id
        [returned] = [m for m in metrics if m.get("ReturnData")]
        used = set(re.findall(r"\b([a-z]\w*)\b", returned["Expression"])) - {"IF", "FILL"}
        assert used == fetched, logical_id


def test_every_alarm_notifies_the_topic_and_the_email_is_optional() -> None:
    assert len(ALARMS) >= 2 * len(FUNCTIONS) + len(STATE_MACHINES) + len(BACKENDS)
    for logical_id, alarm in ALARMS.items():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}], logical_id
        assert alarm["Properties"]["TreatMissingData"] == "notBreaching", logical_id
    [subscription] = _of_type("AWS::SNS::Subscription").values()
    assert subscription["Condition"] == "HasAlarmEmail"
    assert subscription["Properties"]["Endpoint"] == {"Ref": "AlarmEmail"}
    no_email = {"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}
    assert RAW["Conditions"]["HasAlarmEmail"] == {"Fn::Not": [no_email]}
    assert PARAMETERS["AlarmEmail"]["Default"] == ""


def test_dashboard_is_json_and_shows_what_operators_look_at() -> None:
    [dashboard] = _of_type("AWS::CloudWatch::Dashboard").values()
    body = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    references = set(re.findall(r"\$\{([\w:]+)(?:\.\w+)?\}", body))
    assert not references - set(RESOURCES) - {"AWS::Region", "AWS::StackName"}
    widgets = json.loads(re.sub(r"\$\{[\w:.]+\}", "x", body))["widgets"]
    text = json.dumps(widgets)
    for metric in ("Notifications", "Pushes", "DeliveryLatency"):
        assert f'MetricName=\\"{metric}\\"' in text, metric
    for stat in ("p50", "p95", "p99"):
        assert f"'{stat}'" in text, stat
    for logical_id in FUNCTIONS:
        assert f"${{{logical_id}}}" in body, logical_id
    for logical_id in STATE_MACHINES:
        assert f"${{{logical_id}}}" in body, logical_id
    assert "ExecutionsStarted" in text
    assert "ExecutionsFailed" in text
    # Nothing may overlap on CloudWatch's 24-column grid.
    cells: set[tuple[int, int]] = set()
    for widget in widgets:
        assert widget["x"] + widget["width"] <= 24
        area = {
            (x, y)
            for x in range(widget["x"], widget["x"] + widget["width"])
            for y in range(widget["y"], widget["y"] + widget["height"])
        }
        assert not area & cells, widget["properties"].get("title")
        cells |= area
