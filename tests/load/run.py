"""One load run against a gateway that is already listening: register, send, wait until the
gateway is idle, replay some accepted events as Synapse would, wait again, audit."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tests.load.audit import Report, accepted_by_pushkey, audit, coverage, events_from
from tests.load.driver import Driver, Gateway, Item, LoadConfig, plan
from tests.load.fake_backend import LATE_SECONDS, FaultRates, FaultyGotify

GOOD_TOKEN = "AppToken.LoadGood1"
BAD_TOKEN = "AppToken.LoadRevoked1"
# Gotify's retry schedule in the state machine: 2, 4, ... 64 s between 7 attempts, each of which
# may wait out the read timeout.
RETRY_SCHEDULE_SECONDS = 2 + 4 + 8 + 16 + 32 + 64 + 7 * LATE_SECONDS
# The gateway is idle when the fake has heard nothing for this long and the log stopped growing.
QUIET_SECONDS = 2.0
POLL_SECONDS = 2.0
# Replays pick among each pushkey's latest events only: the gateway recognises duplicates among a
# pushkey's last 8 batches — at least its last 8 events (a documented bound) — and Synapse,
# sending in order, only ever retries its latest one.
REPLAY_WINDOW = 8

Logs = dict[int, list[dict[str, Any]]]


def run_load(
    config: LoadConfig,
    gateway_url: str,
    admin_token: str,
    *,
    rates: FaultRates,
    idle_timeout: float | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> Report:
    if idle_timeout is None:
        idle_timeout = config.delay + RETRY_SCHEDULE_SECONDS + 30
    fake = FaultyGotify(seed=config.seed, rates=rates, good_token=GOOD_TOKEN).start()
    try:
        driver = Driver(config, Gateway(gateway_url, admin_token))
        driver.register(fake.base_url, GOOD_TOKEN, BAD_TOKEN)
        started = time.monotonic()
        say(f"sending {config.notifications} notifications to {config.pushkeys} pushkeys")
        driver.run(plan(config))
        send_seconds = time.monotonic() - started
        say(f"sent in {send_seconds:.0f} s; waiting for the gateway to go idle")
        idle_started = time.monotonic()
        time.sleep(config.delay)
        logs, timed_out = wait_until_idle(driver, fake.last_push_at, idle_timeout)
        idle_seconds = time.monotonic() - idle_started
        replays = replay_items(config, driver, logs)
        say(f"idle after {idle_seconds:.0f} s; replaying {len(replays)} accepted events")
        replay_started = time.time()
        driver.run(replays)
        time.sleep(config.delay + 1)
        logs, replay_timed_out = wait_until_idle(driver, fake.last_push_at, idle_timeout)
        timing = {
            "send_seconds": send_seconds,
            "idle_seconds": idle_seconds,
            "wall_seconds": time.monotonic() - started,
            "replay_started": replay_started,
            "idle_timed_out": float(timed_out or replay_timed_out),
        }
        return audit(
            config,
            pushkeys=driver.pushkeys,
            attempts=driver.attempts,
            logs=logs,
            pushes=list(fake.pushes),
            timing=timing,
        )
    finally:
        fake.stop()


def wait_until_idle(
    driver: Driver, last_push_at: Callable[[], float], timeout: float
) -> tuple[Logs, bool]:
    """Poll `/deliveries` until every accepted event has an outcome, the log stopped growing and
    the fake heard nothing for a while. Returns the last logs read, and whether time ran out."""
    deadline = time.monotonic() + timeout
    accepted = accepted_by_pushkey(events_from(driver.attempts))
    previous = -1
    while True:
        logs = driver.deliveries()
        size = sum(map(len, logs.values()))
        missing = sum(
            coverage(accepted.get(pk, set()), entries).lost for pk, entries in logs.items()
        )
        quiet = time.time() - last_push_at() >= QUIET_SECONDS
        if missing == 0 and size == previous and quiet:
            return logs, False
        if time.monotonic() > deadline:
            return logs, True
        previous = size
        time.sleep(POLL_SECONDS)


def replay_items(
    config: LoadConfig, driver: Driver, logs: Mapping[int, Sequence[Any]]
) -> list[Item]:
    """Synapse re-sending events already answered: every event of a batch that ended `failed`
    (the case where a retry must not start the event over) and a share of the others."""
    rng = random.Random(f"replay/{config.seed}")
    failed = {
        str(entry["event_id"])
        for entries in logs.values()
        for entry in entries
        if entry.get("outcome") == "failed" and entry.get("event_id")
    }
    items = []
    for pk in driver.pushkeys:
        if pk.gone:
            continue
        for body in pk.answered[-REPLAY_WINDOW:]:
            event_id = body["notification"]["event_id"]
            if event_id in failed or rng.random() < config.replay_ratio:
                items.append(Item(pk.index, "replay", body))
    rng.shuffle(items)
    return items
