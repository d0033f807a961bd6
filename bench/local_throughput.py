"""Sustained load on local mode: does it hold a real homeserver's notifications?

Starts local mode as `make run` does (`python -m mxpush_local`, its own process, state file
and access log on), a fake Gotify that fails some pushes (503, slow answers) in this process,
registers pushkeys, then sends Synapse notify bodies through real HTTP at a fixed rate (open
loop: a late answer does not slow the next send) - the homeserver and the push server are
other processes, as in real life. Every few seconds it samples the gateway process's RSS,
thread count and CPU; at the end it reports the achieved rate, notify latency percentiles,
RSS growth after the warm-up, the most threads seen, CPU ms per notification, and how many
pushes reached the fake.

    .venv/bin/python bench/local_throughput.py --rate 50 --seconds 600

The report goes to stderr. `--in-process` runs the gateway in this process instead (with
moto's table footprint in the report).

To see where the CPU goes, sample it from outside (cProfile sees one thread only):
`py-spy record --pid PID --duration 60 --format raw -o profile.txt` (PID is printed at start).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import random
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "layers" / "mxpush"), str(ROOT / "local")]

from tests.conftest import synapse_body, with_event_id  # noqa: E402
from tests.fakes.gotify import FakeGotify  # noqa: E402
from tests.fakes.server import Received, Reply  # noqa: E402

from mxpush_local.__main__ import settle_collector  # noqa: E402
from mxpush_local.gateway import LocalGateway, LocalSettings  # noqa: E402

ADMIN_TOKEN = "bench-admin-token"  # noqa: S105 - local mode's, for this run
SAMPLE_SECONDS = 5.0


class FaultyGotify(FakeGotify):
    """Gotify that answers 503 to a share of pushes and is slow on another share: the retry
    state machine and the async-invoke retries run too. Forgets what it received (memory)."""

    def __init__(
        self, *, fail_share: float, slow_share: float, seed: int, pushkeys: int, delay: float
    ) -> None:
        # One application token per pushkey: a push says whose it is.
        super().__init__(app_tokens=tuple(app_token(k) for k in range(pushkeys)))
        self.fail_share = fail_share
        self.slow_share = slow_share
        self._random = random.Random(seed)  # noqa: S311 - faults, not secrets
        self.delivered = 0
        self.failed = 0
        # When each pushkey's oldest notify not yet pushed was sent (a batch's first event
        # starts its delay), and how long after it (less the delay) each delivered push
        # arrived: how far delivery lags.
        self.notified_at: dict[str, float] = {}
        self.lags: list[float] = []
        self.delay = delay

    def _record(self, request: Received) -> Reply:
        roll = self._random.random()
        if roll < self.fail_share:
            self.failed += 1
            return Reply(503, {"error": "Service Unavailable"})
        reply = self.respond(request)
        self.messages.clear()
        if reply.status == 200:
            self.delivered += 1
            sent = self.notified_at.pop(request.headers.get("x-gotify-key", ""), None)
            if sent is not None:
                self.lags.append(time.monotonic() - sent - self.delay)
        if roll < self.fail_share + self.slow_share:
            reply.delay = 1.0
        return reply


@dataclass
class Sample:
    at: float
    sent: int
    rss_mb: float
    threads: int
    cpu_s: float


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def rss_mb(pid: str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def thread_count(pid: str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: str = "self") -> float:
    if pid == "self":
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    # /proc/PID/stat: utime and stime are fields 14 and 15, after the parenthesised name.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class GatewayProcess:
    """`python -m mxpush_local` (what `make run` starts) in its own process, on a free port, with
    its state file in a temporary directory; its log lines go to /dev/null."""

    def __init__(self, delay: int, state_dir: str) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "mxpush"), str(ROOT / "local")]),
            "MXPUSH_ADMIN_TOKEN": ADMIN_TOKEN,
            "MXPUSH_DELAY_SECONDS": str(delay),
            "MXPUSH_STATE": str(Path(state_dir) / "state.jsonl"),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mxpush_local", "--port", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.pid = str(self.process.pid)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/metrics", timeout=2):  # noqa: S310
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("the gateway did not start within 60 s")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def post(url: str, body: dict[str, Any], token: str | None = None) -> tuple[int, Any]:
    # http://127.0.0.1 only: the gateway this script started.
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")  # noqa: S310
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def app_token(pushkey_number: int) -> str:
    return f"AppToken.Bench{pushkey_number}"


def register(base: str, gotify: FaultyGotify, delay: int, number: int) -> str:
    status, answer = post(
        base + "/api/v1/pushkeys",
        {
            "backend": "gotify",
            "target": {"url": gotify.base_url, "token": app_token(number)},
            "delay_seconds": delay,
        },
        ADMIN_TOKEN,
    )
    if status != 201:
        raise RuntimeError(f"registration failed: {status} {answer!r}")
    return str(answer["pushkey"])


def notify(run: Run, base: str, body: dict[str, Any]) -> None:
    started = time.perf_counter()
    try:
        status, _ = post(base + "/_matrix/push/v1/notify", body)
        outcome = "ok" if status == 200 else str(status)
    except OSError as exc:
        outcome = type(exc).__name__
    elapsed = time.perf_counter() - started
    with run.lock:
        run.latencies.append(elapsed)
        if outcome != "ok":
            run.errors[outcome] = run.errors.get(outcome, 0) + 1


def sampler(run: Run, stop: threading.Event, t0: float, pid: str) -> None:
    while not stop.wait(SAMPLE_SECONDS):
        sample = Sample(time.monotonic() - t0, run.sent, rss_mb(pid), thread_count(pid), 0.0)
        sample.cpu_s = cpu_seconds(pid)
        run.samples.append(sample)
        say(
            f"  t={sample.at:6.0f}s sent={sample.sent:6d} rss={sample.rss_mb:7.1f} MB "
            f"threads={sample.threads:4d}"
        )


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main() -> None:  # noqa: PLR0915 - one linear script
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0, help="notifications per second")
    parser.add_argument("--seconds", type=float, default=180.0, help="measured duration")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds before measuring")
    parser.add_argument("--pushkeys", type=int, default=200)
    parser.add_argument("--delay", type=int, default=2, help="each pushkey's delay_seconds")
    parser.add_argument("--fail-share", type=float, default=0.05, help="pushes answered 503")
    parser.add_argument("--slow-share", type=float, default=0.02, help="pushes answered in 1 s")
    parser.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run the gateway in this process (to profile it with the driver; by default it "
        "runs in its own process, as `make run` does, and is measured alone)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    gotify = FaultyGotify(
        fail_share=args.fail_share,
        slow_share=args.slow_share,
        seed=7,
        pushkeys=args.pushkeys,
        delay=args.delay,
    )
    gotify.start()
    state_dir = tempfile.TemporaryDirectory(prefix="mxpush-bench-")
    gateway: LocalGateway | GatewayProcess
    if args.in_process:
        settings = LocalSettings(port=0, admin_token=ADMIN_TOKEN, delay_seconds=args.delay)
        gateway = LocalGateway(LocalSettings(**{**settings.__dict__, "access_log": False}))
        gateway.start()
        settle_collector()  # as `python -m mxpush_local` does
        pid = "self"
    else:
        gateway = GatewayProcess(args.delay, state_dir.name)
        pid = gateway.pid
    base = gateway.url
    fixture = synapse_body("message_group_3_members.1.full")
    say(f"pid {os.getpid() if args.in_process else pid}, gateway {base}")
    try:
        pushkeys = [register(base, gotify, args.delay, k) for k in range(args.pushkeys)]
        run = Run()
        stop = threading.Event()
        t0 = time.monotonic()
        threading.Thread(target=sampler, args=(run, stop, t0, pid), daemon=True).start()
        clients = ThreadPoolExecutor(max_workers=args.clients, thread_name_prefix="bench-client")
        total = args.warmup + args.seconds
        interval = 1.0 / args.rate
        measure_from = 0
        cpu_at_measure = 0.0
        lat_from = 0
        i = 0
        while True:
            due = t0 + i * interval
            now = time.monotonic()
            if due - t0 >= total:
                break
            if due > now:
                time.sleep(due - now)
            if i == int(args.warmup * args.rate):
                measure_from = i
                cpu_at_measure = cpu_seconds(pid)
                with run.lock:
                    lat_from = len(run.latencies)
            pushkey = pushkeys[i % len(pushkeys)]
            body = with_event_id(fixture, f"$bench{i}")
            for device in body["notification"]["devices"]:
                device["pushkey"] = pushkey
            body["notification"]["counts"] = {"unread": 1 + i // len(pushkeys)}
            gotify.notified_at.setdefault(app_token(i % len(pushkeys)), time.monotonic())
            clients.submit(notify, run, base, body)
            run.sent = i + 1
            i += 1
        clients.shutdown(wait=True)
        elapsed = time.monotonic() - t0 - args.warmup
        cpu_used = cpu_seconds(pid) - cpu_at_measure
        stop.set()
        report(args, run, measure_from, lat_from, elapsed, cpu_used, gotify)
        if isinstance(gateway, LocalGateway):
            say(table_footprint(gateway.aws.table_name))
        # Let the last slots fire, so the delivered count covers nearly everything sent.
        time.sleep(args.delay + 3)
        say(
            f"fake Gotify: {gotify.delivered} delivered, {gotify.failed} answered 503 "
            f"(of {run.sent} notifications; coalescing makes delivered < sent)"
        )
        if gotify.lags:
            lags = gotify.lags
            say(
                f"push lag after the {args.delay} s delay (slots are whole seconds; 503s retry): "
                f"p50 {statistics.median(lags):.2f} s, p95 {percentile(lags, 0.95):.2f} s, "
                f"max {max(lags):.2f} s"
            )
    finally:
        gateway.stop()
        gotify.stop()
        state_dir.cleanup()


def deep_size(root: object) -> int:
    """Bytes reachable from `root` and not from elsewhere (roughly: types and modules are
    skipped, shared small objects counted once per root)."""
    seen: set[int] = set()
    stack = [root]
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (type, types.ModuleType, types.FunctionType)):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


def table_footprint(table_name: str) -> str:
    """What the delivery log and the indexes hold in moto: they stay for days (TTL), so they
    grow with every notification in a run this short."""
    from moto.dynamodb.models import dynamodb_backends

    table = dynamodb_backends["123456789012"]["us-east-1"].get_table(table_name)
    items = [item for partition in table.items.values() for item in partition.values()]
    kinds: dict[str, int] = {}
    for item in items:
        rid = str(item.hash_key.value)
        sk = str(item.range_key.value) if item.range_key else ""
        if "#" in rid.split("|", maxsplit=1)[0][:8]:
            kind = rid.split("#", maxsplit=1)[0]  # due#, slots#, claim#
        else:
            kind = "batch" if sk.startswith("b#") else sk
        kinds[kind] = kinds.get(kind, 0) + 1
    sample = items[:: max(1, len(items) // 200)]
    per_item = sum(deep_size(item) for item in sample) / max(1, len(sample))
    return (
        f"moto table: {len(items)} items {kinds}, ~{per_item / 1024:.1f} KB each in memory, "
        f"~{len(items) * per_item / 2**20:.0f} MB in all"
    )


def report(  # noqa: PLR0917
    args: argparse.Namespace,
    run: Run,
    measure_from: int,
    lat_from: int,
    elapsed: float,
    cpu_used: float,
    gotify: FaultyGotify,
) -> None:
    measured = run.sent - measure_from
    latencies = run.latencies[lat_from:]
    warm = [s for s in run.samples if s.at >= args.warmup]
    say(f"## local mode, {args.rate:g}/s offered for {args.seconds:g}s after a warm-up")
    say(f"sustained: {len(latencies) / elapsed:.1f} notifications/s answered ({measured} sent)")
    if latencies:
        say(
            f"notify latency: p50 {statistics.median(latencies) * 1000:.0f} ms, "
            f"p95 {percentile(latencies, 0.95) * 1000:.0f} ms, "
            f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms, "
            f"max {max(latencies) * 1000:.0f} ms"
        )
    say(f"errors: {run.errors or 'none'}")
    say(f"CPU: {cpu_used * 1000 / max(1, measured):.1f} ms per notification (gateway process)")
    if warm:
        say(
            f"RSS: {warm[0].rss_mb:.1f} MB after warm-up -> {warm[-1].rss_mb:.1f} MB at the end "
            f"({warm[-1].rss_mb - warm[0].rss_mb:+.1f} MB); "
            f"threads: max {max(s.threads for s in run.samples)}"
        )
        # What local mode keeps for minutes - items not yet packed (40 s) and made cold (60 s),
        # finished executions (2 minutes) - fills up in the first minutes; from then on, RSS
        # grows by what the table keeps for days (TTL).
        settled = [s for s in warm if s.at >= args.warmup + SETTLE_SECONDS]
        if settled:
            say(
                f"RSS after {args.warmup + SETTLE_SECONDS:.0f} s: {settled[0].rss_mb:.1f} MB -> "
                f"{settled[-1].rss_mb:.1f} MB at the end "
                f"({settled[-1].rss_mb - settled[0].rss_mb:+.1f} MB)"
            )
        # Its rate over the second half.
        half = [s for s in warm if s.at >= warm[0].at + (warm[-1].at - warm[0].at) / 2]
        if len(half) >= 2 and half[-1].sent > half[0].sent:
            per_notification = (half[-1].rss_mb - half[0].rss_mb) / (half[-1].sent - half[0].sent)
            say(f"RSS growth over the second half: {per_notification * 1000:.2f} MB per 1,000 sent")
    say(f"load average: {os.getloadavg()[0]:.2f} (2 cores shared)")
    del gotify


# Seconds after the warm-up by when what local mode keeps for minutes is in place.
SETTLE_SECONDS = 150


if __name__ == "__main__":
    main()
