"""`make bench` cost model: replay trace A and a quiet trace through local mode (real HTTP to the
notify URL, the real handlers and state machine under moto, a fake Gotify on 127.0.0.1), count
what AWS would bill, and print $ per 1M notifications by component at public us-east-1 prices.

    python bench/cost.py [--a-notifications 3000] [--rate 50] [--quiet-seconds 180] [--delay 5]

Trace A: 60 % messages in bursts of 1-5, 25 % badge-only reads that cancel a burst within the
delay, 3 % calls, 12 % badge updates that change nothing. The quiet trace: the same mix at one
notification per second. Lambda durations are local-mode measurements (backends on 127.0.0.1
answer fast; cold starts are not included).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT / "layers" / "mxpush", ROOT / "local", ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import boto3  # noqa: E402 - after the paths above
import yaml  # noqa: E402
from bench.cost_meter import KIND_HEADER, STATE_MACHINE, Invocation, Meter, Tally  # noqa: E402
from bench.cost_model import (  # noqa: E402
    CALL,
    COMPONENTS,
    MESSAGE,
    NOOP_BADGE,
    PRICES,
    READ,
    Episode,
    Notify,
    Trace,
    Usage,
    billable_transitions,
    dollars_per_million,
    generate_trace,
    lambda_gb_seconds,
    percentile,
)
from tests.fakes.gotify import FakeGotify  # noqa: E402
from tests.fakes.server import Received, Reply  # noqa: E402

from mxpush_local.gateway import LocalGateway, LocalSettings  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "synapse-1.163.2"
TEMPLATE = ROOT / "template.yaml"
ADMIN_TOKEN = "bench-cost-admin-token"  # noqa: S105 - an in-process gateway's throwaway token
SENDERS = 16  # concurrent HTTP clients replaying the trace
CONNECT_ATTEMPTS = 3


# --- template: memory per function -------------------------------------------------------------


class _TemplateLoader(yaml.SafeLoader):
    """Reads template.yaml; CloudFormation's tags (`!Ref` ...) are not needed here."""


_TemplateLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def memory_by_function(template: Path = TEMPLATE) -> dict[str, int]:
    """MemorySize (MB) of each function: its own, else Globals', else Lambda's default 128."""
    document = yaml.load(template.read_text(encoding="utf-8"), Loader=_TemplateLoader)  # noqa: S506 - SafeLoader subclass
    default = int(((document.get("Globals") or {}).get("Function") or {}).get("MemorySize", 128))
    return {
        logical_id: int((resource.get("Properties") or {}).get("MemorySize", default))
        for logical_id, resource in document["Resources"].items()
        if resource.get("Type") == "AWS::Serverless::Function"
    }


# --- fake backend and notify bodies ------------------------------------------------------------


class TimedGotify(FakeGotify):
    """A fake Gotify that notes when each push arrived, per application token (= pushkey)."""

    def __init__(self, tokens: Sequence[str]) -> None:
        super().__init__(app_tokens=tuple(tokens))
        self.arrivals: list[tuple[str, float]] = []

    def respond(self, request: Received) -> Reply:
        self.arrivals.append((request.headers.get("x-gotify-key", ""), time.time()))
        return super().respond(request)


def _fixture(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return body


class Bodies:
    """Notify bodies from the captured Synapse fixtures, with unique event ids."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.messages = [
            _fixture(p.name[:-5]) for p in sorted(FIXTURES.glob("message_*.full.json"))
        ]
        self.call = _fixture("call_invite_dm.1.full")
        self.badge = _fixture("read_receipt_dm_badge.0.full")

    def body(self, notify: Notify, index: int, pushkey: str) -> bytes:
        if notify.kind == MESSAGE:
            template = self.messages[index % len(self.messages)]
        else:
            template = self.call if notify.kind == CALL else self.badge
        body = json.loads(json.dumps(template))
        notification = body["notification"]
        for device in notification["devices"]:
            device["pushkey"] = pushkey
        notification["counts"] = {"unread": notify.unread}
        if notify.kind in (MESSAGE, CALL):
            event_id = f"${self.prefix}-{index}:bench"
            notification["event_id"] = notification["id"] = event_id
        return json.dumps(body).encode()


# --- replay ------------------------------------------------------------------------------------


@dataclass
class Replay:
    name: str
    trace: Trace
    rate: float
    tally: Tally = field(default_factory=Tally)
    accepted: dict[tuple[int, int], float] = field(default_factory=dict)  # (episode, i) -> time
    statuses: Counter[int] = field(default_factory=Counter)
    lags: list[float] = field(default_factory=list)  # seconds each notify was sent late
    connection_retries: int = 0
    aborted_at: int | None = None  # local mode fell this far behind: the figures would be wrong
    started: float = 0.0
    finished: float = 0.0
    transitions: int = 0
    executions: int = 0
    arrivals: list[tuple[str, float]] = field(default_factory=list)


class Bench:
    """One local gateway, one fake Gotify, `pushkeys` registrations, reused by every trace."""

    def __init__(self, delay: int, pushkeys: int) -> None:
        self.delay = delay
        self.connection_retries = 0
        self.tokens = [f"BenchToken.{i:05d}" for i in range(pushkeys)]
        self.gotify = TimedGotify(self.tokens).start()
        # The handlers log each notification at INFO: thousands of lines, not what is measured.
        os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"
        settings = LocalSettings(
            port=0, admin_token=ADMIN_TOKEN, delay_seconds=delay, access_log=False
        )
        self.gateway = LocalGateway(settings)
        # Every execution's history is read at the end of a trace: keep them all until then.
        self.gateway.aws.keep_finished_executions_seconds = 7 * 24 * 3600
        self.gateway.start()
        self.meter = Meter(self.gateway.aws.functions, self.gateway.aws.table_name)
        self.meter.install()
        # Import every handler now: local mode imports one at its first invocation, and two
        # threads invoking it at once could see it half-imported.
        for logical_id in self.gateway.aws.functions.specs:
            self.gateway.aws.functions.handler(logical_id)
        self.pushkeys = [self._register(token) for token in self.tokens]
        self._seen_executions: set[str] = set()
        self._warm_up()

    def close(self) -> None:
        self.meter.uninstall()
        with self.meter.measuring():
            self.gateway.aws.stop_running_executions()
        self.gateway.stop()
        self.gotify.stop()

    def _request(
        self, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(self.gateway.url + path, data=body, method="POST")  # noqa: S310 - 127.0.0.1
        for name, value in {"Content-Type": "application/json", **headers}.items():
            request.add_header(name, value)
        for _ in range(CONNECT_ATTEMPTS):
            try:
                with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - 127.0.0.1
                    return response.status, json.loads(response.read() or b"{}")
            except urllib.error.HTTPError as error:
                return error.code, json.loads(error.read() or b"{}")
            except (urllib.error.URLError, ConnectionError):
                # The local server's small listen backlog refuses a connection now and then
                # when busy; Synapse would retry too. Nothing reached a handler.
                self.connection_retries += 1
                time.sleep(0.2)
        return 0, {}  # no answer

    def _register(self, token: str) -> str:
        target = {"url": self.gotify.base_url, "token": token}
        status, answer = self._request(
            "/api/v1/pushkeys",
            json.dumps({"backend": "gotify", "target": target}).encode(),
            {"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        if status != 201:
            raise RuntimeError(f"registration failed: {status} {answer}")
        return str(answer["pushkey"])

    def _warm_up(self) -> None:
        """Unmetered: one message then the read that cancels it, on every pushkey, so that the
        first metered execution on a pushkey finds a cancellation waiting to be logged, as in
        steady state (the sample's end leaves as many behind, unlogged)."""
        bodies = Bodies("warmup")
        for index, pushkey in enumerate(self.pushkeys):
            for notify in (
                Notify(0.0, MESSAGE, index, index, 1),
                Notify(0.0, READ, index, index, 0),
            ):
                self._request("/_matrix/push/v1/notify", bodies.body(notify, index, pushkey), {})
        self._drain(timeout=self.delay + 60)
        with self.meter.measuring():
            client = boto3.client("stepfunctions", region_name="us-east-1")
            self._seen_executions.update(self._executions(client))  # not the trace's

    def run(self, name: str, trace: Trace, rate: float) -> Replay:
        if trace.pushkeys > len(self.pushkeys):
            raise ValueError("the trace needs more pushkeys than were registered")
        replay = Replay(name, trace, rate)
        bodies = Bodies(name)
        previous: dict[int, Future[None]] = {}  # episode -> its last notify, sent in order
        self.gotify.reset()
        self.gotify.arrivals.clear()
        replay.tally = self.meter.start()

        def send(notify: Notify, index: int, before: Future[None] | None) -> None:
            if before is not None:
                before.result()
            replay.lags.append(time.time() - replay.started - notify.at)
            body = bodies.body(notify, index, self.pushkeys[notify.pushkey])
            status, _ = self._request("/_matrix/push/v1/notify", body, {KIND_HEADER: notify.kind})
            replay.statuses[status] += 1
            replay.accepted[(notify.episode, index)] = time.time()

        retries_before = self.connection_retries
        replay.started = time.time()
        pool = ThreadPoolExecutor(SENDERS)
        for index, notify in enumerate(trace.notifies):
            pause = replay.started + notify.at - time.time()
            if pause > 0:
                time.sleep(pause)
            if replay.lags and max(replay.lags[-SENDERS:]) > trace.delay:
                # Reads now land after their push fell due: no longer the trace asked for.
                replay.aborted_at = index
                break
            future = pool.submit(send, notify, index, previous.get(notify.episode))
            previous[notify.episode] = future
        pool.shutdown(wait=True, cancel_futures=replay.aborted_at is not None)
        replay.finished = time.time()
        replay.connection_retries = self.connection_retries - retries_before
        self._drain(timeout=trace.delay + 120)
        self.meter.stop()
        replay.arrivals = list(self.gotify.arrivals)
        replay.transitions, replay.executions = self._count_transitions()
        return replay

    def _drain(self, timeout: float) -> None:
        """Wait until no execution of any state machine runs."""
        client = boto3.client("stepfunctions", region_name="us-east-1")
        deadline = time.monotonic() + timeout
        with self.meter.measuring():
            while time.monotonic() < deadline:
                if not self._executions(client, status="RUNNING"):
                    return
                time.sleep(0.5)
        raise RuntimeError(f"executions still running after {timeout:.0f} s")

    def _executions(self, client: Any, status: str | None = None) -> list[str]:
        arns = []
        for machine in client.list_state_machines()["stateMachines"]:
            kwargs = {"stateMachineArn": machine["stateMachineArn"]}
            if status:
                kwargs["statusFilter"] = status
            for page in client.get_paginator("list_executions").paginate(**kwargs):
                arns += [e["executionArn"] for e in page["executions"]]
        return arns

    def _count_transitions(self) -> tuple[int, int]:
        """Billable transitions of the executions started since the last count."""
        client = boto3.client("stepfunctions", region_name="us-east-1")
        transitions = executions = 0
        with self.meter.measuring():
            for arn in self._executions(client):
                if arn in self._seen_executions:
                    continue
                self._seen_executions.add(arn)
                executions += 1
                events: list[Any] = []
                pages = client.get_paginator("get_execution_history").paginate(executionArn=arn)
                for page in pages:
                    events += page["events"]
                transitions += billable_transitions(events)
        return transitions, executions


# --- figures -----------------------------------------------------------------------------------


@dataclass
class Delivery:
    expected: int = 0
    received: int = 0
    unexpected: int = 0  # pushes for a burst that was read (the read came too late)
    missing: int = 0
    latencies: list[float] = field(default_factory=list)  # due -> push received, seconds
    due_seconds: set[int] = field(default_factory=set)  # distinct seconds a batch fell due


def deliveries(replay: Replay, pushkey_tokens: Sequence[str]) -> Delivery:
    """Match the pushes the fake Gotify received to the episodes, per pushkey and in time: an
    episode owns the pushes from its first notification until the pushkey's next episode."""
    result = Delivery()
    token_index = {token: i for i, token in enumerate(pushkey_tokens)}
    arrivals: dict[int, list[float]] = {}
    for token, at in replay.arrivals:
        arrivals.setdefault(token_index.get(token, -1), []).append(at)
    by_pushkey: dict[int, list[tuple[float, Episode, float]]] = {}
    notifies = replay.trace.notifies
    first_sent: dict[int, float] = {}
    first_index: dict[int, int] = {}
    for index, notify in enumerate(notifies):
        first_index.setdefault(notify.episode, index)
    for episode in replay.trace.episodes:
        index = first_index[episode.index]
        accepted = replay.accepted.get((episode.index, index))
        if accepted is None:
            continue
        first_sent[episode.index] = replay.started + notifies[index].at
        if episode.kind == "noop_badge":
            continue
        due = accepted + (0 if episode.kind == "call" else replay.trace.delay)
        result.due_seconds.add(math.floor(due))
        by_pushkey.setdefault(episode.pushkey, []).append((first_sent[episode.index], episode, due))
    for pushkey, episodes in by_pushkey.items():
        episodes.sort(key=lambda e: e[0])
        times = sorted(arrivals.get(pushkey, []))
        for position, (start, episode, due) in enumerate(episodes):
            end = episodes[position + 1][0] if position + 1 < len(episodes) else math.inf
            owned = [t for t in times if start <= t < end]
            if episode.delivered:
                result.expected += 1
                if owned:
                    result.received += 1
                    result.latencies.append(owned[0] - due)
                else:
                    result.missing += 1
            elif owned:
                result.unexpected += 1
    return result


def usage_of(replay: Replay, memory: dict[str, int]) -> Usage:
    tally = replay.tally
    notifications = sum(replay.trace.counts().values())
    sqs = sum(n for (_, service, _), n in tally.calls.items() if service == "sqs")
    return Usage(
        notifications=notifications,
        transitions=replay.transitions,
        lambda_requests=len(tally.invocations),
        # Billed duration is modelled by the handler thread's CPU time: in local mode every
        # function shares one process, so wall time mostly waits for the GIL (on AWS each runs
        # in its own container); the CPU time includes moto's work standing in for DynamoDB.
        lambda_gb_seconds=sum(
            lambda_gb_seconds(i.cpu_seconds, memory.get(i.logical_id, 128))
            for i in tally.invocations
        ),
        http_requests=sum(c for status, c in replay.statuses.items() if status),
        write_units=sum(tally.write_units.values()),
        read_units=sum(tally.read_units.values()),
        sqs_requests=sqs,
    )


def report(replay: Replay, memory: dict[str, int], tokens: Sequence[str]) -> None:
    trace, tally = replay.trace, replay.tally
    counts = trace.counts()
    n = sum(counts.values())
    print(
        f"### {replay.name}: {n} notifications planned at {replay.rate:g}/s, "
        f"delay {trace.delay} s, {trace.pushkeys} pushkeys"
    )
    if replay.aborted_at is not None:
        sent = sum(replay.statuses.values())
        print(
            f"ABORTED: local mode fell more than the delay behind after {sent} notifications "
            f"({sent / (replay.finished - replay.started):.1f}/s sustained): reads would land "
            "after their push fell due. Rerun with a lower --rate (BENCH_COST_RATE).\n"
        )
        return
    usage = usage_of(replay, memory)
    costs = dollars_per_million(usage)
    delivery = deliveries(replay, tokens)
    last_accept = max(replay.accepted.values(), default=replay.finished)
    span = max(last_accept - replay.started, 1e-9)
    planned = max((notify.at for notify in trace.notifies), default=0.0)
    print(
        f"mix: {counts[MESSAGE]} messages in {sum(e.kind == 'burst' for e in trace.episodes)} "
        f"bursts, {counts[READ]} reads that cancel, {counts[CALL]} calls, "
        f"{counts[NOOP_BADGE]} badge updates that change nothing"
    )
    print(
        f"planned over {planned:.1f} s, all answered after {span:.1f} s ({n / span:.1f}/s); "
        f"sent late by p50 {percentile(replay.lags, 0.5):.2f} s, p95 "
        f"{percentile(replay.lags, 0.95):.2f} s; HTTP answers "
        + ", ".join(f"{s or 'none'}: {c}" for s, c in sorted(replay.statuses.items()))
        + f" (connections retried: {replay.connection_retries})"
    )
    print(
        f"pushes: {delivery.expected} expected, {delivery.received} received, "
        f"{delivery.missing} missing, {delivery.unexpected} for bursts that were read"
    )
    if percentile(replay.lags, 0.95) > 0.5 or delivery.missing or delivery.unexpected:
        print(
            "WARNING: local mode fell behind the trace or pushes do not match it: these "
            "figures are not quite the trace's (try a lower --rate)"
        )
    print(f"{'component':<18}{'$ per 1M':>10}{'share':>8}")
    for name in (*COMPONENTS, "total"):
        share = costs[name] / costs["total"] * 100 if costs["total"] else 0.0
        print(f"{name:<18}{costs[name]:>10.2f}{share:>7.1f}%")
    per_k = 1000 / n
    starts = _calls(tally, "stepfunctions", "StartExecution")
    stops = _calls(tally, "stepfunctions", "StopExecution")
    stops_notify = _calls(tally, "stepfunctions", "StopExecution", source="NotifyFunction")
    slots = len(delivery.due_seconds)
    print(
        f"transitions: {usage.transitions} ({usage.transitions / n:.3f} per notification) in "
        f"{replay.executions} executions"
    )
    print(
        f"StartExecution per 1,000 notifications: {starts * per_k:.1f}; StopExecution: "
        f"{stops * per_k:.1f} ({stops_notify * per_k:.1f} on the notify path)"
    )
    if slots:
        print(
            f"slots (distinct seconds in which a batch fell due): {slots}; executions per "
            f"slot {replay.executions / slots:.2f}; StartExecution per slot {starts / slots:.2f}"
        )
    _print_dynamodb(tally, counts, delivery)
    _print_lambda(tally, memory, n)
    _print_calls(tally, n)
    if delivery.latencies:
        lat = delivery.latencies
        print(
            f"due -> push received by the fake Gotify (sender start + render + one HTTP round "
            f"trip on 127.0.0.1), local mode: p50 {percentile(lat, 0.5):.2f} s, p95 "
            f"{percentile(lat, 0.95):.2f} s, max {max(lat):.2f} s (n={len(lat)})"
        )
    print()


def _calls(tally: Tally, service: str, operation: str, source: str | None = None) -> int:
    return sum(
        n
        for (src, svc, op), n in tally.calls.items()
        if svc == service and op == operation and (source is None or src == source)
    )


def _print_dynamodb(tally: Tally, counts: dict[str, int], delivery: Delivery) -> None:
    notify_path: Counter[str] = Counter()
    elsewhere = 0.0
    for (source, kind), units in tally.write_units.items():
        if source == "NotifyFunction" and kind:
            notify_path[kind] += units
        else:
            elsewhere += units
    parts = [
        f"per {label} {notify_path[kind] / counts[kind]:.2f}"
        for kind, label in (
            (MESSAGE, "message"),
            (READ, "read"),
            (CALL, "call"),
            (NOOP_BADGE, "no-op badge"),
        )
        if counts[kind]
    ]
    print("DynamoDB write units on the notify path: " + ", ".join(parts))
    pushes = max(delivery.received, 1)
    total_writes = sum(tally.write_units.values())
    total_reads = sum(tally.read_units.values())
    n = sum(counts.values())
    print(
        f"  elsewhere (delivery, logging): {elsewhere:.0f} = {elsewhere / pushes:.2f} per push "
        f"delivered; all-in {total_writes / n:.2f} write units and {total_reads / n:.2f} read "
        f"units per notification; largest item {tally.largest_item} bytes"
    )
    if tally.filtered_reads:
        print(f"  ({tally.filtered_reads} filtered Query/Scan: read units are a lower bound)")


def _print_lambda(tally: Tally, memory: dict[str, int], n: int) -> None:
    by_function: dict[str, list[Invocation]] = {}
    for invocation in tally.invocations:
        by_function.setdefault(invocation.logical_id, []).append(invocation)
    print(
        f"{'Lambda function (local-mode ms)':<32}{'per 1k notif.':>14}{'wall mean':>10}"
        f"{'p95':>8}{'CPU mean':>10}{'MB':>6}"
    )
    for logical_id, invocations in sorted(by_function.items()):
        wall = [i.seconds for i in invocations]
        cpu = [i.cpu_seconds for i in invocations]
        print(
            f"{logical_id:<32}{len(invocations) * 1000 / n:>14.1f}"
            f"{sum(wall) / len(wall) * 1000:>10.1f}{percentile(wall, 0.95) * 1000:>8.1f}"
            f"{sum(cpu) / len(cpu) * 1000:>10.1f}{memory.get(logical_id, 128):>6}"
        )
    wall_gb_s = sum(
        lambda_gb_seconds(i.seconds, memory.get(i.logical_id, 128)) for i in tally.invocations
    )
    print(
        f"(Lambda GB-s are priced on handler CPU time; priced on local-mode wall time, which "
        f"mostly waits for the GIL all functions share here, they would cost "
        f"${wall_gb_s * PRICES.lambda_gb_second * 1e6 / n:.2f} per 1M)"
    )


def _print_calls(tally: Tally, n: int) -> None:
    print(f"{'AWS API calls by caller':<56}{'per 1k notif.':>14}")
    for (source, service, operation), count in sorted(tally.calls.items()):
        label = f"{source} {service}.{operation}"
        note = (
            " (a Task state's invoke: priced as a Lambda request)"
            if (source == STATE_MACHINE and service == "lambda")
            else ""
        )
        print(f"  {label:<54}{count * 1000 / n:>14.1f}{note}")
    unpriced = {svc for (_, svc, _) in tally.calls} & {"sns", "events", "scheduler"}
    if unpriced:
        print(f"  (not priced: {', '.join(sorted(unpriced))})")


# --- entry -------------------------------------------------------------------------------------


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--a-notifications", type=int, default=int(_env_number("BENCH_COST_A_NOTIFICATIONS", 1500))
    )
    parser.add_argument("--rate", type=float, default=_env_number("BENCH_COST_RATE", 50))
    parser.add_argument(
        "--quiet-seconds", type=int, default=int(_env_number("BENCH_COST_QUIET_SECONDS", 180))
    )
    parser.add_argument("--delay", type=int, default=int(_env_number("BENCH_COST_DELAY", 5)))
    parser.add_argument("--pushkeys", type=int, default=200)
    parser.add_argument("--seed", type=int, default=8)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # moto logs (as errors) executions stopped while they wait: cancelling is the point here.
    logging.getLogger("moto").setLevel(logging.CRITICAL)
    traces = []
    if args.a_notifications > 0:
        trace = generate_trace(
            args.a_notifications,
            rate=args.rate,
            delay=args.delay,
            pushkeys=args.pushkeys,
            seed=args.seed,
        )
        traces.append(("trace A", trace, args.rate))
    if args.quiet_seconds > 0:
        trace = generate_trace(
            args.quiet_seconds,
            rate=1.0,
            delay=args.delay,
            pushkeys=args.pushkeys,
            seed=args.seed + 1,
        )
        traces.append(("quiet trace", trace, 1.0))
    print("## Cost model: $ per 1M notifications at us-east-1 prices (local-mode replay)")
    print(
        f"(per-notification figures do not depend on the delay ({args.delay} s here) as long as "
        "reads land within it; Lambda durations are local-mode measurements)"
    )
    bench = Bench(args.delay, max(t.pushkeys for _, t, _ in traces))
    memory = memory_by_function()
    try:
        for name, trace, rate in traces:
            report(bench.run(name, trace, rate), memory, bench.tokens)
    finally:
        bench.close()


if __name__ == "__main__":
    main()
