"""The exactly-once audit: what the driver was told, what `/deliveries` says, what the fake got.

Works with both shapes of the delivery log: one entry per event (`delivered_with` links a
coalesced event to the event its push showed), and entries that carry `"batch"`, where a big
batch may list only its latest events while `count` stays its true size.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.load.driver import Attempt, LoadConfig, Pushkey
from tests.load.fake_backend import Fault, Push

# GET /deliveries answers at most this many entries (registration.MAX_DELIVERY_ENTRIES, no
# `limit` parameter): a pushkey with that many entries may have outcomes the audit cannot see.
LOG_CAP = 100
# Slack for the gap between the notify answer and the moment the batch's wait really starts.
READ_MARGIN_SECONDS = 0.5
MAX_EXAMPLES = 3


@dataclass
class EventInfo:
    pk: int
    first_start: float  # the first POST naming it started
    accepted_at: float | None = None  # the first answer that accepted it
    answered_rejected: bool = False
    replayed: bool = False


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    must_be_zero: bool = False
    unit: str = ""

    def render(self) -> str:
        text = f"{self.value:.0f}" if float(self.value).is_integer() else f"{self.value:.1f}"
        mark = "  (must be 0)" if self.must_be_zero else ""
        flag = "  <-- FAIL" if self.must_be_zero and self.value else ""
        return f"  {self.name:<52} {text:>9}{(' ' + self.unit) if self.unit else ''}{mark}{flag}"


@dataclass
class Report:
    sections: list[tuple[str, list[Figure]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def example(
        self,
        what: str,
        event_id: str,
        pushes: Sequence[Push],
        logs: Mapping[int, Sequence[Mapping[str, Any]]],
        events: Mapping[str, EventInfo],
    ) -> None:
        """Note what is known about an event behind a failed check (the first few)."""
        if sum(1 for n in self.notes if n.startswith(what)) >= MAX_EXAMPLES:
            return
        info = events.get(event_id)
        at = [f"{p.fault.value}@{p.at:.2f}" for p in pushes if p.event_id == event_id]
        entries = [
            {k: v for k, v in e.items() if k != "room_id"}
            for e in logs.get(info.pk if info else -1, [])
            if event_id in (e.get("event_id"), e.get("delivered_with"))
        ]
        self.notes.append(f"{what}: {event_id} {info}; pushes {at}; log {entries}")

    @property
    def failures(self) -> list[Figure]:
        return [f for _, figs in self.sections for f in figs if f.must_be_zero and f.value]

    @property
    def ok(self) -> bool:
        return not self.failures

    def table(self) -> str:
        lines = []
        for title, figures in self.sections:
            lines.append(title)
            lines += [figure.render() for figure in figures]
        lines += [f"note: {note}" for note in self.notes]
        lines.append("RESULT: " + ("OK" if self.ok else f"FAILED ({len(self.failures)} checks)"))
        return "\n".join(lines)


def events_from(attempts: Iterable[Attempt]) -> dict[str, EventInfo]:
    events: dict[str, EventInfo] = {}
    for a in sorted(attempts, key=lambda a: a.start):
        if a.event_id is None:
            continue
        info = events.setdefault(a.event_id, EventInfo(a.pk, a.start))
        info.replayed |= a.kind == "replay"
        if a.status == 200 and not a.rejected and info.accepted_at is None:
            info.accepted_at = a.end
        if a.status == 200 and a.rejected:
            info.answered_rejected = True
    return events


def accepted_by_pushkey(events: Mapping[str, EventInfo]) -> dict[int, set[str]]:
    accepted: dict[int, set[str]] = defaultdict(set)
    for event_id, info in events.items():
        if info.accepted_at is not None:
            accepted[info.pk].add(event_id)
    return accepted


@dataclass
class Coverage:
    """How the log of one pushkey accounts for its accepted events."""

    lost: int
    double: int
    listed: Counter[str]


def coverage(accepted: set[str], entries: Sequence[Mapping[str, Any]]) -> Coverage:
    listed = Counter(str(e["event_id"]) for e in entries if e.get("event_id"))
    # With `batch`: events a batch counts but does not list.
    hidden = 0
    batches: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for entry in entries:
        if "batch" in entry:
            batches[str(entry["batch"])].append(entry)
    for members in batches.values():
        hidden += max(0, int(members[0].get("count", len(members))) - len(members))
    unlisted = len(accepted - set(listed))
    double = sum(1 for n in listed.values() if n > 1) + max(0, hidden - unlisted)
    return Coverage(lost=max(0, unlisted - hidden), double=double, listed=listed)


def _group_key(entry: Mapping[str, Any]) -> tuple[str, ...]:
    """Which delivery (one push or one decision) an entry belongs to."""
    if "batch" in entry:
        return ("batch", str(entry["batch"]))
    if entry["outcome"] == "delivered":
        return ("shown", str(entry.get("event_id")))
    if entry["outcome"] == "coalesced" and entry.get("delivered_with"):
        return ("shown", str(entry["delivered_with"]))
    return ("at", str(entry["time"]), str(entry["outcome"]), str(entry.get("count")))


def audit(
    config: LoadConfig,
    *,
    pushkeys: Sequence[Pushkey],
    attempts: Sequence[Attempt],
    logs: Mapping[int, Sequence[Mapping[str, Any]]],
    pushes: Sequence[Push],
    timing: Mapping[str, float],
) -> Report:
    report = Report()
    events = events_from(attempts)
    accepted = accepted_by_pushkey(events)
    bad_token = {pk.index for pk in pushkeys if pk.bad_token}

    # --- what Synapse saw ---
    answered = [a for a in attempts if a.status]
    latencies = sorted((a.end - a.start) * 1000 for a in answered)
    kinds = Counter(a.kind for a in attempts)
    send_seconds = max(timing["send_seconds"], 1e-9)
    report.sections.append(
        (
            "notify (what the Synapse senders saw)",
            [
                Figure("notifications planned", config.notifications),
                Figure("POSTs", len(attempts)),
                Figure("  messages / reads", kinds["event"], unit=f"/ {kinds['read']}"),
                Figure("  re-sends / end replays", kinds["resend"], unit=f"/ {kinds['replay']}"),
                Figure("events accepted (200, not rejected)", sum(map(len, accepted.values()))),
                Figure(
                    "events answered only `rejected`",
                    sum(1 for e in events.values() if e.answered_rejected and not e.accepted_at),
                ),
                Figure("503 answers", sum(1 for a in attempts if a.status == 503)),
                Figure(
                    "other non-200 answers",
                    sum(1 for a in attempts if a.status not in (0, 200, 503)),
                    must_be_zero=True,
                ),
                Figure("no answer (connection error, timeout)", kinds_of(attempts, 0)),
                Figure(
                    "notifications given up after retries",
                    sum(pk.gave_up for pk in pushkeys),
                    must_be_zero=True,
                ),
                Figure("answer latency p50", _percentile(latencies, 50), unit="ms"),
                Figure("answer latency p95", _percentile(latencies, 95), unit="ms"),
                Figure("answer latency max", latencies[-1] if latencies else 0, unit="ms"),
                Figure("throughput while sending", len(attempts) / send_seconds, unit="POST/s"),
            ],
        )
    )

    # --- what the gateway logged ---
    outcomes: Counter[str] = Counter()
    lost = double = unknown = bad_reject = capped = 0
    outcome_of: dict[str, str] = {}
    groups: dict[tuple[int, tuple[str, ...]], list[str]] = defaultdict(list)
    group_of: dict[str, tuple[int, tuple[str, ...]]] = {}
    delivered_events: set[str] = set()
    for pk in pushkeys:
        entries = [e for e in logs.get(pk.index, []) if e.get("event_id")]
        if len(logs.get(pk.index, [])) >= LOG_CAP:
            capped += 1
        cover = coverage(accepted.get(pk.index, set()), entries)
        lost += cover.lost
        double += cover.double
        if cover.lost:
            for event_id in sorted(accepted.get(pk.index, set()) - set(cover.listed)):
                report.example("lost", event_id, pushes, logs, events)
        for event_id in (e for e, n in cover.listed.items() if n > 1):
            report.example("more than one outcome", event_id, pushes, logs, events)
        for entry in entries:
            event_id = str(entry["event_id"])
            outcome = str(entry["outcome"])
            outcomes[outcome] += 1
            outcome_of[event_id] = outcome
            key = (pk.index, _group_key(entry))
            groups[key].append(event_id)
            group_of[event_id] = key
            if outcome == "delivered":
                delivered_events.add(event_id)
            info = events.get(event_id)
            if info is None or info.accepted_at is None:
                unknown += 1
            if outcome == "rejected" and pk.index not in bad_token:
                bad_reject += 1
    report.sections.append(
        (
            "outcomes (GET /deliveries)",
            [Figure(f"  {name}", outcomes[name]) for name in sorted(outcomes)]
            + [
                Figure("accepted events with no outcome (lost)", lost, must_be_zero=True),
                Figure("events with more than one outcome", double, must_be_zero=True),
                Figure("outcomes for events never accepted", unknown, must_be_zero=True),
                Figure("`rejected` outcomes on pushkeys with a good token", bad_reject, True),
                Figure(f"pushkeys whose log reached the {LOG_CAP}-entry cap", capped, True),
            ],
        )
    )

    # --- what the fake backend received ---
    faults = Counter(p.fault for p in pushes)
    stored: dict[str, list[Push]] = defaultdict(list)
    late: dict[str, list[float]] = defaultdict(list)
    for push in sorted(pushes, key=lambda p: p.at):
        if push.event_id is None:
            continue
        if push.stored:
            stored[push.event_id].append(push)
        if push.fault is Fault.LATE:
            late[push.event_id].append(push.at)
    explained = unexplained = after_replay = 0
    for event_id, received in stored.items():
        for push in received[1:]:
            if any(at < push.at for at in late[event_id]):
                explained += 1
            else:
                unexplained += 1
                report.example("unexplained duplicate push", event_id, pushes, logs, events)
            if push.at >= timing.get("replay_started", float("inf")):
                after_replay += 1
    never_accepted = sum(
        len(r) for e, r in stored.items() if e not in events or events[e].accepted_at is None
    )
    missing = sum(1 for e in delivered_events if e not in stored)
    otherwise = sum(
        1 for e in stored if e in outcome_of and e not in delivered_events and not late[e]
    )
    read_violations = _pushes_after_read(
        config, attempts=attempts, events=events, stored=stored, groups=groups, group_of=group_of
    )
    for event_id in read_violations:
        report.example("pushed although read", event_id, pushes, logs, events)
    report.sections.append(
        (
            "pushes (the fake Gotify's records)",
            [
                Figure("requests received", len(pushes)),
                Figure(
                    "  answered 200 / late / 500",
                    faults[Fault.NONE],
                    unit=f"/ {faults[Fault.LATE]} / {faults[Fault.ERROR]}",
                ),
                Figure(
                    "  dropped / 400 / 401 (bad token)",
                    faults[Fault.DROP],
                    unit=f"/ {faults[Fault.FAIL]} / "
                    f"{sum(1 for p in pushes if p.fault is Fault.NONE and p.status == 401)}",
                ),
                Figure("pushes the user saw", sum(map(len, stored.values()))),
                Figure("duplicate pushes after a backend timeout (at-least-once)", explained),
                Figure("duplicate pushes, unexplained", unexplained, must_be_zero=True),
                Figure("  of all duplicates, after the end replay", after_replay),
                Figure("pushes of events never accepted", never_accepted, must_be_zero=True),
                Figure("logged `delivered`, never received", missing, must_be_zero=True),
                Figure("received, logged otherwise, no timeout", otherwise, must_be_zero=True),
                Figure("pushes although read within the delay", len(read_violations), True),
            ],
        )
    )
    report.sections.append(
        (
            "run",
            [
                Figure("pushkeys (bad token)", len(pushkeys), unit=f"({len(bad_token)})"),
                Figure("replayed events (end)", sum(1 for e in events.values() if e.replayed)),
                Figure(
                    "  of them in a `failed` batch",
                    sum(
                        1 for e, i in events.items() if i.replayed and outcome_of.get(e) == "failed"
                    ),
                ),
                Figure("wait for the gateway to go idle", timing["idle_seconds"], unit="s"),
                Figure("wall time", timing["wall_seconds"], unit="s"),
            ],
        )
    )
    if timing.get("idle_timed_out"):
        report.notes.append("the gateway was not idle when the wait timed out")
    return report


def kinds_of(attempts: Iterable[Attempt], status: int) -> int:
    return sum(1 for a in attempts if a.status == status)


def _pushes_after_read(
    config: LoadConfig,
    *,
    attempts: Sequence[Attempt],
    events: Mapping[str, EventInfo],
    stored: Mapping[str, Sequence[Push]],
    groups: Mapping[tuple[int, tuple[str, ...]], Sequence[str]],
    group_of: Mapping[str, tuple[int, tuple[str, ...]]],
) -> list[str]:
    """Pushes of a batch that a read cancelled in time: a badge-only `unread: 0`, answered 200,
    sent after the batch's first event was accepted and answered before its delay ran out."""
    reads: dict[int, list[Attempt]] = defaultdict(list)
    for a in attempts:
        if a.kind == "read" and a.status == 200:
            reads[a.pk].append(a)
    violations = []
    for shown, received in stored.items():
        key = group_of.get(shown)
        if key is None:
            continue
        members = [events[e] for e in groups[key] if e in events and events[e].accepted_at]
        if not members:
            continue
        first = min(members, key=lambda info: info.first_start)
        assert first.accepted_at is not None
        deadline = first.first_start + config.delay - READ_MARGIN_SECONDS
        if any(r.start >= first.accepted_at and r.end <= deadline for r in reads[first.pk]):
            violations += [shown] * len(received)
    return violations


def _percentile(values: Sequence[float], percent: int) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]
