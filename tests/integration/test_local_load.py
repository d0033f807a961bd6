"""What local mode changes in moto to hold a homeserver's load answers as moto (and AWS) would:
item results encoded directly, a Query reading its partition alone, finished executions
released with their names kept taken, and a function's Timeout enforced without a second push.
"""

from __future__ import annotations

import gc
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.dynamodb.models.dynamo_type import DynamoType, Item
from moto.stepfunctions.parser.models import stepfunctions_parser_backends

from mxpush_local.aws import ACCOUNT, CONCURRENT_INVOCATIONS, REGION, Functions
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


def test_a_plain_partition_query_answers_as_moto_would(
    gateway: LocalGateway, dynamodb: Any
) -> None:
    """The notify path's Query (partition key only, a Limit, either direction) is answered
    from the partition (`fast_query`); every other shape takes moto's way; both answer the
    same, errors included."""
    direct = gateway.aws._in_process_dynamodb
    assert direct is not None
    table = gateway.aws.table_name
    rid = f"test-fast-query-{uuid.uuid4().hex}"
    # Sort keys whose text order differs from insertion and numeric order.
    # (No "registration" or "b#" sort key: other tests' sweeps and listings read the table.)
    sort_keys = ["t#reg", "t#10", "t#9", "t#0100", "t#\u00e9t\u00e9", "T#upper", "t#", "u"]
    for n, sk in enumerate(sort_keys):
        item = {
            "rid": {"S": rid},
            "sk": {"S": sk},
            "n": {"N": str(n)},
            "ratio": {"N": "0.125"},
            "flag": {"BOOL": n % 2 == 0},
            "none": {"NULL": True},
            "tags": {"SS": ["a", f"t{n}"]},
            "nums": {"NS": ["1", str(n + 2)]},
            "refs": {"L": [{"M": {"e": {"S": f"$e{n}"}, "at": {"N": "1.5"}}}, {"S": "x"}]},
            "summary": {"M": {"body": {"S": "h\u00e9llo \u2603"}, "list": {"L": []}}},
        }
        dynamodb.put_item(TableName=table, Item=item)
    dynamodb.put_item(TableName=table, Item={"rid": {"S": rid + "-next"}, "sk": {"S": "t#"}})

    def query(**extra: Any) -> Callable[[], dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": table,
            "KeyConditionExpression": "rid = :r",
            "ExpressionAttributeValues": {":r": {"S": rid}},
            **extra,
        }
        return lambda: dynamodb.query(**kwargs)

    plain_shapes: list[dict[str, Any]] = [
        {},
        {"ScanIndexForward": False, "Limit": 3, "ConsistentRead": True},
        {"ScanIndexForward": True, "Limit": 1},
        {"Limit": len(sort_keys)},  # exactly all: no LastEvaluatedKey
        {"Limit": len(sort_keys) + 5},
        {
            "KeyConditionExpression": " #p=:r ",
            "ExpressionAttributeNames": {"#p": "rid"},
        },
        {"ExpressionAttributeValues": {":r": {"S": rid + "-absent"}}},  # an empty partition
    ]
    answers = []
    for extra in plain_shapes:
        before = direct.fast_queries
        answers.append(_same_as_moto(gateway, query(**extra)))
        assert direct.fast_queries == before + 1, extra
    everything, newest_three, first, exact, more, named, empty = answers
    assert [i["sk"]["S"] for i in everything["Items"]] == sorted(sort_keys)
    assert [i["sk"]["S"] for i in newest_three["Items"]] == sorted(sort_keys)[::-1][:3]
    assert newest_three["LastEvaluatedKey"] == {
        "rid": {"S": rid},
        "sk": {"S": sorted(sort_keys)[::-1][2]},
    }
    assert "LastEvaluatedKey" not in exact
    assert "LastEvaluatedKey" not in more
    assert (first["Count"], first["ScannedCount"]) == (1, 1)
    assert named["Items"] == everything["Items"]
    assert (empty["Items"], empty["Count"]) == ([], 0)

    other_shapes: list[dict[str, Any]] = [
        {"ReturnConsumedCapacity": "TOTAL"},
        {"Select": "COUNT"},
        {"ProjectionExpression": "sk, n"},
        {
            "FilterExpression": "n > :two",
            "ExpressionAttributeValues": {":r": {"S": rid}, ":two": {"N": "2"}},
        },
        {
            "KeyConditionExpression": "rid = :r AND sk > :b",
            "ExpressionAttributeValues": {":r": {"S": rid}, ":b": {"S": "t#5"}},
        },
        {"ExclusiveStartKey": {"rid": {"S": rid}, "sk": {"S": "t#10"}}},
    ]
    for extra in other_shapes:
        before = direct.fast_queries
        _same_as_moto(gateway, query(**extra))
        assert direct.fast_queries == before, extra
    # A binary value anywhere in the page: moto's way (botocore decodes it).
    dynamodb.put_item(
        TableName=table, Item={"rid": {"S": rid}, "sk": {"S": "zz"}, "blob": {"B": b"\x00\xff"}}
    )
    before = direct.fast_queries
    binary = _same_as_moto(gateway, query(ScanIndexForward=False))
    [blob] = [i["blob"] for i in binary["Items"] if "blob" in i]
    assert blob == {"B": b"\x00\xff"}
    assert direct.fast_queries == before

    # Answered or refused the same way both ways, and never by the fast path.
    refused: list[dict[str, Any]] = [
        {"ExpressionAttributeValues": {":r": {"S": rid}, ":unused": {"S": "x"}}},
        {"ExpressionAttributeNames": {"#unused": "sk"}},
        {"KeyConditionExpression": "sk = :r"},  # not the partition key
        {"ExpressionAttributeValues": {":r": {"N": "1"}}},  # the partition key is text
        {"TableName": "no-such-table"},
    ]
    for extra in refused:
        before = direct.fast_queries
        outcomes: list[Any] = []
        for as_is in (False, True):
            try:
                if as_is:
                    with gateway.aws.moto_as_is():
                        outcomes.append(_without_metadata(query(**extra)()))
                else:
                    outcomes.append(_without_metadata(query(**extra)()))
            except ClientError as error:
                outcomes.append(error.response["Error"])
        assert outcomes[0] == outcomes[1], extra
        assert direct.fast_queries == before


# Each case: an update, its condition (if any), names, more values, what it returns.
UPDATES: list[tuple[str, str | None, dict[str, str], dict[str, Any], str]] = [
    ("SET st = :s, v = v + :one", "st IN (:open, :waiting)", {}, {}, "ALL_NEW"),
    ("SET st = :s REMOVE claim", "st = :open AND claim = :tok", {}, {}, "ALL_OLD"),
    (
        "SET #m.#k = :map, refs = list_append(refs, :more)",
        None,
        {"#m": "m", "#k": "inner"},
        {},
        "UPDATED_NEW",
    ),
    ("SET refs[0].e = :s, n = if_not_exists(n, :one)", "size(refs) > :one", {}, {}, "UPDATED_OLD"),
    ("REMOVE refs[1], refs[0] ADD tags :tag, n :one", "attribute_exists(refs)", {}, {}, "ALL_NEW"),
    ("DELETE tags :tag SET #n = :one", "NOT (v BETWEEN :one AND :ten)", {"#n": "n"}, {}, "NONE"),
    ("SET v = v - :one", "begins_with(st, :s) OR contains(tags, :x)", {}, {}, "ALL_NEW"),
    ("SET st = :s", "st = :waiting", {}, {}, "ALL_NEW"),  # fails its condition
    ("SET st = :s", "attribute_not_exists(rid)", {}, {}, "ALL_NEW"),  # fails too
    ("SET gone.deeper = :s", None, {}, {}, "ALL_NEW"),  # a path that does not exist
    ("SET v = v + :s", None, {}, {}, "ALL_NEW"),  # a number plus a string
    # Refused by the validator's checks (each a walk of the expression tree):
    ("SET v = :one, v = :s", None, {}, {}, "NONE"),  # two actions on one path
    ("SET m.inner = :s REMOVE m", None, {}, {}, "NONE"),  # overlapping paths
    ("SET rid = :s", None, {}, {}, "NONE"),  # a key attribute
    ("SET v = :nowhere", None, {}, {}, "NONE"),  # a value not given
    # A name not given: moto fails (a KeyError in its validator), local mode answers 500.
    ("SET #nope = :s", None, {}, {}, "NONE"),
    ("SET status = :s", None, {}, {}, "NONE"),  # a reserved word
    ("SET v = size(:s)", None, {}, {}, "NONE"),  # a function not allowed there
]


@pytest.mark.parametrize("case", range(len(UPDATES)))
def test_updates_answer_as_moto_would_without_the_speedups(
    gateway: LocalGateway, dynamodb: Any, case: int
) -> None:
    """UpdateItem with local mode's faster copies and memoized lexing answers, fails and leaves
    the item exactly as moto's own code does."""
    update, condition, names, extra_values, returns = UPDATES[case]
    table = gateway.aws.table_name
    key = {"rid": {"S": f"test-update-{uuid.uuid4().hex}"}, "sk": {"S": "t#1"}}
    item = key | {
        "st": {"S": "open"},
        "v": {"N": "3"},
        "claim": {"S": "t0k"},
        "tags": {"SS": ["a", "b"]},
        "m": {"M": {"inner": {"L": [{"S": "x"}]}, "keep": {"NULL": True}}},
        "refs": {
            "L": [
                {"M": {"e": {"S": "$1"}, "at": {"N": "1.5"}, "r": {"BOOL": True}}},
                {"M": {"e": {"S": "$2"}, "nested": {"L": [{"N": "7"}, {"SS": ["q"]}]}}},
            ]
        },
    }
    values = {
        ":s": {"S": "sending"},
        ":one": {"N": "1"},
        ":open": {"S": "open"},
        ":waiting": {"S": "waiting"},
        ":tok": {"S": "t0k"},
        ":map": {"M": {"k": {"L": [{"S": "y"}, {"N": "2"}]}}},
        ":more": {"L": [{"M": {"e": {"S": "$3"}}}]},
        ":tag": {"SS": ["b", "c"]},
        ":x": {"S": "zzz"},
        ":ten": {"N": "10"},
        **extra_values,
    }
    used = {k: v for k, v in values.items() if k in update or (condition and k in condition)}
    kwargs: dict[str, Any] = {
        "TableName": table,
        "Key": key,
        "UpdateExpression": update,
        "ExpressionAttributeValues": used,
        "ReturnValues": returns,
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }
    if condition:
        kwargs["ConditionExpression"] = condition
    if names:
        kwargs["ExpressionAttributeNames"] = names

    def run() -> tuple[Any, Any]:
        dynamodb.put_item(TableName=table, Item=item)
        try:
            answer: Any = _without_metadata(dynamodb.update_item(**kwargs))
        except ClientError as error:
            answer = (error.response["Error"], error.response.get("Item"))
        return answer, dynamodb.get_item(TableName=table, Key=key, ConsistentRead=True)["Item"]

    fast = run()
    fast_again = run()  # the second time from the memoized lexer and parser
    with gateway.aws.moto_as_is():
        slow = run()
    assert fast == slow
    assert fast_again == slow


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


def test_unused_expression_placeholders_are_refused_as_dynamodb_does(
    gateway: LocalGateway, dynamodb: Any
) -> None:
    """DynamoDB refuses a name or value no expression of the request uses, in every operation;
    moto only in some (a Query with an unused value would pass here and fail on AWS). The suite's
    every request passes this check."""
    table = gateway.aws.table_name
    rid = f"test-unused-{uuid.uuid4().hex}"
    key = {"rid": {"S": rid}, "sk": {"S": "a"}}
    dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "1"}})
    n1, n2 = {"N": "1"}, {"N": "2"}
    refused: dict[str, Callable[[], Any]] = {
        "Query, a value": lambda: dynamodb.query(
            TableName=table,
            KeyConditionExpression="rid = :r",
            ExpressionAttributeValues={":r": {"S": rid}, ":spare": n1},
        ),
        "Query, a name": lambda: dynamodb.query(
            TableName=table,
            KeyConditionExpression="rid = :r",
            FilterExpression="v = :v",
            ExpressionAttributeNames={"#v": "v"},
            ExpressionAttributeValues={":r": {"S": rid}, ":v": n1},
        ),
        "PutItem": lambda: dynamodb.put_item(
            TableName=table,
            Item={**key, "v": n2},
            ConditionExpression="attribute_exists(rid)",
            ExpressionAttributeValues={":v": n1},
        ),
        "DeleteItem": lambda: dynamodb.delete_item(
            TableName=table,
            Key=key,
            ConditionExpression="v = :v",
            ExpressionAttributeValues={":v": n1, ":w": n2},
        ),
        "a transaction's condition check": lambda: dynamodb.transact_write_items(
            TransactItems=[
                {
                    "ConditionCheck": {
                        "TableName": table,
                        "Key": key,
                        "ConditionExpression": "attribute_exists(rid)",
                        "ExpressionAttributeValues": {":v": n1},
                    }
                },
                {"Put": {"TableName": table, "Item": {**key, "v": n2}}},
            ]
        ),
        "BatchGetItem": lambda: dynamodb.batch_get_item(
            RequestItems={
                table: {
                    "Keys": [key],
                    "ProjectionExpression": "v",
                    "ExpressionAttributeNames": {"#v": "v"},
                }
            }
        ),
    }
    for case, request in refused.items():
        with pytest.raises(ClientError) as caught:
            request()
        error = caught.value.response["Error"]
        assert error["Code"] == "ValidationException", case
        assert "unused in expressions" in error["Message"], case
    # Nothing changed; the same requests with every placeholder used are answered.
    item = dynamodb.get_item(TableName=table, Key=key)["Item"]
    assert item["v"] == n1
    found = dynamodb.query(
        TableName=table,
        KeyConditionExpression="#r = :r",
        FilterExpression="v = :v",
        ExpressionAttributeNames={"#r": "rid"},
        ExpressionAttributeValues={":r": {"S": rid}, ":v": n1},
    )
    assert found["Count"] == 1


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
    backend = stepfunctions_parser_backends[ACCOUNT][REGION]
    (execution,) = (
        e for machine in backend.state_machines for e in machine.executions if e.name == name
    )
    released = weakref.ref(execution)
    del execution
    gc.disable()  # freed by refcounting, not by a collection (local mode runs few)
    try:
        assert gateway.aws.release_finished_executions(older_than=0) >= 1
        assert released() is None
    finally:
        gc.enable()
    with pytest.raises(sfn.exceptions.ExecutionDoesNotExist):
        sfn.describe_execution(executionArn=arn)
    with pytest.raises(sfn.exceptions.ExecutionAlreadyExists):
        sfn.start_execution(
            stateMachineArn=gateway.aws.state_machine_arn,
            name=name,
            input='{"slot": 1000, "at": "1970-01-01T00:16:40Z"}',
        )


def test_the_items_a_read_copies_die_with_the_read(gateway: LocalGateway, dynamodb: Any) -> None:
    """moto lists every model object it makes for its dashboard (not served here): local mode
    keeps that list empty, so a read's copies are freed when the read ends, not at the next
    release pass (at 50/s ~500,000 objects were waiting for it)."""
    table = gateway.aws.table_name
    key = {"rid": {"S": f"test-untracked-{uuid.uuid4().hex}"}, "sk": {"S": "one"}}
    dynamodb.put_item(TableName=table, Item={**key, "n": {"N": "1"}})
    for _ in range(3):
        assert dynamodb.get_item(TableName=table, Key=key)["Item"]["n"] == {"N": "1"}
        with gateway.aws.moto_as_is():  # moto's own paths copy items too
            assert dynamodb.get_item(TableName=table, Key=key)["Item"]["n"] == {"N": "1"}
    assert len(vars(Item)["instances_tracked"]) == 0
    gc.disable()  # freed by refcounting
    try:
        item = Item(DynamoType({"S": "x"}), None, {"rid": {"S": "x"}})
        made = weakref.ref(item)
        del item
        assert made() is None
    finally:
        gc.enable()


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


class _Held(Exception):
    """What the held invocations end with (their handler never runs)."""


def test_background_invocations_of_a_function_wait_in_line_past_the_limit() -> None:
    functions = Functions(load_template(TEMPLATE).functions)
    release = threading.Event()
    lock = threading.Lock()
    running: list[int] = []
    most = [0]

    def hold(_event: dict[str, Any]) -> None:
        with lock:
            running.append(1)
            most[0] = max(most[0], len(running))
        release.wait(10)
        with lock:
            running.pop()
        raise _Held

    functions.before_invoke["GotifySenderFunction"] = hold
    ended: list[BaseException] = []

    def invoke() -> None:
        try:
            functions.invoke_with_deadline("GotifySenderFunction", {})
        except _Held as exc:
            ended.append(exc)

    callers = [threading.Thread(target=invoke) for _ in range(CONCURRENT_INVOCATIONS + 3)]
    for caller in callers:
        caller.start()
    wait_until(lambda: len(running) == CONCURRENT_INVOCATIONS)
    time.sleep(0.3)  # the others wait in line, not in the handler
    assert len(running) == CONCURRENT_INVOCATIONS
    release.set()
    for caller in callers:
        caller.join(10)
    assert len(ended) == CONCURRENT_INVOCATIONS + 3
    assert most[0] == CONCURRENT_INVOCATIONS


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


def test_background_work_steps_aside_while_a_request_is_answered(
    api: Api, gotify: FakeGotify, gateway: LocalGateway, dynamodb: Any
) -> None:
    """A DynamoDB call from a thread that answers no request (a sender's, say) waits while a
    notify is being answered, and goes on once it is answered."""
    pushkey = api.register(gotify, delay=600)
    in_handler = threading.Event()
    go_on = threading.Event()

    def hold(_event: dict[str, Any]) -> None:
        in_handler.set()
        go_on.wait(10)

    key = {"rid": {"S": f"test-priority-{uuid.uuid4().hex}"}, "sk": {"S": "a"}}
    background_done = threading.Event()

    def background_call() -> None:
        dynamodb.get_item(TableName=gateway.aws.table_name, Key=key)
        background_done.set()

    gateway.aws.functions.before_invoke["NotifyFunction"] = hold
    answers: list[Any] = []
    try:
        notifying = threading.Thread(
            target=lambda: answers.append(api.notify(synapse_body(DM, pushkey)))
        )
        notifying.start()
        assert in_handler.wait(10)
        threading.Thread(target=background_call, daemon=True).start()
        assert not background_done.wait(0.15)  # held while the notify is in flight
        go_on.set()
        notifying.join(10)
        assert background_done.wait(5)
    finally:
        go_on.set()
        gateway.aws.functions.before_invoke.pop("NotifyFunction")
    assert answers[0].status == 200
    assert answers[0].body == {"rejected": []}
