"""Drive a running gateway like many Synapse pushers at once, and record every answer.

One thread per pushkey sends strictly in order, as Synapse's pusher does: POST, and on anything
but a 200 retry the same body with backoff before moving on. A dispatcher hands each thread its
next notification at the overall rate. Notifications are messages (each a new event), badge-only
reads (`unread` 0: the user read everything) and deliberate re-sends of a body already answered
(Synapse retrying after a lost answer). A pushkey answered `rejected` for an event stops getting
notifications (Synapse deletes its pusher).

Only HTTP to the gateway: nothing here knows how the engine works inside.
"""

from __future__ import annotations

import json
import queue
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "synapse-1.163.2"
MESSAGE_FIXTURE = "message_dm_2_members.1.full.json"
READ_FIXTURE = "read_receipt_dm_badge.0.full.json"
NOTIFY_PATH = "/_matrix/push/v1/notify"
# Synapse's own timeout for a notify request is longer; a hung gateway shows up as retries.
CLIENT_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class LoadConfig:
    notifications: int = 5000
    pushkeys: int = 100
    seed: int = 1
    # New notifications per second, overall. 10/s is what local mode (v1 engine, moto) keeps up
    # with on 2 cores; 45/s saturates it (notify answers take seconds, senders time out).
    rate: float = 10.0
    delay: int = 2  # each pushkey's delay_seconds
    read_ratio: float = 0.12
    # A message read at once on another device: the read races the push's delay.
    read_soon_ratio: float = 0.08
    resend_ratio: float = 0.06
    # A message may come with 1-3 more right behind it (they coalesce into one push).
    burst_ratio: float = 0.15
    bad_token_ratio: float = 0.05  # pushkeys whose Gotify token the fake rejects (401)
    # Synapse backs off 1, 2, 4 ... s; capped lower here to keep runs short.
    backoff_cap: float = 4.0
    max_attempts: int = 12
    # Re-send, after the gateway is idle, this share of accepted events (and every event of a
    # batch that ended `failed`): they must all stay duplicates.
    replay_ratio: float = 0.05


@dataclass(frozen=True)
class Attempt:
    """One POST to the notify endpoint."""

    pk: int
    kind: str  # event, read, resend, replay
    event_id: str | None
    start: float  # time.time()
    end: float
    status: int  # 0: no answer (connection error or client timeout)
    rejected: bool  # the answer listed the pushkey in `rejected`


@dataclass(frozen=True)
class Item:
    """One notification to send: `body` only for replays (the others are made when sent)."""

    pk: int
    kind: str  # event, read, resend, replay
    body: dict[str, Any] | None = None


@dataclass
class Pushkey:
    index: int
    pushkey: str
    bad_token: bool
    sent_events: int = 0
    unread: int = 0
    # Bodies answered 200 that named events, in order: what a Synapse retry re-sends.
    answered: list[dict[str, Any]] = field(default_factory=list)
    gone: bool = False  # answered `rejected`: Synapse deleted the pusher
    gave_up: int = 0


class Gateway:
    """The few HTTP calls the load test makes."""

    def __init__(self, base_url: str, admin_token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.admin_token = admin_token

    def call(
        self, method: str, path: str, body: Any = None, *, admin: bool = True
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        if admin:
            request.add_header("Authorization", f"Bearer {self.admin_token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=CLIENT_TIMEOUT_SECONDS) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, payload = error.code, error.read()
        try:
            parsed = json.loads(payload) if payload else None
        except ValueError:
            parsed = None
        return status, parsed

    def register(self, target_url: str, token: str, delay: int) -> str:
        body = {
            "backend": "gotify",
            "target": {"url": target_url, "token": token},
            "delay_seconds": delay,
        }
        status, answer = self.call("POST", "/api/v1/pushkeys", body)
        if status != 201:
            raise RuntimeError(f"registration answered {status}: {answer}")
        return str(answer["pushkey"])

    def deliveries(self, pushkey: str) -> list[dict[str, Any]]:
        status, answer = self.call("GET", f"/api/v1/pushkeys/{quote(pushkey, safe='')}/deliveries")
        if status != 200:
            raise RuntimeError(f"deliveries answered {status}: {answer}")
        return list(answer["deliveries"])


def _fixture(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return body


class Bodies:
    """Notify bodies made from captured Synapse ones."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._message = _fixture(MESSAGE_FIXTURE)
        self._read = _fixture(READ_FIXTURE)

    def event_id(self, pk: int, n: int) -> str:
        return f"$L{self.seed}-{pk}-{n}"

    def message(self, pk: Pushkey) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(json.dumps(self._message))
        notification = body["notification"]
        event_id = self.event_id(pk.index, pk.sent_events)
        notification["event_id"] = notification["id"] = event_id
        # The id in the text is how the fake knows which event a push shows.
        notification["content"]["body"] = f"load test message {event_id}"
        notification["counts"]["unread"] = pk.unread
        notification["devices"][0]["pushkey"] = pk.pushkey
        return body

    def read(self, pk: Pushkey) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(json.dumps(self._read))
        body["notification"]["counts"]["unread"] = 0
        body["notification"]["devices"][0]["pushkey"] = pk.pushkey
        return body


def plan(config: LoadConfig) -> list[Item]:
    """The notifications in dispatch order."""
    rng = random.Random(f"plan/{config.seed}")
    items: list[Item] = []
    while len(items) < config.notifications:
        pk = rng.randrange(config.pushkeys)
        x = rng.random()
        if x < config.read_ratio:
            items.append(Item(pk, "read"))
        elif x < config.read_ratio + config.resend_ratio:
            items.append(Item(pk, "resend"))
        else:
            burst = 1 + (rng.randint(1, 3) if rng.random() < config.burst_ratio else 0)
            items += [Item(pk, "event")] * burst
            if rng.random() < config.read_soon_ratio:
                items.append(Item(pk, "read"))
    return items[: config.notifications]


class Driver:
    def __init__(self, config: LoadConfig, gateway: Gateway) -> None:
        self.config = config
        self.gateway = gateway
        self.bodies = Bodies(config.seed)
        self.pushkeys: list[Pushkey] = []
        self.attempts: list[Attempt] = []
        self._lock = threading.Lock()

    def register(self, target_url: str, good_token: str, bad_token: str) -> None:
        count = self.config.pushkeys
        bad_count = round(count * self.config.bad_token_ratio)
        bad = set(random.Random(f"bad/{self.config.seed}").sample(range(count), bad_count))
        for index in range(count):
            token = bad_token if index in bad else good_token
            pushkey = self.gateway.register(target_url, token, self.config.delay)
            self.pushkeys.append(Pushkey(index, pushkey, index in bad))

    # --- sending ------------------------------------------------------------------------------

    def run(self, items: Sequence[Item]) -> None:
        """Send `items` at the configured rate, each pushkey's in order; return when every
        one is answered (or given up on)."""
        queues: list[queue.Queue[Item | None]] = [queue.Queue() for _ in self.pushkeys]
        threads = [
            threading.Thread(target=self._sender, args=(pk, queues[pk.index]), daemon=True)
            for pk in self.pushkeys
        ]
        for thread in threads:
            thread.start()
        started = time.monotonic()
        for number, item in enumerate(items):
            pause = started + number / self.config.rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            queues[item.pk].put(item)
        for pending in queues:
            pending.put(None)
        for thread in threads:
            thread.join()

    def _sender(self, pk: Pushkey, pending: queue.Queue[Item | None]) -> None:
        rng = random.Random(f"resend/{self.config.seed}/{pk.index}")
        while (item := pending.get()) is not None:
            if pk.gone:
                continue
            kind, body = item.kind, item.body
            if kind == "event":
                pk.sent_events += 1
                pk.unread += 1
                body = self.bodies.message(pk)
            elif kind == "read":
                pk.unread = 0
                body = self.bodies.read(pk)
            elif kind == "resend":
                if not pk.answered:
                    continue
                # Mostly the last one (the answer was lost), sometimes an older one.
                recent = pk.answered[-5:]
                body = recent[-1] if rng.random() < 0.7 else rng.choice(recent)
            assert body is not None
            status, rejected = self._send_until_answered(pk, kind, body)
            event_id = body["notification"].get("event_id")
            if status == 200 and event_id and kind == "event":
                pk.answered.append(body)
            if rejected and event_id:
                pk.gone = True

    def _send_until_answered(
        self, pk: Pushkey, kind: str, body: dict[str, Any]
    ) -> tuple[int, bool]:
        event_id = body["notification"].get("event_id")
        for attempt in range(self.config.max_attempts):
            start = time.time()
            try:
                status, answer = self.gateway.call("POST", NOTIFY_PATH, body, admin=False)
            except OSError:
                status, answer = 0, None
            end = time.time()
            rejected = (
                status == 200
                and isinstance(answer, dict)
                and pk.pushkey in (answer.get("rejected") or [])
            )
            with self._lock:
                self.attempts.append(
                    Attempt(pk.index, kind, event_id, start, end, status, rejected)
                )
            if status == 200:
                return status, rejected
            time.sleep(min(2.0**attempt, self.config.backoff_cap))
        pk.gave_up += 1
        return 0, False

    # --- reading the gateway ------------------------------------------------------------------

    def deliveries(self) -> dict[int, list[dict[str, Any]]]:
        return {pk.index: self.gateway.deliveries(pk.pushkey) for pk in self.pushkeys}
