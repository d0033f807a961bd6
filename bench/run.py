"""`make bench`: what a notification costs, as ratios measured side by side in one run.

1. Cold start: the import time of each handler module in a fresh interpreter (what Lambda's
   init phase pays), against a bare interpreter and against `import boto3` alone.
2. Notify path, in process (local mode's moto, no HTTP): time per request for each kind of
   notification, against one bare DynamoDB UpdateItem on the same moto table (the floor).
3. Parsing and rendering: per notification, against `json.loads` of the same body.
4. Cost model (bench/cost.py): $ per 1M notifications from a replay of trace A and a quiet trace.

Absolute numbers depend on the machine; the ratios are what to compare between commits.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "synapse-1.163.2"
# Every Lambda handler: functions/<name>/<name>_handler.py.
HANDLERS = {
    folder.name: folder
    for folder in sorted((ROOT / "functions").iterdir())
    if (folder / f"{folder.name}_handler.py").exists()
}
RUNS = int(os.environ.get("BENCH_RUNS", "7"))


def import_once(statement: str, extra_path: Path | None = None) -> float:
    """Time of `statement` in a fresh interpreter (seconds), interpreter start excluded."""
    path = [str(ROOT / "layers" / "mxpush")] + ([str(extra_path)] if extra_path else [])
    code = (
        "import sys, time; sys.path[:0] = "
        + repr(path)
        + "; t = time.perf_counter(); "
        + statement
        + "; print(time.perf_counter() - t)"
    )
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "0", "AWS_REGION": "us-east-1"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return float(out.stdout.strip())


def cold_start() -> None:
    """Round-robin over the targets, so that a swing in the machine's load hits them all alike;
    each ratio is the median of the per-round ratios to that round's `import boto3`."""
    print("## Cold start: import time in a fresh interpreter (median of", RUNS, "rounds)")
    targets: dict[str, tuple[str, Path | None]] = {
        "import boto3": ("import boto3", None),
        "import botocore.session": ("import botocore.session", None),
        **{f"{n}_handler": (f"import {n}_handler", f) for n, f in HANDLERS.items()},
    }
    samples: dict[str, list[float]] = {name: [] for name in targets}
    for _ in range(RUNS):
        for name, (statement, folder) in targets.items():
            samples[name].append(import_once(statement, folder))
    boto3_samples = samples["import boto3"]
    print(f"{'module':<34}{'ms':>8}{'x boto3':>10}")
    for name, values in samples.items():
        ratio = statistics.median(v / b for v, b in zip(values, boto3_samples, strict=True))
        print(f"{name:<34}{statistics.median(values) * 1000:8.0f}{ratio:10.2f}")
    print()


def per_call(function: Callable[[], Any], seconds: float = 1.0) -> float:
    function()  # warm up
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        function()
        count += 1
    return (time.perf_counter() - started) / count


def notify_path() -> None:
    sys.path[:0] = [str(ROOT / "layers" / "mxpush"), str(ROOT / "local"), str(ROOT)]
    import boto3

    from mxpush_local.gateway import LocalGateway, LocalSettings

    token = "bench-token"  # noqa: S105 - a throwaway token for an in-process gateway
    settings = LocalSettings(port=0, admin_token=token, delay_seconds=3600, access_log=False)
    gateway = LocalGateway(settings)
    gateway.start()
    try:
        register = json.dumps(
            {"backend": "gotify", "target": {"url": "http://127.0.0.1:9/", "token": "BenchToken"}}
        ).encode()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

        def new_pushkey() -> str:
            _, _, payload = gateway.handle("POST", "/api/v1/pushkeys", headers, register)
            return str(json.loads(payload)["pushkey"])

        message = json.loads((FIXTURES / "message_group_3_members.1.full.json").read_text())
        badge = json.loads((FIXTURES / "read_receipts_all_badge.2.full.json").read_text())
        counter = iter(range(10**9))

        def body(template: dict[str, Any], pushkey: str, fresh_event: bool) -> bytes:
            copy = json.loads(json.dumps(template))
            copy["notification"]["devices"][0]["pushkey"] = pushkey
            if fresh_event:
                copy["notification"]["event_id"] = f"$bench{next(counter)}"
            return json.dumps(copy).encode()

        def post(payload: bytes) -> None:
            status, _, _ = gateway.handle("POST", "/_matrix/push/v1/notify", {}, payload)
            assert status == 200

        coalescing = new_pushkey()
        post(body(message, coalescing, fresh_event=True))  # opens the batch
        duplicate_body = body(message, coalescing, fresh_event=True)
        post(duplicate_body)
        idle = new_pushkey()

        def new_batch() -> None:
            post(body(message, new_pushkey(), fresh_event=True))

        dynamodb = boto3.client("dynamodb", region_name="us-east-1")

        def bare_update() -> None:
            dynamodb.update_item(
                TableName=gateway.aws.table_name,
                Key={"rid": {"S": "bench-token"}, "sk": {"S": "x"}},
                UpdateExpression="SET n = :n",
                ExpressionAttributeValues={":n": {"N": "1"}},
            )

        floor = per_call(bare_update)
        register_cost = per_call(new_pushkey)
        cases = {
            "one bare UpdateItem (floor)": floor,
            "coalesced event": per_call(lambda: post(body(message, coalescing, fresh_event=True))),
            "duplicate event": per_call(lambda: post(duplicate_body)),
            "unknown pushkey": per_call(lambda: post(body(message, "nobody", fresh_event=True))),
            "badge, nothing pending": per_call(lambda: post(body(badge, idle, fresh_event=False))),
            "new delayed push (- registration)": per_call(new_batch) - register_cost,
        }
        print("## Notify path in local mode (moto, in process, no HTTP), per notification")
        print("(moto's cost grows with item size and StartExecution is slow in moto: compare")
        print(" ratios between commits, not with AWS latencies)")
        print(f"{'case':<36}{'ms':>8}{'x floor':>10}")
        for name, seconds in cases.items():
            print(f"{name:<36}{seconds * 1000:8.2f}{seconds / floor:10.2f}")
        print()
        item_growth(gateway, post, new_pushkey)
    finally:
        gateway.stop()


def dynamodb_item_bytes(item: dict[str, Any]) -> int:
    """An item's size as DynamoDB bills it (names + values; numbers ~ digits/2 + 1)."""

    def value_size(value: dict[str, Any]) -> int:
        ((kind, inner),) = value.items()
        if kind in ("S", "B"):
            return len(str(inner).encode())
        if kind == "N":
            return len(str(inner).lstrip("-").replace(".", "")) // 2 + 1
        if kind in {"BOOL", "NULL"}:
            return 1
        if kind == "M":
            return 3 + sum(len(k.encode()) + value_size(v) + 1 for k, v in inner.items())
        if kind == "L":
            return 3 + sum(value_size(v) + 1 for v in inner)
        return len(json.dumps(inner))

    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


def item_growth(
    gateway: Any, post: Callable[[bytes], None], new_pushkey: Callable[[], str]
) -> None:
    """What a notification costs in DynamoDB write units depends on the registration item's size:
    an UpdateItem is billed per KB of the whole item. Show that it stays small."""
    import boto3

    from mxpush.ids import registration_id

    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    message = json.loads((FIXTURES / "message_group_3_members.1.full.json").read_text())
    badge = json.loads((FIXTURES / "read_receipts_all_badge.2.full.json").read_text())

    def size_of(pushkey: str) -> int:
        item = dynamodb.get_item(
            TableName=gateway.aws.table_name,
            Key={"rid": {"S": registration_id(pushkey)}, "sk": {"S": "registration"}},
        )["Item"]
        return dynamodb_item_bytes(item)

    def send(pushkey: str, event_id: str | None) -> None:
        body = json.loads(json.dumps(message if event_id else badge))
        body["notification"]["devices"][0]["pushkey"] = pushkey
        if event_id:
            body["notification"]["event_id"] = event_id
        post(json.dumps(body).encode())

    def batch_size(pushkey: str) -> int:
        items = dynamodb.query(
            TableName=gateway.aws.table_name,
            KeyConditionExpression="rid = :r AND begins_with(sk, :b)",
            ExpressionAttributeValues={
                ":r": {"S": registration_id(pushkey)},
                ":b": {"S": "b#"},
            },
            ScanIndexForward=False,
            Limit=1,
        )["Items"]
        return dynamodb_item_bytes(items[0]) if items else 0

    print("## Item sizes (DynamoDB bills each write per started KB of the item)")
    print(f"{'item':<58}{'bytes':>8}{'WCU':>6}")

    def row(label: str, size: int) -> None:
        print(f"{label:<58}{size:>8}{-(-size // 1024):>6}")

    fresh = new_pushkey()
    row("registration", size_of(fresh))
    for n in (1, 10, 50, 500):
        key = new_pushkey()
        for i in range(n):
            send(key, f"$pending-{n}-{i:04d}-" + "x" * 40)  # ids as long as Synapse's
        row(f"pending batch of {n} events (latest 20 listed, all counted)", batch_size(key))
    key = new_pushkey()
    for i in range(100):
        send(key, f"$cancelled-{i}")
        send(key, None)  # read at once: cancelled, one write on its batch
    row("registration after 100 cancelled pushes", size_of(key))
    print()


def parse_and_render() -> None:
    from mxpush.events import summarize
    from mxpush.model import Batch, EventRef, RegistrationOptions
    from mxpush.notification import parse_notify_body
    from mxpush.render import render_batch

    raw = (FIXTURES / "message_group_mention.1.full.json").read_bytes()

    def full() -> None:
        notification = parse_notify_body(raw)
        summary = summarize(notification, notification.devices[0])
        ref = EventRef(summary.event_id, summary.room_id, 0.0, summary.urgency)
        render_batch(Batch("b", summary, (ref,), 0.0), RegistrationOptions())

    floor = per_call(lambda: json.loads(raw))
    cost = per_call(full)
    print("## Parse, validate, summarize and render one notification")
    print(
        f"json.loads alone: {floor * 1e6:.1f} us; mxpush: {cost * 1e6:.1f} us ({cost / floor:.1f}x)"
    )


def main() -> None:
    # moto logs (as errors) executions stopped in the middle of a task: the item-size run
    # cancels hundreds of pushes at once on purpose. AWS handles that silently.
    logging.getLogger("moto").setLevel(logging.CRITICAL)
    print(f"mxpush benchmarks - Python {sys.version.split()[0]} on {os.uname().machine}\n")
    cold_start()
    notify_path()
    parse_and_render()
    print(flush=True)  # before the child's output: layer sizes, each layer built with pip
    subprocess.run([sys.executable, str(ROOT / "bench" / "layer_sizes.py")], check=True)
    # Its own process: it runs its own local gateway (one per process). Scale with BENCH_COST_*.
    print(flush=True)
    subprocess.run([sys.executable, str(ROOT / "bench" / "cost.py")], check=True)


if __name__ == "__main__":
    main()
