"""Requests first: background work (the state machine's sender tasks, asynchronous invokes,
timers) steps aside while an HTTP request is being answered.

Local mode runs everything in one process, and its handlers mostly hold the GIL (moto). The
GIL and the DynamoDB lock are first come, first served, so at a sustained load a notify waited
behind the sender work of earlier notifications (p95 of ~600 ms at 50/s, where the notify
itself takes a few ms). On AWS the two sides run on separate Lambda instances. Here the
background threads pause at their DynamoDB calls - the bulk of their work, and a point where
they hold no lock - while any request is in flight, and go on when none is, or after
`MAX_PAUSE_SECONDS` at the latest, so a steady stream of requests cannot starve delivery.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

# Longest a background call waits for the requests to pause.
MAX_PAUSE_SECONDS = 0.25


class RequestsFirst:
    def __init__(self, max_pause: float = MAX_PAUSE_SECONDS) -> None:
        self.max_pause = max_pause
        self._idle = threading.Condition(threading.Lock())
        self._in_flight = 0
        self._request_thread = threading.local()
        self.pauses = 0  # background calls that waited (tests read it)

    @contextmanager
    def request(self) -> Iterator[None]:
        """Around answering one request: background work waits until it ends."""
        self._request_thread.active = True
        with self._idle:
            self._in_flight += 1
        try:
            yield
        finally:
            self._request_thread.active = False
            with self._idle:
                self._in_flight -= 1
                if not self._in_flight:
                    self._idle.notify_all()

    def background_turn(self) -> None:
        """Called by work on a thread that answers no request, where it holds no lock: waits
        while requests are in flight, for at most `max_pause`."""
        # Unlocked read: a request that starts just after it is merely not waited for.
        if not self._in_flight or getattr(self._request_thread, "active", False):
            return
        if getattr(self._request_thread, "turn_taken", 0):
            return
        with self._idle:
            if self._in_flight:
                self.pauses += 1
                self._idle.wait_for(lambda: not self._in_flight, timeout=self.max_pause)

    @contextmanager
    def turn_taken(self) -> Iterator[None]:
        """Around a section that takes a lock requests may also wait for (the cost meter wraps
        each DynamoDB call in one): the background turn is taken once, before the lock, and
        calls inside do not pause. A pause with that lock held would make every request wait
        for it - a request in flight then keeps the pause going to its end, 250 ms a call."""
        self.background_turn()
        depth = getattr(self._request_thread, "turn_taken", 0)
        self._request_thread.turn_taken = depth + 1
        try:
            yield
        finally:
            self._request_thread.turn_taken = depth


# One per process, as the in-process DynamoDB and moto are.
requests_first = RequestsFirst()
