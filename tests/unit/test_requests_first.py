"""Local mode's requests-first gate (`mxpush_local/priority.py`): background work waits while a
request is answered, never longer than its pause, and a request's own work never waits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from mxpush_local.priority import RequestsFirst


def _in_background(call: Callable[[], None]) -> tuple[threading.Thread, threading.Event]:
    done = threading.Event()

    def run() -> None:
        call()
        done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, done


def _request_held(gate: RequestsFirst) -> threading.Event:
    """A request in flight on another thread until the returned event is set."""
    answering = threading.Event()
    release = threading.Event()

    def request() -> None:
        with gate.request():
            answering.set()
            release.wait(10)

    _in_background(request)
    assert answering.wait(5)
    return release


def test_background_work_waits_until_the_request_in_flight_is_answered() -> None:
    gate = RequestsFirst(max_pause=30)
    answered = _request_held(gate)
    thread, done = _in_background(gate.background_turn)
    assert not done.wait(0.3)  # held while the request is in flight
    answered.set()
    assert done.wait(5)  # and let go as it ends
    thread.join(5)
    assert gate.pauses == 1


def test_background_work_waits_no_longer_than_its_pause() -> None:
    gate = RequestsFirst(max_pause=0.2)
    release = _request_held(gate)
    started = time.monotonic()
    gate.background_turn()
    waited = time.monotonic() - started
    release.set()
    assert 0.15 <= waited < 5


def test_without_requests_and_on_a_request_thread_nothing_waits() -> None:
    gate = RequestsFirst(max_pause=30)
    gate.background_turn()
    assert gate.pauses == 0

    release = _request_held(gate)
    with gate.request():
        # Another request is in flight, but this thread answers one: its calls go on.
        gate.background_turn()
    release.set()
    assert gate.pauses == 0


def test_a_failed_request_still_lets_background_work_go_on() -> None:
    gate = RequestsFirst(max_pause=30)
    with pytest.raises(RuntimeError), gate.request():
        raise RuntimeError("handler failed")
    _, done = _in_background(gate.background_turn)
    assert done.wait(2)
    assert gate.pauses == 0


def test_a_section_that_took_its_turn_does_not_pause_inside_it() -> None:
    """The cost meter holds a lock around each DynamoDB call that requests wait for too: a
    pause inside it held every request for the whole pause (the bench then ran at 7/s)."""
    gate = RequestsFirst(max_pause=0.2)
    release = _request_held(gate)
    started = time.monotonic()
    with gate.turn_taken():
        paused_before = time.monotonic() - started
        inside = time.monotonic()
        gate.background_turn()
        with gate.turn_taken():  # nested: still no pause
            gate.background_turn()
        paused_inside = time.monotonic() - inside
    after = time.monotonic()
    gate.background_turn()  # outside again: pauses as before
    paused_after = time.monotonic() - after
    release.set()
    assert paused_before >= 0.15  # the turn itself is taken, before the section
    assert paused_inside < 0.1
    assert paused_after >= 0.15
    assert gate.pauses == 2
