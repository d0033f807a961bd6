"""The pure parts of `make bench`'s cost model: item sizes and capacity units as AWS bills them,
pricing, billable transitions in a history, and the trace generator."""

from __future__ import annotations

import base64
from collections import Counter
from pathlib import Path

import pytest
from bench.cost import memory_by_function
from bench.cost_model import (
    CALL,
    DELIVERY_MARGIN,
    MESSAGE,
    NOOP_BADGE,
    READ,
    READ_SAFETY,
    Usage,
    billable_transitions,
    dollars_per_million,
    dynamodb_item_size,
    generate_trace,
    lambda_gb_seconds,
    percentile,
    read_units,
    write_units,
)

# --- item size: the rules of the DynamoDB developer guide ("Item sizes and formats") ----------


@pytest.mark.parametrize(
    ("item", "size"),
    [
        ({"Name": {"S": "Alice"}}, 4 + 5),
        ({"é": {"S": "日本"}}, 2 + 6),  # UTF-8 bytes, names too
        ({"n": {"N": "123"}}, 1 + 2 + 1),  # 1 byte per two significant digits, plus 1
        ({"n": {"N": "1000"}}, 1 + 1 + 1),  # trailing zeros trimmed
        ({"n": {"N": "0.00125"}}, 1 + 2 + 1),  # leading zeros trimmed
        ({"n": {"N": "-12.5"}}, 1 + 2 + 1),
        ({"b": {"B": base64.b64encode(bytes(10)).decode()}}, 1 + 10),  # raw bytes
        ({"b": {"B": bytes(10)}}, 1 + 10),
        ({"t": {"BOOL": True}, "z": {"NULL": True}}, 2 + 2),
        ({"l": {"L": []}}, 1 + 3),  # an empty list: 3 bytes
        ({"l": {"L": [{"S": "ab"}, {"N": "1"}]}}, 1 + 3 + (2 + 1) + (2 + 1)),  # +1 per element
        ({"m": {"M": {"k": {"S": "v"}}}}, 1 + 3 + (1 + 1 + 1)),
        ({"s": {"SS": ["a", "bc"]}, "ns": {"NS": ["1", "22"]}}, (1 + 3) + (2 + 4)),
    ],
)
def test_item_size_follows_dynamodbs_rules(item: dict[str, object], size: int) -> None:
    assert dynamodb_item_size(item) == size


def test_item_size_of_a_nested_registration_like_item() -> None:
    item = {
        "rid": {"S": "pk#0123456789"},  # 3 + 13
        "sk": {"S": "registration"},  # 2 + 12
        "p": {"M": {"e": {"L": [{"S": "$a"}, {"S": "$b"}]}, "t": {"N": "1700000000.5"}}},
    }
    # p: 1 + 3 + [e: 1 + (3 + (2+1) + (2+1)) + 1] + [t: 1 + (6 + 1) + 1]
    assert dynamodb_item_size(item) == 16 + 14 + 1 + 3 + (1 + 9 + 1) + (1 + 7 + 1)


def test_item_size_refuses_what_is_not_dynamodb_json() -> None:
    with pytest.raises(ValueError, match="attribute type"):
        dynamodb_item_size({"x": {"STRING": "a"}})


# --- capacity units: the examples of the developer guide ---------------------------------------


def test_write_units_per_started_kilobyte_of_the_larger_item() -> None:
    assert write_units(0, 500) == 1  # a 500-byte item: 1 KB
    assert write_units(0, 3584) == 4  # 3.5 KB: 4 units
    assert write_units(3000, 1000) == 3  # an update that shrinks it pays for the old item
    assert write_units(2100, 2100) == 3  # a failed condition pays for the item it checked
    assert write_units(0, 0) == 1  # at least one
    assert write_units(0, 1024, transactional=True) == 2


def test_read_units_per_started_4_kb() -> None:
    assert read_units(3584, consistent=True) == 1  # 3.5 KB rounds to 4 KB
    assert read_units(10 * 1024, consistent=True) == 3  # 10 KB rounds to 12 KB
    assert read_units(10 * 1024, consistent=False) == 1.5
    assert read_units(0, consistent=False) == 0.5  # an item not found still costs
    assert read_units(4096, consistent=True, transactional=True) == 2


# --- pricing -----------------------------------------------------------------------------------


def test_dollars_per_million_by_component() -> None:
    usage = Usage(
        notifications=1000,
        transitions=1000,  # 1 per notification: $25 per 1M
        lambda_requests=2000,  # $0.40
        lambda_gb_seconds=75.0,  # 75 GB-s per 1k = 75,000 per 1M: $1.0000
        http_requests=1000,  # $1
        write_units=1500,  # $0.9375
        read_units=400,  # $0.05
        sqs_requests=500,  # $0.20
    )
    costs = dollars_per_million(usage)
    assert costs["Step Functions"] == pytest.approx(25.0)
    assert costs["Lambda requests"] == pytest.approx(0.40)
    assert costs["Lambda GB-s"] == pytest.approx(75_000 * 0.0000133334)
    assert costs["HTTP API"] == pytest.approx(1.0)
    assert costs["DynamoDB writes"] == pytest.approx(0.9375)
    assert costs["DynamoDB reads"] == pytest.approx(0.05)
    assert costs["SQS"] == pytest.approx(0.20)
    parts = sum(v for k, v in costs.items() if k != "total")
    assert costs["total"] == pytest.approx(parts)


def test_pricing_needs_notifications() -> None:
    with pytest.raises(ValueError, match="no notifications"):
        dollars_per_million(Usage())


def test_lambda_bills_whole_milliseconds_times_memory() -> None:
    assert lambda_gb_seconds(0.1002, 256) == pytest.approx(0.101 * 0.25)
    assert lambda_gb_seconds(0.001, 1024) == pytest.approx(0.001)


def test_memory_comes_from_the_function_else_the_globals(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(
        "Globals:\n  Function:\n    MemorySize: 256\n"
        "Resources:\n"
        "  Table: {Type: AWS::DynamoDB::Table}\n"
        "  A:\n    Type: AWS::Serverless::Function\n"
        "    Properties: {CodeUri: a/, Environment: {Variables: {T: !Ref Table}}}\n"
        "  B:\n    Type: AWS::Serverless::Function\n"
        "    Properties: {MemorySize: 1024, Role: !GetAtt Role.Arn}\n"
    )
    assert memory_by_function(template) == {"A": 256, "B": 1024}


# --- transitions -------------------------------------------------------------------------------


def _history(*types: str) -> list[dict[str, object]]:
    return [{"type": t, "id": i + 1} for i, t in enumerate(types)]


def test_transitions_count_states_entered_and_task_retries() -> None:
    delivered_after_one_retry = _history(
        "ExecutionStarted",
        "ChoiceStateEntered",
        "ChoiceStateExited",
        "WaitStateEntered",
        "WaitStateExited",
        "TaskStateEntered",
        "LambdaFunctionScheduled",
        "LambdaFunctionStarted",
        "LambdaFunctionFailed",
        "LambdaFunctionScheduled",  # the retry: one more transition
        "LambdaFunctionStarted",
        "LambdaFunctionSucceeded",
        "TaskStateExited",
        "TaskStateEntered",
        "TaskScheduled",  # a service integration, first attempt: no extra
        "TaskStarted",
        "TaskSucceeded",
        "TaskStateExited",
        "ExecutionSucceeded",
    )
    assert billable_transitions(delivered_after_one_retry) == 4 + 1


def test_a_stopped_execution_pays_for_the_states_it_entered() -> None:
    cancelled = _history(
        "ExecutionStarted", "ChoiceStateEntered", "ChoiceStateExited", "WaitStateEntered",
        "ExecutionAborted",
    )  # fmt: skip
    assert billable_transitions(cancelled) == 2
    assert billable_transitions([]) == 0


# --- traces ------------------------------------------------------------------------------------


def test_trace_a_has_the_issues_mix() -> None:
    trace = generate_trace(10_000, rate=50, delay=5)
    counts = trace.counts()
    assert counts == {MESSAGE: 6000, READ: 2500, CALL: 300, NOOP_BADGE: 1200}
    bursts = [e for e in trace.episodes if e.kind == "burst"]
    sizes = Counter(sum(n.kind == MESSAGE for n in e.notifies) for e in bursts)
    assert set(sizes) <= {1, 2, 3, 4, 5}
    # weights .5/.2/.15/.1/.05: about half the bursts are single messages, mean size 2
    assert sizes[1] / len(bursts) == pytest.approx(0.5, abs=0.03)
    assert sizes[5] / len(bursts) == pytest.approx(0.05, abs=0.015)
    assert 6000 / len(bursts) == pytest.approx(2.0, abs=0.08)
    # each read cancels one burst; the other bursts and every call are pushed
    assert sum(e.delivered for e in trace.episodes) == len(bursts) - 2500 + 300


def test_trace_runs_at_its_rate() -> None:
    trace = generate_trace(3000, rate=50, delay=5)
    starts = sorted(n.at for n in trace.notifies)
    # episodes are paced at the rate; trailing reads come at most one delay later
    assert 3000 / 50 - 1 <= starts[-1] <= 3000 / 50 + 5
    first_half = sum(1 for t in starts if t < 30)
    assert first_half == pytest.approx(1500, rel=0.05)


def test_reads_land_within_the_delay_after_their_burst() -> None:
    delay = 5
    trace = generate_trace(3000, rate=50, delay=delay)
    for episode in trace.episodes:
        reads = [n for n in episode.notifies if n.kind == READ]
        if not reads:
            continue
        messages = [n.at for n in episode.notifies if n.kind == MESSAGE]
        assert len(reads) == 1
        assert max(messages) < reads[0].at <= min(messages) + delay - READ_SAFETY
        assert reads[0].unread == 0  # a read that cancels


def test_a_pushkeys_episodes_never_overlap() -> None:
    """A new episode on a pushkey starts only after the last one is over: its read landed, or
    its push fell due and the sender had time to take it (else messages would join it)."""
    trace = generate_trace(3000, rate=50, delay=5, pushkeys=200)
    busy_until: dict[int, float] = {}
    for episode in sorted(trace.episodes, key=lambda e: e.start):
        times = [n.at for n in episode.notifies]
        assert min(times) >= busy_until.get(episode.pushkey, 0.0)
        if episode.delivered:
            busy_until[episode.pushkey] = episode.due + DELIVERY_MARGIN
        else:
            busy_until[episode.pushkey] = max(times)
    assert len(busy_until) > 150  # spread over many pushkeys


def test_more_pushkeys_when_all_are_busy() -> None:
    trace = generate_trace(2000, rate=50, delay=25, pushkeys=10)
    assert trace.pushkeys > 10
    assert {e.pushkey for e in trace.episodes} == set(range(trace.pushkeys))


def test_trace_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="delay"):
        generate_trace(100, rate=50, delay=1)
    with pytest.raises(ValueError, match="positive"):
        generate_trace(0, rate=50, delay=5)


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.95) == 95.0
    assert percentile(values, 0.5) == 50.0
    assert percentile([3.0], 0.95) == 3.0
