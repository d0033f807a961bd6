"""The README's "Try it with curl" commands, run as written (bash, curl, sed) against the local
gateway and the stand-in receiver: a newcomer pastes them, so they must work offline."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mxpush_local.gateway import LocalGateway
from mxpush_local.receiver import DEFAULT_PORT, Receiver
from tests.conftest import ADMIN_TOKEN, wait_until

ROOT = Path(__file__).resolve().parents[2]
README_RECEIVER = f"http://127.0.0.1:{DEFAULT_PORT}"
# The README waits 5 s; the test shortens the delay and the wait alike.
DELAYS = (('"delay_seconds": 5', '"delay_seconds": 2'), ("sleep 6", "sleep 3"))


class Output(io.StringIO):
    """What the receiver printed, written from its request threads."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    def write(self, text: str) -> int:
        with self.lock:
            return super().write(text)

    def lines(self) -> list[str]:
        with self.lock:
            return self.getvalue().splitlines()


def walkthrough_blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Try it with curl", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.DOTALL)


def run_block(block: str, receiver: Receiver, env: dict[str, str]) -> str:
    # The first line exports where the gateway is and the printed token: the test gives both.
    lines = [line for line in block.splitlines() if not line.startswith("export MXPUSH=")]
    script = "\n".join(lines).replace(README_RECEIVER, receiver.url)
    for old, new in DELAYS:
        script = script.replace(old, new)
    script += '\necho "PUSHKEY=$PUSHKEY"\n'
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, Output]]:
    out = Output()
    started = Receiver(port=0, out=out).start()
    yield started, out
    started.stop()


@pytest.mark.slow
def test_the_curl_walkthrough_works_as_written(
    gateway: LocalGateway, receiver: tuple[Receiver, Output]
) -> None:
    stand_in, printed = receiver
    first, second = walkthrough_blocks()
    env = {"PATH": os.environ["PATH"], "MXPUSH": gateway.url, "ADMIN": ADMIN_TOKEN}

    output = run_block(first, stand_in, env)

    pushkey = output.splitlines()[-1].removeprefix("PUSHKEY=")
    assert pushkey.startswith("mxp_")
    registration = json.loads(output.splitlines()[0])
    assert registration["pushkey"] == pushkey
    assert '{"rejected":[]}' in output
    # Step 4's test push comes at once, step 2's DM after the delay.
    wait_until(lambda: any("'alice' 'hi, this is a DM'" in line for line in printed.lines()))
    assert len(printed.lines()) == 2

    output = run_block(second, stand_in, {**env, "PUSHKEY": pushkey})

    deliveries = json.loads(output.splitlines()[-2])["deliveries"]
    assert "cancelled" in [entry["outcome"] for entry in deliveries]
    assert len(printed.lines()) == 2
