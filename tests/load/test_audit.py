"""The audit on hand-made records: it must catch each kind of fault it claims to, in both shapes
of the delivery log (per event, and with `batch`)."""

from __future__ import annotations

from typing import Any

from tests.load.audit import Report, audit
from tests.load.driver import Attempt, LoadConfig, Pushkey
from tests.load.fake_backend import Fault, Push

CONFIG = LoadConfig(notifications=0, pushkeys=1, delay=2)
TIMING = {"send_seconds": 1.0, "idle_seconds": 1.0, "wall_seconds": 2.0}


def accepted(n: int, at: float) -> Attempt:
    return Attempt(0, "event", f"$L1-0-{n}", at, at + 0.1, 200, rejected=False)


def entry(n: int, outcome: str, count: int = 1, **extra: Any) -> dict[str, Any]:
    return {"time": "2026-01-01T00:00:10.000Z", "outcome": outcome, "count": count,
            "event_id": f"$L1-0-{n}", **extra}  # fmt: skip


def push(n: int, at: float, fault: Fault = Fault.NONE) -> Push:
    return Push(at, f"$L1-0-{n}", 0, fault, 200, stored=True)


def run(attempts: list[Attempt], entries: list[dict[str, Any]], pushes: list[Push]) -> Report:
    return audit(
        CONFIG,
        pushkeys=[Pushkey(0, "pk0", bad_token=False)],
        attempts=attempts,
        logs={0: entries},
        pushes=pushes,
        timing=TIMING,
    )


def value(report: Report, name: str) -> float:
    return next(f.value for _, figs in report.sections for f in figs if f.name == name)


def test_a_coalesced_batch_pushed_once_passes() -> None:
    report = run(
        [accepted(1, 100.0), accepted(2, 100.5)],
        [entry(2, "delivered", 2), entry(1, "coalesced", 2, delivered_with="$L1-0-2")],
        [push(2, 102.2)],
    )
    assert report.ok, report.table()


def test_an_accepted_event_without_outcome_is_lost() -> None:
    report = run([accepted(1, 100.0), accepted(2, 101.0)], [entry(1, "delivered")], [push(1, 102)])
    assert value(report, "accepted events with no outcome (lost)") == 1
    assert not report.ok


def test_an_event_listed_twice_has_two_outcomes() -> None:
    report = run(
        [accepted(1, 100.0)],
        [entry(1, "delivered"), entry(1, "failed")],
        [push(1, 102.0)],
    )
    assert value(report, "events with more than one outcome") == 1


def test_a_second_push_is_explained_only_by_an_earlier_backend_timeout() -> None:
    twice = [push(1, 102.0), push(1, 115.0)]
    report = run([accepted(1, 100.0)], [entry(1, "delivered")], twice)
    assert value(report, "duplicate pushes, unexplained") == 1
    timed_out_first = [push(1, 102.0, Fault.LATE), push(1, 115.0)]
    report = run([accepted(1, 100.0)], [entry(1, "delivered")], timed_out_first)
    assert value(report, "duplicate pushes, unexplained") == 0
    assert value(report, "duplicate pushes after a backend timeout (at-least-once)") == 1
    assert report.ok, report.table()


def test_a_push_after_a_read_within_the_delay_is_caught() -> None:
    read = Attempt(0, "read", None, 100.5, 100.6, 200, rejected=False)
    report = run([accepted(1, 100.0), read], [entry(1, "delivered")], [push(1, 102.1)])
    assert value(report, "pushes although read within the delay") == 1
    late_read = Attempt(0, "read", None, 101.8, 101.9, 200, rejected=False)
    report = run([accepted(1, 100.0), late_read], [entry(1, "delivered")], [push(1, 102.1)])
    assert report.ok, report.table()


def test_batch_counts_stand_for_events_a_batch_does_not_list() -> None:
    attempts = [accepted(n, 100.0 + n / 100) for n in range(1, 26)]
    listed = [entry(25, "delivered", 25, batch="b1")] + [
        entry(n, "coalesced", 25, batch="b1", delivered_with="$L1-0-25") for n in range(6, 25)
    ]
    assert run(attempts, listed, [push(25, 103.0)]).ok
    undercounted = [{**e, "count": 24} for e in listed]
    report = run(attempts, undercounted, [push(25, 103.0)])
    assert value(report, "accepted events with no outcome (lost)") == 1
