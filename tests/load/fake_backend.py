"""A fake Gotify that misbehaves on purpose, and remembers what each push showed.

Every push names the event it shows (the load test's message bodies carry their event id). The
fault for a request is drawn from (seed, shown event, attempt number for that event), not from
arrival order, so a seed gives the same faults however the threads interleave.

What "stored" means here, as for a real Gotify: a 200 (also one sent too late for the gateway,
which by then has given up and will retry: the user sees that push twice, which is the
at-least-once case the audit explains). A 500, a dropped connection, a 400 or a 401 stores
nothing.
"""

from __future__ import annotations

import enum
import random
import re
import threading
import time
from dataclasses import dataclass

from mxpush.outbound import READ_TIMEOUT_SECONDS
from tests.fakes.gotify import FakeGotify, gotify_error
from tests.fakes.server import Received, Reply

EVENT_ID = re.compile(r"\$L\d+-(\d+)-\d+")
# Past the gateway's read timeout (there is no setting to shorten it), so the gateway gives up.
LATE_SECONDS = READ_TIMEOUT_SECONDS + 1.0


class Fault(enum.StrEnum):
    NONE = "ok"
    ERROR = "500"
    LATE = "late"
    DROP = "dropped"
    # 400: Gotify refuses the message; mxpush records the batch `failed` without retrying.
    FAIL = "400"


@dataclass(frozen=True)
class FaultRates:
    error: float = 0.06
    late: float = 0.02
    drop: float = 0.04
    fail: float = 0.02

    @property
    def total(self) -> float:
        return self.error + self.late + self.drop + self.fail

    def draw(self, rng: random.Random) -> Fault:
        x = rng.random()
        for fault, rate in (
            (Fault.ERROR, self.error),
            (Fault.LATE, self.late),
            (Fault.DROP, self.drop),
            (Fault.FAIL, self.fail),
        ):
            if x < rate:
                return fault
            x -= rate
        return Fault.NONE


@dataclass(frozen=True)
class Push:
    """One request the fake received."""

    at: float  # time.time() at arrival
    event_id: str | None  # the event the push shows (None: not a load-test message)
    attempt: int  # 0 for the first request showing this event
    fault: Fault
    status: int  # what the fake answered (or would have: dropped connections answer nothing)
    stored: bool  # the user would see it


class FaultyGotify(FakeGotify):
    def __init__(self, *, seed: int, rates: FaultRates, good_token: str) -> None:
        super().__init__(app_tokens=(good_token,))
        self.seed = seed
        self.rates = rates
        self.pushes: list[Push] = []
        self._attempts: dict[str | None, int] = {}
        self._push_lock = threading.Lock()

    def reset(self) -> None:
        super().reset()
        with self._push_lock:
            self.pushes.clear()
            self._attempts.clear()

    def last_push_at(self) -> float:
        with self._push_lock:
            return self.pushes[-1].at if self.pushes else 0.0

    def respond(self, request: Received) -> Reply:
        arrived = time.time()
        event_id = _shown_event(request)
        with self._push_lock:
            attempt = self._attempts.get(event_id, 0)
            self._attempts[event_id] = attempt + 1
        fault = Fault.NONE
        if event_id is not None:
            fault = self.rates.draw(random.Random(f"{self.seed}/{event_id}/{attempt}"))
        if fault is Fault.ERROR:
            reply = gotify_error(500, "internal error (injected)")
        elif fault is Fault.DROP:
            reply = Reply(drop=True)
        elif fault is Fault.FAIL:
            reply = gotify_error(400, "message refused (injected)")
        else:
            reply = super().respond(request)
            if fault is Fault.LATE:
                reply.delay = LATE_SECONDS
        stored = fault in (Fault.NONE, Fault.LATE) and reply.status == 200
        status = 0 if fault is Fault.DROP else reply.status
        with self._push_lock:
            self.pushes.append(Push(arrived, event_id, attempt, fault, status, stored))
        return reply


def _shown_event(request: Received) -> str | None:
    try:
        message = request.json().get("message", "")
    except (ValueError, AttributeError):
        return None
    found = EVENT_ID.search(message) if isinstance(message, str) else None
    return found.group(0) if found else None


def pushkey_index(event_id: str) -> int:
    """`$L<seed>-<pk>-<n>` -> pk."""
    found = EVENT_ID.fullmatch(event_id)
    if found is None:
        raise ValueError(f"not a load-test event id: {event_id}")
    return int(found.group(1))
