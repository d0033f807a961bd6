"""The pure parts of `make bench`'s cost model: public us-east-1 prices, DynamoDB item sizes and
capacity units as AWS bills them, billable Step Functions transitions in an execution history,
and the synthetic notification traces. No AWS, no moto: `bench/cost.py` measures, this prices.
"""

from __future__ import annotations

import base64
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

# --- prices (us-east-1, public, per unit) ------------------------------------------------------


@dataclass(frozen=True)
class Prices:
    step_functions_transition: float = 25.0 / 1e6  # Standard
    lambda_request: float = 0.20 / 1e6
    lambda_gb_second: float = 0.0000133334  # arm64
    http_api_request: float = 1.0 / 1e6
    dynamodb_write_unit: float = 0.625 / 1e6  # on-demand
    dynamodb_read_unit: float = 0.125 / 1e6
    sqs_request: float = 0.40 / 1e6


PRICES = Prices()
COMPONENTS = (
    "Step Functions",
    "Lambda requests",
    "Lambda GB-s",
    "HTTP API",
    "DynamoDB writes",
    "DynamoDB reads",
    "SQS",
)


@dataclass
class Usage:
    """What a replay consumed, in billing units."""

    notifications: int = 0
    transitions: int = 0
    lambda_requests: int = 0
    lambda_gb_seconds: float = 0.0
    http_requests: int = 0
    write_units: float = 0.0
    read_units: float = 0.0
    sqs_requests: int = 0


def dollars_per_million(usage: Usage, prices: Prices = PRICES) -> dict[str, float]:
    """$ per 1M notifications by component (and "total")."""
    if usage.notifications <= 0:
        raise ValueError("no notifications to price")
    scale = 1e6 / usage.notifications
    costs = {
        "Step Functions": usage.transitions * prices.step_functions_transition,
        "Lambda requests": usage.lambda_requests * prices.lambda_request,
        "Lambda GB-s": usage.lambda_gb_seconds * prices.lambda_gb_second,
        "HTTP API": usage.http_requests * prices.http_api_request,
        "DynamoDB writes": usage.write_units * prices.dynamodb_write_unit,
        "DynamoDB reads": usage.read_units * prices.dynamodb_read_unit,
        "SQS": usage.sqs_requests * prices.sqs_request,
    }
    per_million = {name: cost * scale for name, cost in costs.items()}
    per_million["total"] = sum(per_million.values())
    return per_million


def lambda_gb_seconds(duration_seconds: float, memory_mb: int) -> float:
    """One invocation's GB-s: Lambda bills the duration rounded up to the millisecond."""
    billed_ms = math.ceil(duration_seconds * 1000)
    return billed_ms / 1000 * memory_mb / 1024


# --- DynamoDB item size and capacity units -----------------------------------------------------
# https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html

WRITE_UNIT_BYTES = 1024
READ_UNIT_BYTES = 4096


def dynamodb_item_size(item: Mapping[str, Any]) -> int:
    """An item's size in bytes as DynamoDB bills it; `item` in DynamoDB JSON
    (`{"name": {"S": "x"}, ...}`): attribute names plus values."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _value_size(value: Mapping[str, Any]) -> int:
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(str(inner).encode())
    if kind == "N":
        return _number_size(str(inner))
    if kind == "B":
        return len(_raw_bytes(inner))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(str(s).encode()) for s in inner)
    if kind == "NS":
        return sum(_number_size(str(n)) for n in inner)
    if kind == "BS":
        return sum(len(_raw_bytes(b)) for b in inner)
    if kind == "L":
        # 3 bytes for the list, 1 per element.
        return 3 + sum(_value_size(v) + 1 for v in inner)
    if kind == "M":
        return 3 + sum(len(k.encode()) + _value_size(v) + 1 for k, v in inner.items())
    raise ValueError(f"not a DynamoDB attribute type: {kind}")


def _number_size(text: str) -> int:
    """1 byte per two significant digits (leading and trailing zeros trimmed), plus 1."""
    try:
        digits = Decimal(text).as_tuple().digits
    except InvalidOperation:
        raise ValueError(f"not a number: {text!r}") from None
    significant = "".join(map(str, digits)).strip("0") or "0"
    return math.ceil(len(significant) / 2) + 1


def _raw_bytes(value: Any) -> bytes:
    # boto3 hands bytes; the wire (and moto's storage) has base64 text.
    return value if isinstance(value, bytes) else base64.b64decode(value)


def write_units(size_before: int, size_after: int, *, transactional: bool = False) -> int:
    """A write costs 1 unit per started KB of the larger of the item before and after (a failed
    condition costs the item it checked: pass the same size twice); transactions cost double."""
    units = max(1, math.ceil(max(size_before, size_after) / WRITE_UNIT_BYTES))
    return 2 * units if transactional else units


def read_units(size: int, *, consistent: bool, transactional: bool = False) -> float:
    """A read costs 1 unit per started 4 KB (strongly consistent), half that eventually
    consistent, double in a transaction. Query/Scan: pass the summed size of the items read."""
    units = max(1, math.ceil(size / READ_UNIT_BYTES))
    if transactional:
        return 2.0 * units
    return float(units) if consistent else units / 2


# --- Step Functions transitions ----------------------------------------------------------------

_SCHEDULED = frozenset({"TaskScheduled", "LambdaFunctionScheduled", "ActivityScheduled"})


def billable_transitions(events: Iterable[Mapping[str, Any]]) -> int:
    """Standard workflows bill each state entered, and each retry of a Task: every extra
    `*Scheduled` event after the first since the last `*StateEntered`."""
    transitions = 0
    scheduled_since_entry = 0
    for event in events:
        kind = str(event.get("type", ""))
        if kind.endswith("StateEntered"):
            transitions += 1
            scheduled_since_entry = 0
        elif kind in _SCHEDULED:
            if scheduled_since_entry > 0:
                transitions += 1  # a retry attempt
            scheduled_since_entry += 1
    return transitions


# --- traces ------------------------------------------------------------------------------------

MESSAGE, READ, CALL, NOOP_BADGE = "message", "read", "call", "noop_badge"
KINDS = (MESSAGE, READ, CALL, NOOP_BADGE)


@dataclass(frozen=True)
class Mix:
    """Trace A's mix, per notification: messages in bursts of 1-5, badge-only reads that cancel
    a burst, calls, and badge-only updates that change nothing."""

    messages: float = 0.60
    reads: float = 0.25
    calls: float = 0.03
    noop_badges: float = 0.12
    burst_weights: tuple[float, ...] = (0.5, 0.2, 0.15, 0.1, 0.05)


TRACE_A_MIX = Mix()


@dataclass(frozen=True)
class Notify:
    at: float  # seconds from the start of the trace
    kind: str
    pushkey: int
    episode: int
    unread: int  # counts.unread


@dataclass
class Episode:
    """What one pushkey sees: a burst (then maybe the read that cancels it), a call, or a badge
    update while nothing waits. A delivered episode pushes once, due at `due`."""

    index: int
    kind: str  # "burst", "call" or "noop_badge"
    pushkey: int
    start: float
    notifies: list[Notify] = field(default_factory=list)
    delivered: bool = False
    due: float = 0.0  # planned; the replay replaces it with accept time + delay


@dataclass
class Trace:
    episodes: list[Episode]
    pushkeys: int  # how many distinct pushkeys it uses
    delay: int

    @property
    def notifies(self) -> list[Notify]:
        return sorted((n for e in self.episodes for n in e.notifies), key=lambda n: n.at)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(KINDS, 0)
        for episode in self.episodes:
            for notify in episode.notifies:
                counts[notify.kind] += 1
        return counts


# After a delivered push is due, its pushkey stays quiet this long (the sender claims the batch;
# a message before that would join it rather than open a new one).
DELIVERY_MARGIN = 5.0
# A read lands at least this long before the push is due (it must cancel, not race the sender).
READ_SAFETY = 1.0
MIN_DELAY = 3


def generate_trace(
    notifications: int,
    *,
    rate: float,
    delay: int,
    pushkeys: int = 200,
    mix: Mix = TRACE_A_MIX,
    seed: int = 8,
) -> Trace:
    """About `notifications` notifications at `rate` per second on average, in trace A's `mix`.

    Episodes start in a shuffled order, paced so the whole trace runs at `rate`; each goes to a
    pushkey that has nothing under way (more pushkeys than `pushkeys` if all are busy)."""
    if delay < MIN_DELAY:
        raise ValueError(f"delay must be at least {MIN_DELAY} s (reads must land within it)")
    if rate <= 0 or notifications <= 0:
        raise ValueError("rate and notifications must be positive")
    rng = random.Random(seed)  # noqa: S311 - a reproducible trace, not a secret
    plan = _episode_plan(notifications, mix, rng)
    gap = min(0.5, delay * 0.4 / 4)  # a 5-message burst spans at most 40 % of the delay
    free_at: list[float] = [0.0] * pushkeys
    episodes: list[Episode] = []
    sent = 0
    for index, (kind, size, read) in enumerate(plan):
        start = sent / rate
        candidates = [p for p, t in enumerate(free_at) if t <= start]
        if not candidates:
            free_at.append(0.0)
            candidates = [len(free_at) - 1]
        pushkey = rng.choice(candidates)
        episode = Episode(index, kind, pushkey, start)
        if kind == "burst":
            for i in range(size):
                episode.notifies.append(Notify(start + i * gap, MESSAGE, pushkey, index, i + 1))
            last = start + (size - 1) * gap
            if read:
                earliest, latest = last + 0.3, start + delay - READ_SAFETY
                at = rng.uniform(earliest, max(earliest, latest))
                episode.notifies.append(Notify(at, READ, pushkey, index, 0))
                free_at[pushkey] = at + 0.5
            else:
                episode.delivered = True
                episode.due = start + delay
                free_at[pushkey] = episode.due + DELIVERY_MARGIN
        elif kind == "call":
            episode.notifies.append(Notify(start, CALL, pushkey, index, 1))
            episode.delivered = True
            episode.due = start
            free_at[pushkey] = start + DELIVERY_MARGIN
        else:
            # Nothing pending on this pushkey, and the count does not drop: nothing to do.
            episode.notifies.append(Notify(start, NOOP_BADGE, pushkey, index, 1))
            free_at[pushkey] = start + 0.5
        episodes.append(episode)
        sent += len(episode.notifies)
    return Trace(episodes, len(free_at), delay)


def _episode_plan(notifications: int, mix: Mix, rng: random.Random) -> list[tuple[str, int, bool]]:
    """(kind, burst size, read?) per episode, shuffled; message counts drawn from the burst
    weights until the message share is reached."""
    messages_wanted = round(notifications * mix.messages)
    sizes: list[int] = []
    while sum(sizes) < messages_wanted:
        size = rng.choices(range(1, len(mix.burst_weights) + 1), weights=mix.burst_weights)[0]
        sizes.append(min(size, messages_wanted - sum(sizes)))
    reads = min(len(sizes), round(notifications * mix.reads))
    read_flags = [True] * reads + [False] * (len(sizes) - reads)
    rng.shuffle(read_flags)
    plan: list[tuple[str, int, bool]] = [
        ("burst", size, read) for size, read in zip(sizes, read_flags, strict=True)
    ]
    plan += [("call", 1, False)] * round(notifications * mix.calls)
    plan += [("noop_badge", 1, False)] * round(notifications * mix.noop_badges)
    rng.shuffle(plan)
    return plan


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (`fraction` in 0..1)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]
