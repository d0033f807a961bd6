"""What local mode changes in moto to hold a homeserver's load answers as moto (and AWS) would:
item results encoded directly, a Query reading its partition alone, finished executions
released with their names kept taken, and a function's Timeout enforced without a second push.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from mxpush_local.gateway import TEMPLATE, LocalGateway
from mxpush_local.template import load_template
from tests.conftest import Api, synapse_body, wait_until
from tests.fakes.gotify import FakeGotify
from tests.fakes.server import Reply

DM = "message_dm_2_members.1.full"


def _without_metadata(answer: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in answer.items() if key != "ResponseMetadata"}


def _same_as_moto(gateway: LocalGateway, call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    direct = gateway.aws._in_process_dynamodb
    assert direct is not None
    answered = direct.answered
    fast = _without_metadata(call())
    # The fast answer came from the in-process path (not moto's stub), the slow one did not.
    assert direct.answered == answered + 1
    with gateway.aws.moto_as_is():
        slow = _without_metadata(call())
    assert direct.answered == answered + 1
    assert fast == slow
    return fast


@pytest.fixture
def dynamodb(gateway: LocalGateway) -> Any:
    return boto3.client("dynamodb", region_name="us-east-1")


def test_item_operations_answer_as_motos_serializer_would(
    gateway: LocalGateway, dynamodb: Any
) -> None:
    table = gateway.aws.table_name
    rid = f"test-encoding-{uuid.uuid4().hex}"
    item = {
        "rid": {"S": rid},
        "sk": {"S": "a"},
        "text": {"S": 'héllo "quoted" \u2603'},
        "count": {"N": "12"},
        "ratio": {"N": "0.25"},
        "flag": {"BOOL": True},
        "nothing": {"NULL": True},
        "blob": {"B": b"\x00\x01binary"},
        "names": {"SS": ["a", "b"]},
        "numbers": {"NS": ["1", "2.5"]},
        "nested": {"M": {"list": {"L": [{"S": "x"}, {"N": "3"}, {"M": {"k": {"BOOL": False}}}]}}},
    }
    key = {"rid": {"S": rid}, "sk": {"S": "a"}}
    dynamodb.put_item(TableName=table, Item=item)
    put = _same_as_moto(
        gateway, lambda: dynamodb.put_item(TableName=table, Item=item, ReturnValues="ALL_OLD")
    )
    assert put["Attributes"]["blob"] == {"B": b"\x00\x01binary"}
    # Without binary values (the in-process path then skips botocore's parser).
    plain = {k: v for k, v in item.items() if k != "blob"} | {"sk": {"S": "plain"}}
    dynamodb.put_item(TableName=table, Item=plain)
    got_plain = _same_as_moto(
        gateway,
        lambda: dynamodb.get_item(
            TableName=table, Key={**key, "sk": {"S": "plain"}}, ReturnConsumedCapacity="TOTAL"
        ),
    )
    assert got_plain["Item"] == plain
    assert got_plain["ConsumedCapacity"]["CapacityUnits"] == 0.5
    got = _same_as_moto(gateway, lambda: dynamodb.get_item(TableName=table, Key=key))
    assert got["Item"]["nested"] == item["nested"]
    assert (
        _same_as_moto(
            gateway, lambda: dynamodb.get_item(TableName=table, Key={**key, "sk": {"S": "none"}})
        )
        == {}
    )
    _same_as_moto(
        gateway,
        lambda: dynamodb.update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET #c = :c",
            ExpressionAttributeNames={"#c": "count"},
            ExpressionAttributeValues={":c": {"N": "12"}},
            ReturnValues="ALL_NEW",
        ),
    )
    _same_as_moto(
        gateway,
        lambda: dynamodb.batch_get_item(RequestItems={table: {"Keys": [key]}}),
    )
    _same_as_moto(
        gateway,
        lambda: dynamodb.query(
            TableName=table,
            KeyConditionExpression="rid = :r",
            ExpressionAttributeValues={":r": {"S": rid}},
            ReturnConsumedCapacity="TOTAL",
        ),
    )
    with pytest.raises(dynamodb.exceptions.ConditionalCheckFailedException):
        dynamodb.put_item(
            TableName=table, Item=item, ConditionExpression="attribute_not_exists(rid)"
        )


def test_a_query_reads_its_partition_as_moto_would(gateway: LocalGateway, dynamodb: Any) -> None:
    table = gateway.aws.table_name
    rid = f"test-query-{uuid.uuid4().hex}"
    for n in range(7):
        dynamodb.put_item(
            TableName=table,
            Item={"rid": {"S": rid}, "sk": {"S": f"b#{n:02d}"}, "n": {"N": str(n)}},
        )
    dynamodb.put_item(TableName=table, Item={"rid": {"S": rid + "-other"}, "sk": {"S": "b#00"}})

    def pages(**extra: Any) -> list[dict[str, Any]]:
        answers = []
        kwargs: dict[str, Any] = {
            "TableName": table,
            "KeyConditionExpression": "rid = :r AND begins_with(sk, :p)",
            "ExpressionAttributeValues": {":r": {"S": rid}, ":p": {"S": "b#"}},
            "ConsistentRead": True,
            "Limit": 3,
            **extra,
        }
        while True:
            answer = _without_metadata(dynamodb.query(**kwargs))
            answers.append(answer)
            if "LastEvaluatedKey" not in answer:
                return answers
            kwargs["ExclusiveStartKey"] = answer["LastEvaluatedKey"]

    for extra in ({}, {"ScanIndexForward": False}):
        fast = pages(**extra)
        with gateway.aws.moto_as_is():
            slow = pages(**extra)
        assert fast == slow
        assert sum(page["Count"] for page in fast) == 7
    nothing = dynamodb.query(
        TableName=table,
        KeyConditionExpression="rid = :r",
        ExpressionAttributeValues={":r": {"S": rid + "-absent"}},
    )
    assert nothing["Items"] == []


def test_errors_answer_as_moto_would(gateway: LocalGateway, dynamodb: Any) -> None:
    """A failed condition (with the old item), a malformed expression, an oversized one and a
    missing table fail the same way on the in-process path as through moto's stub."""
    table = gateway.aws.table_name
    rid = f"test-errors-{uuid.uuid4().hex}"
    key = {"rid": {"S": rid}, "sk": {"S": "a"}}
    dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "1"}, "b": {"B": b"\x00\xff"}})
    requests: list[Callable[[], Any]] = [
        lambda: dynamodb.update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET v = :n",
            ConditionExpression="v = :v",
            ExpressionAttributeValues={":n": {"N": "3"}, ":v": {"N": "2"}},
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        ),
        lambda: dynamodb.update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET = :n",
            ExpressionAttributeValues={":n": {"N": "3"}},
        ),
        lambda: dynamodb.update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET v = :n" + ", v = :n" * 700,
            ExpressionAttributeValues={":n": {"N": "3"}},
        ),
        lambda: dynamodb.get_item(TableName=table + "-absent", Key=key),
    ]
    codes = []
    for request in requests:
        answers = []
        for as_is in (False, True):
            with pytest.raises(ClientError) as caught:
                if as_is:
                    with gateway.aws.moto_as_is():
                        request()
                else:
                    request()
            answers.append(_without_metadata(dict(caught.value.response)))
        assert answers[0] == answers[1]
        codes.append(answers[0]["Error"]["Code"])
    assert codes == [
        "ConditionalCheckFailedException",
        "ValidationException",
        "ValidationException",
        "ResourceNotFoundException",
    ]


def test_a_released_execution_is_gone_and_its_name_stays_taken(
    gateway: LocalGateway, sfn: Any
) -> None:
    """A slot long past: its execution runs at once and finds nothing due."""
    name = f"test-release-{uuid.uuid4().hex[:12]}"
    arn = sfn.start_execution(
        stateMachineArn=gateway.aws.state_machine_arn,
        name=name,
        input='{"slot": 1000, "at": "1970-01-01T00:16:40Z"}',
    )["executionArn"]
    wait_until(lambda: sfn.describe_execution(executionArn=arn)["status"] != "RUNNING")
    gateway.aws.release_finished_executions(older_than=3600)
    sfn.describe_execution(executionArn=arn)  # recent: kept
    assert gateway.aws.release_finished_executions(older_than=0) >= 1
    with pytest.raises(sfn.exceptions.ExecutionDoesNotExist):
        sfn.describe_execution(executionArn=arn)
    with pytest.raises(sfn.exceptions.ExecutionAlreadyExists):
        sfn.start_execution(
            stateMachineArn=gateway.aws.state_machine_arn,
            name=name,
            input='{"slot": 1000, "at": "1970-01-01T00:16:40Z"}',
        )


def test_a_sender_past_its_timeout_fails_and_the_push_is_made_once(
    api: Api, gotify: FakeGotify, gateway: LocalGateway
) -> None:
    """The invocation fails at its Timeout and Lambda retries it; the late first attempt still
    pushes (a thread cannot be frozen), and the retries find its claim: one push."""
    attempts: list[float] = []
    gateway.aws.functions.timeouts["GotifySenderFunction"] = 0.5
    gateway.aws.functions.before_invoke["GotifySenderFunction"] = lambda _event: attempts.append(
        time.monotonic()
    )
    # The first push outlasts the function's timeout (and stays inside OutboundHttp's).
    gotify.queue(Reply(200, {"id": 1, "appid": 1, "message": "m", "priority": 6}, delay=1.5))
    try:
        pushkey = api.register(gotify, delay=0)
        api.notify(synapse_body(DM, pushkey))
        wait_until(lambda: len(attempts) >= 2, timeout=10)  # timed out, so Lambda retried
        time.sleep(4)  # past the second retry (after 1 s and 2 s) and the late push
    finally:
        gateway.aws.functions.timeouts.pop("GotifySenderFunction")
        gateway.aws.functions.before_invoke.pop("GotifySenderFunction")
    assert len(gotify.requests) == 1
    assert [entry["outcome"] for entry in api.deliveries(pushkey)] == ["delivered"]


def test_items_past_their_ttl_are_deleted_as_dynamodb_would(
    gateway: LocalGateway, dynamodb: Any
) -> None:
    """moto never expires items; a local run of days would keep every log record."""
    table = gateway.aws.table_name
    rid = f"test-ttl-{uuid.uuid4().hex}"
    now = time.time()
    expires = {
        "past": {"N": str(int(now) - 10)},
        "future": {"N": str(int(now) + 3600)},
        "ancient": {"N": str(int(now) - 6 * 365 * 24 * 3600)},  # TTL ignores these
        "text": {"S": str(int(now) - 10)},  # and values that are not numbers
    }
    for sk, value in expires.items():
        dynamodb.put_item(
            TableName=table, Item={"rid": {"S": rid}, "sk": {"S": sk}, "expires_at": value}
        )
    dynamodb.put_item(
        TableName=table,
        Item={"rid": {"S": rid + "-gone"}, "sk": {"S": "only"}, "expires_at": expires["past"]},
    )

    assert gateway.aws.expire_items(now) >= 2

    left = dynamodb.query(
        TableName=table,
        KeyConditionExpression="rid = :r",
        ExpressionAttributeValues={":r": {"S": rid}},
    )["Items"]
    assert sorted(item["sk"]["S"] for item in left) == ["ancient", "future", "text"]
    gone = dynamodb.get_item(
        TableName=table, Key={"rid": {"S": rid + "-gone"}, "sk": {"S": "only"}}
    )
    assert "Item" not in gone


def test_each_function_runs_within_the_timeout_the_template_gives_it() -> None:
    functions = load_template(TEMPLATE).functions
    assert functions["GotifySenderFunction"].timeout == 30  # its own Timeout
    assert functions["NotifyFunction"].timeout == 15  # the Globals' one
    # Every sender gives up on a backend (OutboundHttp: 5 s connect, 10 s read) well before.
    senders = [spec for name, spec in functions.items() if name.endswith("SenderFunction")]
    assert senders
    assert all(spec.timeout >= 30 for spec in senders)


def test_memoized_parsing_fails_and_succeeds_as_before(
    gateway: LocalGateway, dynamodb: Any
) -> None:
    """The same UpdateExpression string, parsed once, serves calls with other values; a bad
    expression fails every time (a failure is not remembered as an answer)."""
    table = gateway.aws.table_name
    key = {"rid": {"S": f"test-memo-{uuid.uuid4().hex}"}, "sk": {"S": "a"}}
    for n in range(3):
        dynamodb.update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET n = :n ADD c :one",
            ExpressionAttributeValues={":n": {"N": str(n)}, ":one": {"N": "1"}},
        )
    item = dynamodb.get_item(TableName=table, Key=key)["Item"]
    assert (item["n"], item["c"]) == ({"N": "2"}, {"N": "3"})
    for _ in range(2):
        with pytest.raises(ClientError) as caught:
            dynamodb.update_item(
                TableName=table,
                Key=key,
                UpdateExpression="SET n = = :n",
                ExpressionAttributeValues={":n": {"N": "1"}},
            )
        assert caught.value.response["Error"]["Code"] == "ValidationException"
