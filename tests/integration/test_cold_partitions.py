"""Cold partitions (`local/mxpush_local/cold.py`): a partition's idle packed items kept as a few
compressed chunks answer every DynamoDB request exactly as the items did; the notify path's
Query, the expiry pass and index Queries read them without thawing when they can; they take a
fraction of a packed item's memory."""

from __future__ import annotations

import copy
import pickle
import random
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.dynamodb.models.dynamo_type import DynamoType

from mxpush_local import cold
from mxpush_local.aws import REGION
from mxpush_local.gateway import LocalGateway
from tests.integration.test_resting_items import (
    OPERATIONS,
    TTL,
    _batch_like,
    _contents,
    _due_like,
    _footprint,
    _hexid,
    _key,
    _moto_table,
    _outcome,
    _reset,
    create_test_table,
)


@pytest.fixture(scope="module")
def table(gateway: LocalGateway) -> Iterator[str]:
    name = f"cold-{uuid.uuid4().hex[:8]}"
    client = create_test_table(name)
    yield name
    client.delete_table(TableName=name)


@pytest.fixture
def client(gateway: LocalGateway) -> Any:
    return boto3.client("dynamodb", region_name=REGION)


def _partitions(name: str) -> dict[str, cold.Partition]:
    table = _moto_table(name)
    return {key.value: partition for key, partition in list(table.items.items())}


def _freeze_all(gateway: LocalGateway, name: str, *, touched: bool = False) -> int:
    """Every partition's packed items cold (`touched`: as if read since the last pass)."""
    table = _moto_table(name)
    frozen = 0
    with gateway.aws._dynamodb_lock:
        for key, partition in list(table.items.items()):
            partition.touched = touched
            frozen += cold.freeze(partition, key)
    return frozen


def _query(client: Any, name: str, rid: str, **extra: Any) -> dict[str, Any]:
    answer = client.query(
        TableName=name,
        KeyConditionExpression="rid = :r",
        ExpressionAttributeValues={":r": {"S": rid}},
        **extra,
    )
    answer.pop("ResponseMetadata", None)
    return dict(answer)


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_a_cold_partition_answers_as_its_items_warm(
    gateway: LocalGateway, client: Any, table: str, name: str
) -> None:
    operation = OPERATIONS[name]
    _reset(gateway, client, table, pack=False)
    warm = _outcome(lambda: operation(client, table))
    warm_after = _contents(table)
    _reset(gateway, client, table, pack=True)
    items = sum(len(p) for p in _partitions(table).values())
    assert _freeze_all(gateway, table) == items
    assert all(p.cold == len(p) for p in _partitions(table).values())

    assert _outcome(lambda: operation(client, table)) == warm
    assert _contents(table) == warm_after


def _pushkey_partition(
    gateway: LocalGateway, client: Any, table: str, count: int, seed: int
) -> tuple[str, list[dict[str, Any]]]:
    """The table holding one pushkey's partition alone, packed: `count` delivery-log records and
    its registration (whose sort key, `registration`, sorts after every `b#...`)."""
    rng = random.Random(seed)  # noqa: S311 - test data
    rid = _hexid(rng, 64)
    items = [_batch_like(rng, n, rid) for n in range(count)]
    items.append({**_key(rid, "registration"), "owner": {"S": "@bob:example.org"}})
    _reset(gateway, client, table, pack=True, items=items)
    return rid, items


def test_the_notify_paths_query_is_answered_from_the_newest_warm_items(
    gateway: LocalGateway, client: Any, table: str
) -> None:
    rid, _ = _pushkey_partition(gateway, client, table, 40, seed=3)
    newest = {"ScanIndexForward": False, "Limit": 9}
    expected_newest = _query(client, table, rid, **newest)
    expected_all = _query(client, table, rid)
    # Read since the last pass: the newest KEEP_WARM stay warm.
    assert _freeze_all(gateway, table, touched=True) == 41 - cold.KEEP_WARM
    partition = _partitions(table)[rid]

    assert _query(client, table, rid, **newest) == expected_newest
    assert partition.cold == 41 - cold.KEEP_WARM  # answered without thawing
    assert partition.touched
    # Anything else reads the whole partition: thawed, the same answer.
    assert _query(client, table, rid) == expected_all
    assert partition.cold == 0
    assert len(partition) == 41


def test_a_write_or_delete_of_a_cold_item_acts_on_it(
    gateway: LocalGateway, client: Any, table: str
) -> None:
    rid, items = _pushkey_partition(gateway, client, table, 12, seed=4)
    assert _freeze_all(gateway, table) == 13
    replaced, deleted = items[3], items[5]
    client.put_item(TableName=table, Item={**_key(rid, replaced["sk"]["S"]), "s": {"S": "new"}})
    partition = _partitions(table)[rid]
    assert partition.cold == 12  # that item alone left the cold ones, and was written over
    client.delete_item(TableName=table, Key=_key(rid, deleted["sk"]["S"]))
    assert partition.cold == 11
    gateway.aws.rest_items(table, now=True)
    assert partition.cold == 12

    answer = _query(client, table, rid)
    keys = [item["sk"]["S"] for item in answer["Items"]]
    assert answer["Count"] == 12
    assert keys == sorted(item["sk"]["S"] for item in items if item is not deleted)
    [written] = [item for item in answer["Items"] if item["sk"] == replaced["sk"]]
    assert written == {**_key(rid, replaced["sk"]["S"]), "s": {"S": "new"}}
    got = client.get_item(TableName=table, Key=_key(rid, deleted["sk"]["S"]))
    assert "Item" not in got
    # A key outside the cold keys' range is looked up without thawing.
    _freeze_all(gateway, table)
    assert "Item" not in client.get_item(TableName=table, Key=_key(rid, "zzz"))
    assert _partitions(table)[rid].cold == 12


def test_a_lookup_of_one_cold_item_revives_it_alone(
    gateway: LocalGateway, client: Any, table: str
) -> None:
    rid, items = _pushkey_partition(gateway, client, table, 30, seed=7)

    def get(sk: str) -> dict[str, Any]:
        return dict(client.get_item(TableName=table, Key=_key(rid, sk)).get("Item") or {})

    expected = {item["sk"]["S"]: get(item["sk"]["S"]) for item in items[:3]}
    assert _freeze_all(gateway, table) == 31
    partition = _partitions(table)[rid]

    for n, (sk, answer) in enumerate(expected.items(), start=1):
        assert get(sk) == answer != {}
        assert partition.cold == 31 - n
    # A key within the cold keys' range that no item has: looked for, nothing revived.
    missing = items[0]["sk"]["S"] + "0"
    assert get(missing) == {}
    assert partition.cold == 28
    assert len(partition) == 31
    # The revived ones are warm again (packed): the next pass makes them cold.
    gateway.aws.rest_items(table, now=True)
    assert partition.cold == 31


def test_the_expiry_pass_thaws_a_partition_only_once_a_cold_item_is_due(
    gateway: LocalGateway, client: Any
) -> None:
    table = gateway.aws.table_name
    rid = f"test-cold-{uuid.uuid4().hex}"
    now = time.time()
    for n in range(10):
        expires = now + (30 if n < 3 else 3600)
        client.put_item(TableName=table, Item={**_key(rid, f"b#{n:02d}"), TTL: {"N": str(expires)}})
    key = DynamoType({"S": rid})
    moto_table = _moto_table(table)
    with gateway.aws._dynamodb_lock:
        assert gateway.aws.resting is not None
        assert gateway.aws.resting.rest(moto_table, key, TTL, now=True) == 10
        partition = moto_table.items[key]
        partition.touched = False
        assert cold.freeze(partition, key) == 10
    assert partition.cold_expiry == pytest.approx(now + 30)

    gateway.aws.expire_items(now + 10)
    assert partition.cold == 10  # nothing due: not thawed, still cold
    gateway.aws.expire_items(now + 60)
    assert partition.cold == 7  # thawed, three deleted, the rest cold again
    answer = _query(client, table, rid)
    assert [item["sk"]["S"] for item in answer["Items"]] == [f"b#{n:02d}" for n in range(3, 10)]
    for n in range(3, 10):
        client.delete_item(TableName=table, Key=_key(rid, f"b#{n:02d}"))


def test_an_index_query_thaws_only_partitions_whose_cold_items_may_match(
    gateway: LocalGateway, client: Any, table: str
) -> None:
    rng = random.Random(5)  # noqa: S311 - test data
    owned = _hexid(rng, 64)
    plain = _hexid(rng, 64)
    items = [
        {**_key(owned, "a"), "owner": {"S": "carol"}, "created_at": {"N": "5"}},
        *[_batch_like(rng, n, plain) for n in range(10)],
    ]
    _reset(gateway, client, table, pack=True, items=items)
    expected = client.query(
        TableName=table,
        IndexName="owner-index",
        KeyConditionExpression="#o = :o",
        ExpressionAttributeNames={"#o": "owner"},
        ExpressionAttributeValues={":o": {"S": "carol"}},
    )["Items"]
    gateway.aws.rest_items(table, now=True)  # (that Query expanded the item it read in place)
    partitions = _partitions(table)
    assert partitions[plain].cold == 10
    assert partitions[owned].cold == 1

    found = client.query(
        TableName=table,
        IndexName="owner-index",
        KeyConditionExpression="#o = :o",
        ExpressionAttributeNames={"#o": "owner"},
        ExpressionAttributeValues={":o": {"S": "carol"}},
    )["Items"]
    assert found == expected
    assert partitions[plain].cold == 10  # its items' shape lacks the index's keys
    assert partitions[owned].cold == 0


def test_copies_of_a_cold_partition_hold_the_same_items(
    gateway: LocalGateway, client: Any, table: str
) -> None:
    rid, _ = _pushkey_partition(gateway, client, table, 10, seed=6)
    _freeze_all(gateway, table)
    partition = _partitions(table)[rid]
    copied = copy.deepcopy(partition)
    assert partition.cold == copied.cold == 11
    assert len(copied) == 11
    pickled = pickle.loads(pickle.dumps(copied))  # noqa: S301 - made here
    assert len(pickled) == 11 and pickled.cold == 0

    def view(p: dict[Any, Any]) -> dict[str, Any]:
        return {key.value: item.to_json() for key, item in p.items()}

    assert view(copied) == view(pickled) == view(partition)


# Measured (tracemalloc, as test_resting_items measures packed items): a delivery-log record
# ~0.63 KB packed, ~0.30 KB cold (its ~0.2 KB blob is most of it); a due entry ~0.65 KB packed,
# ~0.16 KB cold. The bounds fail if the items stay warm.
MAX_COLD_BATCH_BYTES = 360
MAX_COLD_DUE_BYTES = 220


def test_cold_items_take_a_fraction_of_a_packed_items_memory(
    gateway: LocalGateway, table: str
) -> None:
    rng = random.Random(9)  # noqa: S311 - test data
    pushkeys = [_hexid(rng, 64) for _ in range(60)]
    batches = [_batch_like(rng, n, pushkeys[n % len(pushkeys)]) for n in range(1800)]
    _, _, per_batch = _footprint(gateway, table, batches)
    # Due entries as 50 notifications a second leave them: ~12 in each of a slot's 4 shards.
    dues = [_due_like(rng, n) for n in range(1800)]
    for n, due in enumerate(dues):
        due["rid"] = {"S": f"due#{1_796_163_088 + n // 50}#{n % 4}"}
    _, _, per_due = _footprint(gateway, table, dues)
    print(f"cold: {per_batch:.0f} bytes per batch, {per_due:.0f} per due entry")
    assert per_batch < MAX_COLD_BATCH_BYTES
    assert per_due < MAX_COLD_DUE_BYTES
