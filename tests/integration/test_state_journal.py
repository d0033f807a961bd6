"""The state journal (local/mxpush_local/state.py) against moto, in process: every kind of write
the store makes is journaled as the item it left, a refused write is not, and loading applies
deletions, drops expired items and a torn last line, then compacts. On its own table, beside
the session gateway's (whose requests it sees and ignores)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from mxpush_local.aws import REGION
from mxpush_local.gateway import LocalGateway
from mxpush_local.state import Journal, StateError, read_secrets, write_secrets

NOW = 2_000_000_000.0


@pytest.fixture
def table(gateway: LocalGateway) -> Iterator[str]:
    name = f"journal-{uuid.uuid4().hex[:8]}"
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
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    yield name
    client.delete_table(TableName=name)


def journal(path: Path, table: str) -> Journal:
    return Journal(
        path, table_name=table, key_names=("rid", "sk"), ttl_attribute="expires_at", region=REGION
    )


def item(rid: str, **attrs: Any) -> dict[str, Any]:
    return {"rid": {"S": rid}, "sk": {"S": "s"}, **attrs}


def key(rid: str) -> dict[str, Any]:
    return {"rid": {"S": rid}, "sk": {"S": "s"}}


def scan(table: str) -> dict[str, dict[str, Any]]:
    client = boto3.client("dynamodb", region_name=REGION)
    items = client.scan(TableName=table, ConsistentRead=True)["Items"]
    return {i["rid"]["S"]: i for i in items}


def test_writes_are_journaled_and_reloaded_into_an_empty_table(
    gateway: LocalGateway, table: str, tmp_path: Path
) -> None:
    path = tmp_path / "state"
    client = boto3.client("dynamodb", region_name=REGION)
    first = journal(path, table)
    assert first.load(now=NOW) == 0
    gateway.aws.journal = first
    try:
        client.put_item(TableName=table, Item=item("a", n={"N": "1"}))
        client.update_item(
            TableName=table,
            Key=key("a"),
            UpdateExpression="SET n = n + :one, m = :m",
            ExpressionAttributeValues={":one": {"N": "1"}, ":m": {"M": {"x": {"L": [{"S": "y"}]}}}},
        )
        with pytest.raises(client.exceptions.ConditionalCheckFailedException):
            client.put_item(
                TableName=table,
                Item=item("a", n={"N": "99"}),
                ConditionExpression="attribute_not_exists(rid)",
            )
        client.put_item(TableName=table, Item=item("expired", expires_at={"N": str(NOW - 1)}))
        client.put_item(TableName=table, Item=item("later", expires_at={"N": str(NOW + 60)}))
        client.put_item(TableName=table, Item=item("gone"))
        client.delete_item(TableName=table, Key=key("gone"))
        client.batch_write_item(
            RequestItems={
                table: [
                    {"PutRequest": {"Item": item("batched")}},
                    {"DeleteRequest": {"Key": key("later")}},
                ]
            }
        )
        client.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": table, "Item": item("transacted")}},
                {
                    "Update": {
                        "TableName": table,
                        "Key": key("batched"),
                        "UpdateExpression": "SET t = :t",
                        "ExpressionAttributeValues": {":t": {"BOOL": True}},
                    }
                },
            ]
        )
        before = scan(table)
    finally:
        gateway.aws.journal = None
        first.close()
    with path.open("a", encoding="utf-8") as out:
        out.write('{"put":{"rid":{"S":"torn')  # what a crash mid-write could leave

    for rid in before:
        client.delete_item(TableName=table, Key=key(rid))
    second = journal(path, table)
    try:
        assert second.load(now=NOW) == 3
        after = scan(table)
        assert set(after) == {"a", "batched", "transacted"}
        assert after == {rid: i for rid, i in before.items() if rid != "expired"}
        assert after["a"]["n"] == {"N": "2"}
        assert after["a"]["m"] == {"M": {"x": {"L": [{"S": "y"}]}}}
        assert after["batched"]["t"] == {"BOOL": True}
        assert second.dropped_lines == 1
        # Compacted: one line per live item, the torn line and the history gone.
        assert len(path.read_text(encoding="utf-8").splitlines()) == 3
        with pytest.raises(StateError, match="in use"):
            journal(path, table).load(now=NOW)
    finally:
        second.close()


def test_a_running_journal_is_compacted_as_it_grows(
    gateway: LocalGateway, table: str, tmp_path: Path
) -> None:
    path = tmp_path / "state"
    client = boto3.client("dynamodb", region_name=REGION)
    running = journal(path, table)
    running.load(now=NOW)
    running.compact_min_lines, running.compact_factor = 5, 2
    gateway.aws.journal = running
    try:
        client.put_item(TableName=table, Item=item("other"))
        for n in range(30):
            client.put_item(TableName=table, Item=item("busy", n={"N": str(n)}))
            assert len(path.read_text(encoding="utf-8").splitlines()) <= 2 + 5
    finally:
        gateway.aws.journal = None
        running.close()
    client.delete_item(TableName=table, Key=key("busy"))
    client.delete_item(TableName=table, Key=key("other"))
    reloaded = journal(path, table)
    try:
        assert reloaded.load(now=NOW) == 2
        assert scan(table)["busy"]["n"] == {"N": "29"}
    finally:
        reloaded.close()


def test_generated_secrets_are_kept_for_the_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "dir" / "state.keys"
    assert read_secrets(path) == {}
    write_secrets(path, {"vapid_private_key": "k", "admin_token": "t"})
    assert read_secrets(path) == {"vapid_private_key": "k", "admin_token": "t"}
    assert path.stat().st_mode & 0o777 == 0o600
    path.write_text("[]", encoding="utf-8")
    with pytest.raises(StateError):
        read_secrets(path)
