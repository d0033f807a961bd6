"""Local mode survives `kill -9`: what it accepted before the crash goes out once after it, the
delivery log and the registrations are still there (MXPUSH_STATE, local/mxpush_local/state.py).
Real processes, real HTTP, a fake Gotify in this process that tells pushkeys apart by token."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FIXTURES
from tests.fakes.gotify import FakeGotify
from tests.fakes.server import Reply
from tests.integration.test_local_mode import Process, call, free_port, running

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "crash-test-admin"
pytestmark = pytest.mark.slow


def gateway(state: Path) -> Any:
    env = {
        "PYTHONPATH": f"{ROOT / 'layers' / 'mxpush'}:{ROOT / 'local'}",
        "PORT": str(free_port()),
        "MXPUSH_STATE": str(state),
        "MXPUSH_ADMIN_TOKEN": ADMIN,
        # Empty: not the in-process test gateway's values, which are in os.environ.
        "MXPUSH_PUBLIC_URL": "",
        "MXPUSH_VAPID_PRIVATE_KEY": "",
    }
    return running([sys.executable, "-m", "mxpush_local"], env)


def base_url(process: Process) -> str:
    return process.wait_for_line(r"listening on (http://127\.0\.0\.1:\d+)").group(1)


def vapid_public_key(process: Process) -> str:
    """Generated once, then kept with the state: browsers subscribed with it."""
    return process.wait_for_line(r"VAPID public key \(generated, kept in .*\): (\S+)").group(1)


def register(base: str, gotify: FakeGotify, token: str, delay: int) -> str:
    target = {"url": gotify.url, "token": token}
    status, answer = call(
        "POST",
        f"{base}/api/v1/pushkeys",
        {"backend": "gotify", "target": target, "delay_seconds": delay},
        ADMIN,
    )
    assert status == 201, answer
    return str(answer["pushkey"])


def notify(base: str, pushkey: str, event_id: str) -> None:
    body = json.loads((FIXTURES / "message_dm_2_members.1.full.json").read_text())
    body["notification"]["devices"][0]["pushkey"] = pushkey
    body["notification"]["event_id"] = event_id
    assert call("POST", f"{base}/_matrix/push/v1/notify", body) == (200, {"rejected": []})


def deliveries(base: str, pushkey: str) -> list[tuple[str, str]]:
    status, answer = call("GET", f"{base}/api/v1/pushkeys/{pushkey}/deliveries", token=ADMIN)
    assert status == 200, answer
    return [(d["outcome"], d["event_id"]) for d in answer["deliveries"]]


def pushes_by_token(gotify: FakeGotify) -> Counter[str]:
    return Counter(r.headers["x-gotify-key"] for r in gotify.requests)


def wait_until_logged(base: str, pushkey: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while deliveries(base, pushkey) == [] and time.monotonic() < deadline:
        time.sleep(0.1)


def wait_until_journaled(state: Path, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while text not in state.read_text(encoding="utf-8"):
        assert time.monotonic() < deadline, f"{text} never reached the state file"
        time.sleep(0.02)


def test_pushes_accepted_before_kill_9_go_out_once_after_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    tokens = {
        "before": "Tok.Before",  # delivered and logged before the crash
        "flight": "Tok.Flight",  # its push was on the wire when the process died
        "retry": "Tok.Retry",  # its first attempt failed: a retry execution was waiting
        **{f"due{i}": f"Tok.Due{i}" for i in range(4)},  # waiting for their slot
    }
    gotify = FakeGotify(app_tokens=tuple(tokens.values())).start()
    try:
        with gateway(state) as first:
            base = base_url(first)
            key = vapid_public_key(first)
            keys = {
                name: register(base, gotify, token, 3 if name.startswith("due") else 0)
                for name, token in tokens.items()
            }

            notify(base, keys["before"], "$before")
            gotify.wait_for(1)
            wait_until_logged(base, keys["before"])
            assert deliveries(base, keys["before"]) == [("delivered", "$before")]

            # Gotify holds this answer: the crash comes between the push and its outcome.
            gotify.queue(Reply(200, {"id": 0}, delay=30))
            notify(base, keys["flight"], "$flight")
            gotify.wait_for(2)
            for i in range(4):
                notify(base, keys[f"due{i}"], f"$due{i}")
            gotify.queue(Reply(503, {"error": "busy"}))
            notify(base, keys["retry"], "$retry")
            gotify.wait_for(3)
            wait_until_journaled(state, '"st":{"S":"retrying"}')  # its backoff is 2 s
            os.killpg(first.popen.pid, signal.SIGKILL)
            first.popen.wait(timeout=10)
        assert pushes_by_token(gotify) == {"Tok.Before": 1, "Tok.Flight": 1, "Tok.Retry": 1}

        with gateway(state) as second:
            base = base_url(second)
            second.wait_for_line(r"state: .*\(\d+ items kept")
            assert vapid_public_key(second) == key
            resumed = second.wait_for_line(
                r"resumed (\d+) pending pushes: .* (\d+) retrying, (\d+) in flight"
            )
            assert resumed.groups() == ("6", "1", "1")
            # Four delayed pushes, the retried one, and the one in flight, which goes again
            # (at-least-once).
            gotify.wait_for(3 + 6, timeout=30)
            for name in ("flight", "retry", "due0", "due1", "due2", "due3"):
                wait_until_logged(base, keys[name])
            time.sleep(1.5)  # room for a duplicate to show up
            expected = {"Tok.Before": 1, "Tok.Flight": 2, "Tok.Retry": 2}
            expected.update({f"Tok.Due{i}": 1 for i in range(4)})
            assert pushes_by_token(gotify) == expected
            assert deliveries(base, keys["before"]) == [("delivered", "$before")]
            assert deliveries(base, keys["flight"]) == [("delivered", "$flight")]
            assert deliveries(base, keys["retry"]) == [("delivered", "$retry")]
            for i in range(4):
                assert deliveries(base, keys[f"due{i}"]) == [("delivered", f"$due{i}")]
            second.popen.send_signal(signal.SIGTERM)
            assert second.popen.wait(timeout=15) == 0

        # A restart with nothing pending sends nothing and keeps everything.
        with gateway(state) as third:
            base = base_url(third)
            kept = third.wait_for_line(r"state: .*\((\d+) items kept")
            status, answer = call("GET", f"{base}/api/v1/pushkeys", token=ADMIN)
            assert status == 200
            assert {p["pushkey"] for p in answer["pushkeys"]} == set(keys.values())
            assert deliveries(base, keys["due2"]) == [("delivered", "$due2")]
            time.sleep(1)
            assert "resumed" not in third.output
            assert sum(pushes_by_token(gotify).values()) == 9
            assert int(kept.group(1)) >= len(keys) + 6
            # Message previews, backend tokens, the VAPID key: the owner's eyes only.
            for path in (state, tmp_path / "state.keys"):
                assert path.stat().st_mode & 0o077 == 0
            output = first.output + second.output + third.output
            for secret in ("Traceback", "hi, this is a DM", *tokens.values(), *keys.values()):
                assert secret not in output
    finally:
        gotify.stop()
