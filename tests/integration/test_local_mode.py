"""`make run` as a user runs it: a separate process on 127.0.0.1, real HTTP, Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FIXTURES, wait_until
from tests.fakes.gotify import FakeGotify
from tests.fakes.homeserver import FakeHomeserver

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    def __init__(self, popen: subprocess.Popen[str]) -> None:
        self.popen = popen
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for_line(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                match = re.search(pattern, line)
                if match:
                    return match
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r}; output:\n" + "\n".join(self.lines))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


@contextmanager
def running(command: list[str], env: dict[str, str]) -> Iterator[Process]:
    popen = subprocess.Popen(
        command,
        cwd=ROOT,
        # No test writes the checkout's state file (.mxpush/state): in memory unless it says.
        env={**os.environ, "MXPUSH_STATE": ":memory:", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, like a terminal job
    )
    process = Process(popen)
    try:
        yield process
    finally:
        if popen.poll() is None:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()


def scrape(base: str) -> str:
    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as response:
        return str(response.read().decode())


def call(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def test_make_run_serves_the_gateway_and_stops_on_ctrl_c() -> None:
    port = free_port()
    gotify = FakeGotify(app_tokens=("AppToken.Secret42",)).start()
    try:
        with running(
            ["make", "--no-print-directory", "run"],
            # Empty: not the in-process test gateway's values, which are in os.environ.
            {
                "PORT": str(port),
                "MXPUSH_DELAY_SECONDS": "1",
                "MXPUSH_ADMIN_TOKEN": "",
                "MXPUSH_PUBLIC_URL": "",
            },
        ) as process:
            listening = process.wait_for_line(r"listening on (http://127\.0\.0\.1:\d+)")
            base = listening.group(1)
            assert base == f"http://127.0.0.1:{port}"
            admin = process.wait_for_line(r"admin token \(MXPUSH_ADMIN_TOKEN\): (\S+)").group(1)
            # `running` asks for no state file: make run says so.
            process.wait_for_line(r"^state: in memory \(MXPUSH_STATE=:memory:\)")

            status, answer = call(
                "POST",
                f"{base}/api/v1/pushkeys",
                {"backend": "gotify", "target": {"url": gotify.url, "token": "AppToken.Secret42"}},
                admin,
            )
            assert status == 201, answer
            pushkey = answer["pushkey"]
            assert answer["pusher"]["data"]["url"] == f"{base}/_matrix/push/v1/notify"

            body = json.loads((FIXTURES / "message_dm_2_members.1.full.json").read_text())
            body["notification"]["devices"][0]["pushkey"] = pushkey
            assert call("POST", f"{base}/_matrix/push/v1/notify", body) == (200, {"rejected": []})
            [request] = gotify.wait_for(1, timeout=15)
            assert request.json()["message"] == "hi, this is a DM"

            status, _ = call("GET", f"{base}/api/v1/pushkeys/{pushkey}/deliveries", token=admin)
            assert status == 200
            process.wait_for_line(r"GET /api/v1/pushkeys/\{pushkey\}/deliveries 200")
            delivered = 'mxpush_pushes_total{backend="gotify",outcome="delivered"} 1'
            metrics = wait_until(lambda: next((t for t in [scrape(base)] if delivered in t), None))
            assert 'mxpush_notifications_total{disposition="scheduled"} 1' in metrics

            os.killpg(process.popen.pid, signal.SIGINT)  # Ctrl-C in the terminal
            process.popen.wait(timeout=15)
            process.wait_for_line("mxpush: stopping", timeout=1)
            summary = process.output.split("mxpush: metrics of this session")[1]
            assert "Notifications: scheduled 1" in summary
            assert "Pushes: gotify/delivered 1" in summary
            assert re.search(r"DeliveryLatency: gotify n=1 mean \d+\.\d\ds", summary)
            assert "Traceback" not in process.output
            # Logs never carry the pushkey, the backend token or the message text.
            for secret in (pushkey, "AppToken.Secret42", "hi, this is a DM"):
                assert secret not in process.output
    finally:
        gotify.stop()


def test_settings_are_honoured_and_sigterm_exits_cleanly(homeserver: FakeHomeserver) -> None:
    port = free_port()
    env = {
        "PYTHONPATH": f"{ROOT / 'layers' / 'mxpush'}:{ROOT / 'local'}",
        "PORT": str(port),
        "MXPUSH_ADMIN_TOKEN": "chosen-admin-token",
        "MXPUSH_ALLOW_PRIVATE_TARGETS": "false",
        "MXPUSH_DELAY_SECONDS": "7",
        "MXPUSH_ALLOWED_HOMESERVERS": homeserver.url + "/",
    }
    with running([sys.executable, "-m", "mxpush_local"], env) as process:
        process.wait_for_line(rf"listening on http://127\.0\.0\.1:{port} .*delay 7s")
        base = f"http://127.0.0.1:{port}"
        assert "admin token" not in process.output  # it was given, not generated
        status, answer = call(
            "POST",
            f"{base}/api/v1/pushkeys",
            {"backend": "gotify", "target": {"url": "http://127.0.0.1:9/", "token": "t"}},
            "chosen-admin-token",
        )
        assert status == 400
        assert "MXPUSH_ALLOW_PRIVATE_TARGETS" in answer["error"]
        status, answer = call("GET", f"{base}/api/v1/pushkeys", token="chosen-admin-token")
        assert status == 200
        # A Matrix user of the allowed homeserver is let in; an unknown token is not.
        status, answer = call("GET", f"{base}/api/v1/pushkeys", token="bob-token")
        assert (status, answer) == (200, {"pushkeys": []})
        status, answer = call("GET", f"{base}/api/v1/pushkeys", token="nobody-token")
        assert (status, answer["errcode"]) == (401, "M_UNKNOWN_TOKEN")
        process.popen.send_signal(signal.SIGTERM)
        assert process.popen.wait(timeout=15) == 0
