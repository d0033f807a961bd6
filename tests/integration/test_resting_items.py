"""Resting items (local/mxpush_local/resting.py): moto's items packed compact by the expiry
pass answer every operation exactly as the same items unpacked, reads leave them packed, the
sweep packs only what nobody touched since the last pass, expiry and the state journal work on
them, and they take a fraction of the memory. On tables of their own beside the session
gateway's."""

from __future__ import annotations

import copy
import gc
import pickle
import random
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.dynamodb.models import dynamodb_backends
from moto.dynamodb.models.dynamo_type import DynamoType, Item

from mxpush_local import cold, resting
from mxpush_local.aws import ACCOUNT, REGION
from mxpush_local.gateway import LocalGateway
from mxpush_local.resting import CompactItem
from mxpush_local.state import Journal
from mxpush_local.untracked import forget_model_instances

TTL = "expires_at"
FUTURE = str(int(time.time()) + 86400)

RICH: dict[str, Any] = {
    "s": {"S": 'héllo "quoted" \u2603 \U0001d11e'},
    "n": {"N": "12"},
    "f": {"N": "-0.25"},
    "big": {"N": "123456789012345678901234567890"},
    "b": {"B": b"\x00\xffbinary"},
    "t": {"BOOL": True},
    "no": {"BOOL": False},
    "z": {"NULL": True},
    "ss": {"SS": ["a", "ü"]},
    "ns": {"NS": ["1", "2.5"]},
    "bs": {"BS": [b"\x01", b"\x02\x03"]},
    "l": {
        "L": [
            {"S": "x"},
            {"N": "3"},
            {"M": {"k": {"BOOL": False}, "deep": {"L": [{"B": b"\x07"}, {"NULL": True}]}}},
            {"SS": ["q"]},
            {"L": []},
        ]
    },
    "m": {"M": {"a": {"S": "1"}, "ü": {"NS": ["7"]}, "e": {"M": {}}, "el": {"L": []}}},
    TTL: {"N": FUTURE},
}


def _items() -> list[dict[str, Any]]:
    items = []
    for n, sk in enumerate(["a", "b", "c", "d", "e"]):
        item = {"rid": {"S": "p"}, "sk": {"S": sk}, **copy.deepcopy(RICH)}
        item["n"] = {"N": str(n * 10)}
        if sk in ("b", "d"):
            item["owner"] = {"S": "alice"}
            item["created_at"] = {"N": str(100 + n)}
        items.append(item)
    items.append({"rid": {"S": "q"}, "sk": {"S": "a"}, "s": {"S": "other"}, TTL: {"N": FUTURE}})
    items.append({"rid": {"S": "r"}, "sk": {"S": "a"}})  # key attributes alone
    return items


def _key(rid: str, sk: str) -> dict[str, Any]:
    return {"rid": {"S": rid}, "sk": {"S": sk}}


@pytest.fixture(scope="module")
def table(gateway: LocalGateway) -> Iterator[str]:
    name = f"resting-{uuid.uuid4().hex[:8]}"
    client = create_test_table(name)
    yield name
    client.delete_table(TableName=name)


def create_test_table(name: str) -> Any:
    """A table like the gateway's (a sort key, an index on owner), its partitions able to keep
    items cold as the gateway's are (`cold.py`); returns the client."""
    client = boto3.client("dynamodb", region_name=REGION)
    client.create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": "rid", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "rid", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
            {"AttributeName": "owner", "AttributeType": "S"},
            {"AttributeName": "created_at", "AttributeType": "N"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "owner-index",
                "KeySchema": [
                    {"AttributeName": "owner", "KeyType": "HASH"},
                    {"AttributeName": "created_at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    _moto_table(name).items.default_factory = cold.Partition
    return client


@pytest.fixture
def client(gateway: LocalGateway) -> Any:
    return boto3.client("dynamodb", region_name=REGION)


def _moto_table(name: str) -> Any:
    return dynamodb_backends[ACCOUNT][REGION].get_table(name)


def _stored(name: str) -> dict[tuple[str, str], Any]:
    table = _moto_table(name)
    return {
        (item.hash_key.value, item.range_key.value): item
        for partition in table.items.values()
        for item in partition.values()
    }


def _packed(name: str) -> dict[tuple[str, str], bool]:
    return {
        key: isinstance(item, CompactItem) and item.packed for key, item in _stored(name).items()
    }


def _contents(name: str) -> dict[tuple[str, str], Any]:
    """Every item as moto would answer it (a read: packed items stay packed)."""
    return {key: item.to_json()["Attributes"] for key, item in sorted(_stored(name).items())}


def _reset(
    gateway: LocalGateway,
    client: Any,
    table: str,
    *,
    pack: bool,
    items: list[dict[str, Any]] | None = None,
) -> None:
    items = _items() if items is None else items
    with gateway.aws._dynamodb_lock:
        _moto_table(table).items.clear()
    for item in items:
        client.put_item(TableName=table, Item=item)
    if pack:
        assert gateway.aws.rest_items(table, now=True) == len(items)
        assert all(_packed(table).values())


def _outcome(call: Callable[[], dict[str, Any]]) -> Any:
    try:
        answer = call()
    except ClientError as error:
        answer = dict(error.response)
    answer.pop("ResponseMetadata", None)
    return answer


Operation = Callable[[Any, str], dict[str, Any]]

OPERATIONS: dict[str, Operation] = {
    "get": lambda c, t: c.get_item(TableName=t, Key=_key("p", "a")),
    "get-projection": lambda c, t: c.get_item(
        TableName=t,
        Key=_key("p", "b"),
        ProjectionExpression="m.#u, l[2].deep, s, ns",
        ExpressionAttributeNames={"#u": "ü"},
    ),
    "get-keys-only-item": lambda c, t: c.get_item(TableName=t, Key=_key("r", "a")),
    "get-missing": lambda c, t: c.get_item(TableName=t, Key=_key("p", "zz")),
    "query-forward": lambda c, t: c.query(
        TableName=t,
        KeyConditionExpression="rid = :r",
        ExpressionAttributeValues={":r": {"S": "p"}},
        ReturnConsumedCapacity="TOTAL",
    ),
    "query-backward-limit": lambda c, t: c.query(
        TableName=t,
        KeyConditionExpression="rid = :r",
        ExpressionAttributeValues={":r": {"S": "p"}},
        ScanIndexForward=False,
        Limit=2,
    ),
    "query-from-key": lambda c, t: c.query(
        TableName=t,
        KeyConditionExpression="rid = :r",
        ExpressionAttributeValues={":r": {"S": "p"}},
        ExclusiveStartKey=_key("p", "b"),
        Limit=2,
    ),
    "query-filter-projection": lambda c, t: c.query(
        TableName=t,
        KeyConditionExpression="rid = :r AND sk BETWEEN :a AND :d",
        FilterExpression="n > :n AND contains(ss, :u)",
        ProjectionExpression="sk, n, m.el, bs",
        ExpressionAttributeValues={
            ":r": {"S": "p"},
            ":a": {"S": "a"},
            ":d": {"S": "d"},
            ":n": {"N": "5"},
            ":u": {"S": "ü"},
        },
    ),
    "query-begins-with-count": lambda c, t: c.query(
        TableName=t,
        KeyConditionExpression="rid = :r AND begins_with(sk, :c)",
        ExpressionAttributeValues={":r": {"S": "p"}, ":c": {"S": "c"}},
        Select="COUNT",
    ),
    "query-index": lambda c, t: c.query(
        TableName=t,
        IndexName="owner-index",
        KeyConditionExpression="#o = :o",
        ExpressionAttributeNames={"#o": "owner"},
        ExpressionAttributeValues={":o": {"S": "alice"}},
        ScanIndexForward=False,
    ),
    "scan-filter": lambda c, t: c.scan(
        TableName=t,
        FilterExpression="attribute_exists(ss) AND t = :t",
        ExpressionAttributeValues={":t": {"BOOL": True}},
    ),
    "scan-limit": lambda c, t: c.scan(TableName=t, Limit=3),
    "batch-get": lambda c, t: c.batch_get_item(
        RequestItems={t: {"Keys": [_key("p", "c"), _key("q", "a"), _key("p", "zz")]}}
    ),
    "update-all-new": lambda c, t: c.update_item(
        TableName=t,
        Key=_key("p", "a"),
        UpdateExpression="SET n = n + :one, m.e.x = :x, l[1] = :x REMOVE s ADD ns :ns",
        ConditionExpression="attribute_exists(rid) AND t = :t",
        ExpressionAttributeValues={
            ":one": {"N": "1"},
            ":x": {"S": "new"},
            ":ns": {"NS": ["9"]},
            ":t": {"BOOL": True},
        },
        ReturnValues="ALL_NEW",
    ),
    "update-all-old": lambda c, t: c.update_item(
        TableName=t,
        Key=_key("p", "b"),
        UpdateExpression="SET l = list_append(l, :more) DELETE ss :a",
        ExpressionAttributeValues={":more": {"L": [{"B": b"\x09"}]}, ":a": {"SS": ["a"]}},
        ReturnValues="ALL_OLD",
    ),
    "update-updated-old": lambda c, t: c.update_item(
        TableName=t,
        Key=_key("p", "c"),
        UpdateExpression="SET z = :s, b = :b",
        ExpressionAttributeValues={":s": {"S": "now a string"}, ":b": {"B": b"\x01\x02"}},
        ReturnValues="UPDATED_OLD",
    ),
    "update-updated-new": lambda c, t: c.update_item(
        TableName=t,
        Key=_key("q", "a"),
        UpdateExpression="SET added = :m REMOVE s",
        ExpressionAttributeValues={":m": {"M": {"k": {"L": [{"N": "1"}]}}}},
        ReturnValues="UPDATED_NEW",
    ),
    "update-condition-fails": lambda c, t: c.update_item(
        TableName=t,
        Key=_key("p", "d"),
        UpdateExpression="SET n = :n",
        ConditionExpression="n < :n",
        ExpressionAttributeValues={":n": {"N": "1"}},
        ReturnValuesOnConditionCheckFailure="ALL_OLD",
    ),
    "delete-all-old": lambda c, t: c.delete_item(
        TableName=t,
        Key=_key("p", "e"),
        ConditionExpression="size(ss) = :two",
        ExpressionAttributeValues={":two": {"N": "2"}},
        ReturnValues="ALL_OLD",
    ),
    "delete-condition-fails": lambda c, t: c.delete_item(
        TableName=t,
        Key=_key("p", "e"),
        ConditionExpression="attribute_not_exists(rid)",
        ReturnValuesOnConditionCheckFailure="ALL_OLD",
    ),
    "put-all-old": lambda c, t: c.put_item(
        TableName=t,
        Item={**_key("p", "a"), "s": {"S": "replaced"}},
        ReturnValues="ALL_OLD",
    ),
    "transact": lambda c, t: c.transact_write_items(
        TransactItems=[
            {
                "Update": {
                    "TableName": t,
                    "Key": _key("p", "a"),
                    "UpdateExpression": "SET n = :n",
                    "ConditionExpression": "b = :b",
                    "ExpressionAttributeValues": {":n": {"N": "7"}, ":b": {"B": b"\x00\xffbinary"}},
                }
            },
            {
                "ConditionCheck": {
                    "TableName": t,
                    "Key": _key("p", "b"),
                    "ConditionExpression": "owner = :o",
                    "ExpressionAttributeValues": {":o": {"S": "alice"}},
                }
            },
            {"Delete": {"TableName": t, "Key": _key("q", "a")}},
            {"Put": {"TableName": t, "Item": {**_key("p", "f"), "t": {"BOOL": False}}}},
        ]
    ),
    "transact-fails": lambda c, t: c.transact_write_items(
        TransactItems=[
            {
                "Update": {
                    "TableName": t,
                    "Key": _key("p", "a"),
                    "UpdateExpression": "SET n = :n",
                    "ExpressionAttributeValues": {":n": {"N": "7"}},
                }
            },
            {
                "ConditionCheck": {
                    "TableName": t,
                    "Key": _key("p", "c"),
                    "ConditionExpression": "owner = :o",
                    "ExpressionAttributeValues": {":o": {"S": "alice"}},
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            },
        ]
    ),
}
# Reads moto answers from copies (Query and Scan) or through `to_json` / `describe_attrs`: the
# stored items stay packed.
READS_FROM_COPIES = frozenset(
    {
        "get",
        "get-projection",
        "get-keys-only-item",
        "get-missing",
        "query-forward",
        "query-backward-limit",
        "scan-filter",
        "scan-limit",
        "batch-get",
    }
)
# Reads where moto tests stored items' attributes (a sort-key condition, a start key, an
# index): it expands them, unchanged.
READS_IN_PLACE = frozenset(
    {"query-from-key", "query-filter-projection", "query-begins-with-count", "query-index"}
)


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_a_packed_item_answers_as_the_same_item_unpacked(
    gateway: LocalGateway, client: Any, table: str, name: str
) -> None:
    operation = OPERATIONS[name]
    _reset(gateway, client, table, pack=False)
    hot = _outcome(lambda: operation(client, table))
    hot_after = _contents(table)
    _reset(gateway, client, table, pack=True)
    packed = _outcome(lambda: operation(client, table))
    assert packed == hot
    assert _contents(table) == hot_after
    if name in READS_FROM_COPIES:
        assert all(_packed(table).values())
    if name == "query-index":
        # moto tests every item of the table for the index's keys: not packed items without.
        packed_now = _packed(table)
        assert [key for key, packed in packed_now.items() if not packed] == [("p", "b"), ("p", "d")]
    if name in READS_FROM_COPIES | READS_IN_PLACE:
        # What a read expanded did not change: packed again at the next pass.
        gateway.aws.rest_items(table)
        assert all(_packed(table).values())
    # Whatever the operation did, packing leaves the items exactly as they are.
    gateway.aws.rest_items(table, now=True)
    assert all(_packed(table).values())
    assert _contents(table) == hot_after


def test_the_sweep_packs_items_unchanged_since_the_last_pass(
    gateway: LocalGateway, client: Any, table: str
) -> None:
    _reset(gateway, client, table, pack=False)
    # New since the last pass: seen, not packed.
    assert gateway.aws.rest_items(table) == 0
    assert not any(_packed(table).values())
    client.update_item(
        TableName=table,
        Key=_key("p", "a"),
        UpdateExpression="SET n = :n",
        ExpressionAttributeValues={":n": {"N": "1"}},
    )
    client.put_item(TableName=table, Item={**_key("p", "b"), "s": {"S": "rewritten"}})
    client.get_item(TableName=table, Key=_key("p", "c"))  # a read changes nothing
    assert gateway.aws.rest_items(table) == len(_items()) - 2
    packed = _packed(table)
    assert not packed["p", "a"]
    assert not packed["p", "b"]
    assert sum(packed.values()) == len(_items()) - 2
    # Unchanged since: packed at the next pass.
    assert gateway.aws.rest_items(table) == 2
    assert all(_packed(table).values())
    # Updated in place: expanded, changed, left alone by one pass.
    client.update_item(
        TableName=table,
        Key=_key("p", "c"),
        UpdateExpression="SET n = :n",
        ConditionExpression="n = :old",
        ExpressionAttributeValues={":n": {"N": "2"}, ":old": {"N": "20"}},
    )
    assert not _packed(table)["p", "c"]
    assert gateway.aws.rest_items(table) == 0
    assert gateway.aws.rest_items(table) == 1
    assert client.get_item(TableName=table, Key=_key("p", "c"))["Item"]["n"] == {"N": "2"}
    # A condition that fails reads the item in place: unchanged, packed at the next pass, from
    # the blob it was expanded from.
    blob = _stored(table)["p", "d"]._blob
    with pytest.raises(client.exceptions.ConditionalCheckFailedException):
        client.update_item(
            TableName=table,
            Key=_key("p", "d"),
            UpdateExpression="SET n = :n",
            ConditionExpression="attribute_not_exists(rid)",
            ExpressionAttributeValues={":n": {"N": "2"}},
        )
    assert not _packed(table)["p", "d"]
    assert gateway.aws.rest_items(table) == 1
    assert _stored(table)["p", "d"]._blob is blob


def test_expiry_deletes_a_packed_item_past_its_ttl_without_expanding_the_others(
    gateway: LocalGateway, client: Any
) -> None:
    table = gateway.aws.table_name
    rid = f"test-resting-{uuid.uuid4().hex}"
    now = time.time()
    client.put_item(
        TableName=table, Item={**_key(rid, "old"), TTL: {"N": str(int(now) - 10)}, **RICH_NO_TTL}
    )
    client.put_item(
        TableName=table, Item={**_key(rid, "new"), TTL: {"N": str(int(now) + 600)}, **RICH_NO_TTL}
    )
    moto_table = _moto_table(table)
    assert gateway.aws.resting is not None
    with gateway.aws._dynamodb_lock:
        key = DynamoType({"S": rid})
        assert gateway.aws.resting.rest(moto_table, key, TTL, now=True) == 2
    assert gateway.aws.expire_items(now) >= 1
    partition = moto_table.items[DynamoType({"S": rid})]
    assert [item.range_key.value for item in partition.values()] == ["new"]
    assert all(isinstance(item, CompactItem) and item.packed for item in partition.values())
    assert "old" not in str(
        client.query(
            TableName=table,
            KeyConditionExpression="rid = :r",
            ExpressionAttributeValues={":r": {"S": rid}},
        )["Items"]
    )
    client.delete_item(TableName=table, Key=_key(rid, "new"))


RICH_NO_TTL = {name: value for name, value in RICH.items() if name != TTL}


def test_the_journal_records_and_reloads_packed_items(
    gateway: LocalGateway, client: Any, table: str, tmp_path: Path
) -> None:
    path = tmp_path / "state"
    # The journal cannot write binary values (moto's `to_json` leaves them bytes): none here.
    binary = ("b", "bs", "l")
    items = [{k: v for k, v in item.items() if k not in binary} for item in _items()]
    running = Journal(
        path, table_name=table, key_names=("rid", "sk"), ttl_attribute=TTL, region=REGION
    )
    running.load()
    running.compact_min_lines, running.compact_factor = 3, 1
    gateway.aws.journal = running
    try:
        _reset(gateway, client, table, pack=False, items=items)  # journaled as they are put
        gateway.aws.rest_items(table, now=True)
        client.update_item(
            TableName=table,
            Key=_key("p", "a"),
            UpdateExpression="SET n = :n",
            ExpressionAttributeValues={":n": {"N": "41"}},
        )
        # Enough writes to compact the running journal (from its file: packed items untouched).
        for n in range(4):
            client.put_item(TableName=table, Item={**_key("w", str(n)), "n": {"N": str(n)}})
        assert running.wait_compacted(timeout=30)
        assert running.compactions >= 1
        assert _packed(table)["p", "b"]
        before = _contents(table)
    finally:
        gateway.aws.journal = None
        running.close()
    with gateway.aws._dynamodb_lock:
        _moto_table(table).items.clear()
    reloaded = Journal(
        path, table_name=table, key_names=("rid", "sk"), ttl_attribute=TTL, region=REGION
    )
    gateway.aws.journal = reloaded
    try:
        gateway.aws._load_journal()
    finally:
        gateway.aws.journal = None
        reloaded.close()
    # Loaded, and packed at once.
    assert all(_packed(table).values())
    assert _contents(table) == before
    assert before["p", "a"]["n"] == {"N": "41"}


def _is_packed(item: CompactItem) -> bool:
    return item.packed


def test_copies_and_pickles_of_a_packed_item_are_the_item() -> None:
    attrs = {"rid": {"S": "k"}, "sk": {"S": "s"}, **RICH}
    plain = Item(DynamoType({"S": "k"}), DynamoType({"S": "s"}), attrs)
    compact = resting._adopt(copy.deepcopy(plain), plain.hash_key, plain.range_key)
    compact.pack(compact.encode("rid", "sk"), 0, TTL)
    assert compact.packed
    assert compact.size() == plain.size()
    assert compact.to_json() == plain.to_json()
    assert compact == plain
    assert resting.expiry(compact, TTL) == float(FUTURE)
    assert resting.attributes(compact) == plain.attrs
    assert resting.attributes(plain) is plain.attrs
    assert compact.packed
    copied = copy.deepcopy(compact)
    assert copied.packed and copied == plain and compact.packed
    assert pickle.loads(pickle.dumps(compact)) == plain  # noqa: S301 - made just above
    assert compact.packed
    # In place use expands it, into moto's own objects.
    assert compact.attrs == plain.attrs
    assert not _is_packed(compact)
    assert type(compact.attrs["m"].value["a"]) is DynamoType
    assert compact.to_json() == plain.to_json()


def test_an_item_with_a_value_marshal_cannot_keep_stays_hot() -> None:
    odd = Item(DynamoType({"S": "k"}), DynamoType({"S": "s"}), {"rid": {"S": "k"}})
    odd.attrs["n"] = DynamoType({"N": "1"})
    odd.attrs["n"].value = Decimal(1)  # nothing in moto makes one; if it did
    table = SimpleNamespace(
        items={odd.hash_key: {odd.range_key: odd}}, hash_key_attr="rid", range_key_attr="sk"
    )
    sweeper = resting.Sweeper()
    assert sweeper.rest(table, odd.hash_key, TTL, now=True) == 0
    kept = table.items[odd.hash_key][odd.range_key]
    assert isinstance(kept, CompactItem)
    assert not kept.packed
    assert kept.attrs["n"].value == Decimal(1)


def _hexid(rng: random.Random, length: int) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(length))


def _batch_like(rng: random.Random, n: int, rid: str) -> dict[str, Any]:
    """The shape of a finished batch (the delivery-log record), with varied ids and text."""

    def hexid(length: int) -> str:
        return _hexid(rng, length)

    room = "!" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyzABCDEF_") for _ in range(18))
    room += ":example.org"
    created = 1_796_163_088.0 + n
    event = "$" + hexid(43)
    return {
        "rid": {"S": rid},
        "sk": {"S": f"b#{int(created * 1000):013d}#{hexid(8)}"},
        "bid": {"S": hexid(40)},
        "st": {"S": "delivered"},
        "backend": {"S": "gotify"},
        "due": {"N": str(int(created) + 2)},
        "n": {"N": "1"},
        "created": {"N": f"{created:.6f}"},
        "v": {"N": "2"},
        "refs": {"L": [{"L": [{"S": event}, {"S": room}, {"N": str(int(created * 1000))}]}]},
        "keys": {"L": [{"S": hexid(16)}]},
        "latest": {
            "M": {
                "event_id": {"S": event},
                "room_id": {"S": room},
                "type": {"S": "m.room.message"},
                "sender": {"S": f"@user{rng.randrange(1000)}:example.org"},
                "sender_name": {"S": f"User {rng.randrange(1000)}"},
                "room_name": {"S": f"Room {rng.randrange(100)}"},
                "prio": {"S": "high"},
                "unread": {"N": str(rng.randrange(50))},
                "msgtype": {"S": "m.text"},
                "body": {"S": " ".join(rng.choice(WORDS) for _ in range(rng.randrange(3, 15)))},
            }
        },
        "unread": {"N": str(rng.randrange(50))},
        TTL: {"N": str(int(created) + 7 * 86400)},
        "rooms": {"L": [{"S": room}]},
        "claimed": {"N": f"{created + 2:.6f}"},
        "at": {"N": f"{created + 2.05:.6f}"},
        "ref": {"S": str(rng.randrange(1000))},
    }


def _due_like(rng: random.Random, n: int) -> dict[str, Any]:
    created = 1_796_163_088 + n // 8
    return {
        "rid": {"S": f"due#{created}#{n % 4}"},
        "sk": {"S": f"{_hexid(rng, 64)}|b#{created * 1000:013d}#{_hexid(rng, 8)}"},
        "backend": {"S": "gotify"},
        TTL: {"N": str(created + 2 * 86400)},
    }


WORDS = [
    "hello",
    "are",
    "you",
    "there",
    "tonight",
    "meeting",
    "lunch",
    "see",
    "the",
    "new",
    "release",
    "🎉",
    "ok",
    "thanks",
]
# Measured (tracemalloc, everything the table holds for them: Item, attributes, keys, partition
# dicts, shape dictionaries): ~4.4 KB per batch as moto keeps it, ~0.63 KB packed; a due entry
# (two per partition here) ~0.96 KB, ~0.5 KB. The bounds leave a margin for allocator noise,
# and fail without packing.
MAX_PACKED_BATCH_BYTES = 800
MAX_PACKED_DUE_BYTES = 650


def _footprint(
    gateway: LocalGateway, table: str, items: list[dict[str, Any]]
) -> tuple[float, float, float]:
    """Bytes per item as moto keeps them, then packed, then cold (`cold.py`). The DynamoDB lock
    is held throughout: the session's other threads allocate less meanwhile (tracemalloc sees
    the whole process)."""
    moto_table = _moto_table(table)
    with gateway.aws._dynamodb_lock:
        moto_table.items.clear()
        forget_model_instances()  # moto's list of every Item it made (its dashboard) keeps none
        gc.collect()
        tracemalloc.start()
        try:
            start = tracemalloc.get_traced_memory()[0]
            for item in items:
                moto_table.put_item(item)
            gc.collect()
            hot = (tracemalloc.get_traced_memory()[0] - start) / len(items)
            assert gateway.aws.rest_items(table) == 0
            assert gateway.aws.rest_items(table) == len(items)
            gc.collect()
            packed = (tracemalloc.get_traced_memory()[0] - start) / len(items)
            gateway.aws.rest_items(table, now=True)  # packed and read by nobody: all cold
            gc.collect()
            cold_bytes = (tracemalloc.get_traced_memory()[0] - start) / len(items)
        finally:
            tracemalloc.stop()
            moto_table.items.clear()
    return hot, packed, cold_bytes


def test_idle_items_take_a_fraction_of_the_memory_once_packed(
    gateway: LocalGateway, table: str
) -> None:
    rng = random.Random(9)  # noqa: S311 - test data
    pushkeys = [_hexid(rng, 64) for _ in range(60)]
    batches = [_batch_like(rng, n, pushkeys[n % len(pushkeys)]) for n in range(1800)]
    hot, packed, _ = _footprint(gateway, table, batches)
    print(f"per batch: {hot:.0f} bytes as moto keeps it, {packed:.0f} packed")
    assert hot > 4 * MAX_PACKED_BATCH_BYTES
    assert packed < MAX_PACKED_BATCH_BYTES
    hot, packed, _ = _footprint(gateway, table, [_due_like(rng, n) for n in range(1800)])
    print(f"per due entry: {hot:.0f} bytes as moto keeps it, {packed:.0f} packed")
    assert hot > MAX_PACKED_DUE_BYTES
    assert packed < MAX_PACKED_DUE_BYTES
