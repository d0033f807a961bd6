"""The state journal (local/mxpush_local/state.py) against moto, in process: every kind of write
the store makes is journaled as the item it left, a refused write is not, and loading applies
deletions, drops expired items and a torn last line, then compacts. On its own table, beside
the session gateway's (whose requests it sees and ignores)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from mxpush_local import compact_journal
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


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


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
            assert running.wait_compacted(timeout=30)
            assert len(lines(path)) <= 2 + 5
        assert running.compactions >= 3
        assert not running.old_path.exists()
        assert not running.compacted_path.exists()
        assert path.stat().st_mode & 0o777 == 0o600
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


def slowed(command: list[str]) -> list[str]:
    """The compacting child, started a second late: writes go on meanwhile."""
    return ["sh", "-c", 'sleep 1; exec "$@"', "sh", *command]


def test_writes_during_a_compaction_are_kept_and_nothing_waits_for_it(
    gateway: LocalGateway, table: str, tmp_path: Path
) -> None:
    path = tmp_path / "state"
    client = boto3.client("dynamodb", region_name=REGION)
    running = journal(path, table)
    running.load(now=NOW)
    running.compact_min_lines, running.compact_factor = 20, 1
    running.compact_command = slowed
    gateway.aws.journal = running
    try:
        client.put_item(TableName=table, Item=item("doomed"))
        client.put_item(TableName=table, Item=item("expired", expires_at={"N": "1"}))
        for n in range(19):
            client.put_item(TableName=table, Item=item("busy", n={"N": str(n)}))
        # The 21st line began a compaction: the journal so far is set aside, the child waits.
        assert running.old_path.exists()
        assert lines(path) == []
        client.put_item(TableName=table, Item=item("busy", n={"N": "100"}))
        client.put_item(TableName=table, Item=item("new"))
        client.delete_item(TableName=table, Key=key("doomed"))
        assert running.compactions == 0  # nothing above waited for the child
        assert running.wait_compacted(timeout=30)
        assert running.compactions == 1
        assert not running.old_path.exists()
        assert not running.compacted_path.exists()
        # The compacted segment (busy at 18, the live "doomed"; "expired" dropped), then the
        # three lines written while the child ran, in order.
        records = [json.loads(line) for line in lines(path)]
        assert [r.get("put", r.get("del"))["rid"]["S"] for r in records] == [
            "doomed",
            "busy",
            "busy",
            "new",
            "doomed",
        ]
        assert records[1]["put"]["n"] == {"N": "18"}
        assert "del" in records[4]
        client.put_item(TableName=table, Item=item("after"))  # the reopened journal
    finally:
        gateway.aws.journal = None
        running.close()
    before = scan(table)
    for rid in before:
        client.delete_item(TableName=table, Key=key(rid))
    reloaded = journal(path, table)
    try:
        assert reloaded.load(now=NOW) == 3
        assert scan(table) == {rid: i for rid, i in before.items() if rid != "expired"}
        assert scan(table)["busy"]["n"] == {"N": "100"}
    finally:
        reloaded.close()


def test_a_failed_compaction_puts_the_journal_back_whole(
    gateway: LocalGateway, table: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state"
    client = boto3.client("dynamodb", region_name=REGION)
    running = journal(path, table)
    running.load(now=NOW)
    running.compact_min_lines, running.compact_factor = 5, 1
    running.compact_command = lambda command: ["sh", "-c", "echo disk full >&2; exit 3"]
    gateway.aws.journal = running
    try:
        for n in range(8):
            client.put_item(TableName=table, Item=item(f"i{n}"))
            assert running.wait_compacted(timeout=30)
        assert running.compactions == 0
        assert not running.old_path.exists()
        assert [json.loads(line)["put"]["rid"]["S"] for line in lines(path)] == [
            f"i{n}" for n in range(8)
        ]
    finally:
        gateway.aws.journal = None
        running.close()
    assert "not compacted: exit 3: disk full" in caplog.text
    for n in range(8):
        client.delete_item(TableName=table, Key=key(f"i{n}"))
    reloaded = journal(path, table)
    try:
        assert reloaded.load(now=NOW) == 8
    finally:
        reloaded.close()


def test_a_segment_left_aside_is_never_overwritten(
    gateway: LocalGateway, table: str, tmp_path: Path
) -> None:
    """If joining the files failed (say, the disk was full), `.old` still holds items the
    journal lacks: a later compaction must not set the journal aside over it."""
    path = tmp_path / "state"
    client = boto3.client("dynamodb", region_name=REGION)
    running = journal(path, table)
    running.load(now=NOW)
    running.compact_min_lines, running.compact_factor = 3, 1
    left = put_line("aside", 7)
    running.old_path.write_text(left, encoding="utf-8")  # what the failed join left
    gateway.aws.journal = running
    try:
        for n in range(6):
            client.put_item(TableName=table, Item=item(f"i{n}"))
            assert running.wait_compacted(timeout=30)
        assert running.old_path.read_text(encoding="utf-8") == left
        assert len(lines(path)) == 6
    finally:
        gateway.aws.journal = None
        running.close()
    for n in range(6):
        client.delete_item(TableName=table, Key=key(f"i{n}"))
    reloaded = journal(path, table)
    try:
        assert reloaded.load(now=NOW) == 7
        assert scan(table)["aside"]["n"] == {"N": "7"}
        assert not reloaded.old_path.exists()
    finally:
        reloaded.close()


def put_line(rid: str, n: int) -> str:
    return json.dumps({"put": item(rid, n={"N": str(n)})}) + "\n"


def del_line(rid: str) -> str:
    return json.dumps({"del": key(rid)}) + "\n"


# What a `kill -9` can leave at each step of a running compaction: `.old` (the journal set
# aside), the journal (lines since), and the child's partial output.
CRASH_POINTS = {
    "child running": {
        "state.old": put_line("a", 1) + put_line("b", 1) + put_line("a", 2),
        "state.old.new": put_line("a", 2)[:20],
        "state": put_line("b", 2) + del_line("gone"),
    },
    "tail being copied": {
        "state.old": put_line("a", 1) + put_line("b", 1) + put_line("a", 2) + put_line("gone", 1),
        "state.old.new": put_line("a", 2)
        + put_line("b", 1)
        + put_line("gone", 1)
        + put_line("b", 2),
        "state": put_line("b", 2) + del_line("gone"),
    },
    "renamed, .old not yet deleted": {
        "state.old": put_line("a", 1) + put_line("b", 1) + put_line("a", 2) + put_line("gone", 1),
        "state": put_line("a", 2)
        + put_line("b", 1)
        + put_line("gone", 1)
        + put_line("b", 2)
        + del_line("gone"),
    },
    "failed, tail being copied back": {
        "state.old": put_line("a", 1) + put_line("b", 1) + put_line("a", 2) + put_line("b", 2),
        "state": put_line("b", 2),
    },
}


@pytest.mark.parametrize("files", CRASH_POINTS.values(), ids=list(CRASH_POINTS))
def test_a_crash_at_any_step_of_a_compaction_loses_nothing(
    gateway: LocalGateway, table: str, tmp_path: Path, files: dict[str, str]
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    reloaded = journal(tmp_path / "state", table)
    try:
        assert reloaded.load(now=NOW) == 2
        found = scan(table)
        assert {rid: i["n"]["N"] for rid, i in found.items()} == {"a": "2", "b": "2"}
        assert sorted(p.name for p in tmp_path.iterdir()) == ["state", "state.lock"]
        assert len(lines(tmp_path / "state")) == 2
    finally:
        reloaded.close()


def test_the_compacting_child_keeps_each_items_last_line(tmp_path: Path) -> None:
    source, destination = tmp_path / "in", tmp_path / "out"
    expiring = json.dumps({"put": item("e", expires_at={"N": str(NOW - 1)})}) + "\n"
    staying = json.dumps({"put": item("s", expires_at={"N": str(NOW + 1)})}) + "\n"
    source.write_text(
        put_line("a", 1)
        + expiring
        + staying
        + "[1]\n\n"
        + put_line("a", 2)
        + put_line("d", 1)
        + del_line("d")
        + put_line("c", 1)
        + '{"put":{"rid":{"S":"torn',
        encoding="utf-8",
    )
    # The script the gateway starts, as it starts it.
    result = subprocess.run(
        [
            sys.executable,
            "-I",
            compact_journal.__file__,
            str(source),
            str(destination),
            "--keys",
            "rid",
            "sk",
            "--ttl",
            "expires_at",
            "--now",
            str(NOW),
            "--nice",
            "5",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "3"
    assert destination.read_text(encoding="utf-8") == put_line("a", 2) + staying + put_line("c", 1)
    assert destination.stat().st_mode & 0o777 == 0o600


def test_generated_secrets_are_kept_for_the_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "dir" / "state.keys"
    assert read_secrets(path) == {}
    write_secrets(path, {"vapid_private_key": "k", "admin_token": "t"})
    assert read_secrets(path) == {"vapid_private_key": "k", "admin_token": "t"}
    assert path.stat().st_mode & 0o777 == 0o600
    path.write_text("[]", encoding="utf-8")
    with pytest.raises(StateError):
        read_secrets(path)
