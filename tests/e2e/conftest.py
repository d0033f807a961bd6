"""The e2e harness: a real Synapse (subprocess), mxpush's local mode (in this process, so that
tests can inject faults with monkeypatch), and a fake Gotify, all on 127.0.0.1.

When a scenario fails, its report names the scenario and appends what Synapse logged, what
mxpush logged, and every notify request Synapse made to mxpush during the test.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mxpush_local.gateway import LocalGateway, LocalSettings
from tests.conftest import ADMIN_TOKEN, EMAIL_FROM, GOTIFY_TOKEN, Api, wait_until
from tests.e2e.synapse_server import MatrixClient, Synapse, User
from tests.fakes.gotify import FakeGotify
from tests.fakes.server import Received, Reply
from tests.fakes.smtp import FakeSmtp

ROOT = Path(__file__).resolve().parents[2]
SYNAPSE_PYTHON_VARIABLE = "MXPUSH_E2E_SYNAPSE_PYTHON"
# The default delay of the local gateway; scenarios choose theirs per registration.
DEFAULT_DELAY = 3
NOTIFY_PATH = "/_matrix/push/v1/notify"
LOG_TAIL_LINES = 60


# --- What Synapse sent mxpush, and what mxpush logged ---------------------------------------


@dataclass(frozen=True)
class Exchange:
    """One request Synapse made to mxpush's notify endpoint, and mxpush's answer."""

    at: float  # time.monotonic() when the answer was ready
    status: int
    body: Any
    answer: Any
    wall: float = field(default_factory=time.time)  # to read beside Synapse's log

    @property
    def notification(self) -> dict[str, Any]:
        if isinstance(self.body, dict) and isinstance(self.body.get("notification"), dict):
            return dict(self.body["notification"])
        return {}

    @property
    def event_id(self) -> str | None:
        value = self.notification.get("event_id")
        return value if isinstance(value, str) else None

    @property
    def badge_only(self) -> bool:
        return self.event_id is None

    def line(self) -> str:
        n = self.notification
        what = (
            f"badge-only unread={n.get('counts', {}).get('unread', 0)}"
            if self.badge_only
            else f"{n.get('type')} {self.event_id} prio={n.get('prio')}"
        )
        clock = time.strftime("%H:%M:%S", time.localtime(self.wall))
        millis = int(self.wall * 1000) % 1000
        return f"{clock},{millis:03d} POST {NOTIFY_PATH} [{what}] -> {self.status} {self.answer}"


class NotifyLog:
    """Every notify exchange, in order; `wait_for` polls for the ones a scenario expects."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []
        self._condition = threading.Condition()

    def record(self, exchange: Exchange) -> None:
        with self._condition:
            self.exchanges.append(exchange)
            self._condition.notify_all()

    def wait_for(
        self, predicate: Callable[[Exchange], bool], count: int = 1, timeout: float = 15.0
    ) -> list[Exchange]:
        deadline = time.monotonic() + timeout
        with self._condition:
            while True:
                matching = [e for e in self.exchanges if predicate(e)]
                if len(matching) >= count:
                    return matching
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"Synapse sent {len(matching)} matching notify requests to mxpush "
                        f"within {timeout}s, expected {count}"
                    )
                self._condition.wait(remaining)

    def matching(self, predicate: Callable[[Exchange], bool]) -> list[Exchange]:
        with self._condition:
            return [e for e in self.exchanges if predicate(e)]


class RecordsHandler(logging.Handler):
    """Keeps mxpush's log lines as the handlers print them (JSON, through powertools)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self._fallback = logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        # Formatted now: powertools adds the current invocation's context when formatting.
        try:
            self.lines.append(self._formatter().format(record))
        except Exception:  # a log line must never break the gateway
            self.lines.append(self._fallback.format(record))

    def tail(self, since: int, limit: int) -> str:
        return "\n".join(self.lines[since:][-limit:]) or "(mxpush logged nothing)"

    def _formatter(self) -> logging.Formatter:
        for handler in logging.getLogger("mxpush").handlers:
            if handler is not self and handler.formatter is not None:
                return handler.formatter
        return self._fallback


@dataclass
class Harness:
    synapse: Synapse
    gateway: LocalGateway
    notify_log: NotifyLog
    mxpush_log: RecordsHandler


HARNESS = pytest.StashKey[Harness]()
MARKS = pytest.StashKey[tuple[int, int, int]]()
FIGURES = pytest.StashKey[list[str]]()


# --- Fixtures ---------------------------------------------------------------------------------


def synapse_python() -> Path:
    configured = os.environ.get(SYNAPSE_PYTHON_VARIABLE)
    python = Path(configured) if configured else ROOT / ".venv-synapse" / "bin" / "python"
    if not python.exists():
        pytest.fail(
            f"no Synapse interpreter at {python}: run `make e2e`, which installs "
            "tests/e2e/requirements-synapse.txt into .venv-synapse",
            pytrace=False,
        )
    return python


@pytest.fixture(scope="package")
def synapse(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Synapse]:
    server = Synapse(synapse_python(), tmp_path_factory.mktemp("synapse"))
    try:
        started = time.monotonic()
        server.start()
        _figures(request.config).append(
            f"Synapse: config generated and serving in {time.monotonic() - started:.1f} s"
        )
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="package")
def gateway(synapse: Synapse, smtp: FakeSmtp) -> Iterator[LocalGateway]:
    """Local mode in this process (overrides tests/conftest.py's, which trusts a fake
    homeserver): Synapse's users may register with their Matrix access token; email goes to
    the session's local SMTP server."""
    settings = LocalSettings(
        port=0,
        admin_token=ADMIN_TOKEN,
        delay_seconds=DEFAULT_DELAY,
        allowed_homeservers=synapse.url,
        allow_private_targets=True,
        access_log=False,
        smtp_url=smtp.url(),
        email_from=EMAIL_FROM,
    )
    local = LocalGateway(settings)
    local.start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="package")
def harness(
    request: pytest.FixtureRequest, synapse: Synapse, gateway: LocalGateway
) -> Iterator[Harness]:
    notify_log = NotifyLog()
    records = RecordsHandler()
    # Import the handlers first: powertools' Logger takes the first handler of the "mxpush"
    # logger for its own (its formatter), so ours must come after the one it adds.
    for logical_id in gateway.aws.functions.specs:
        gateway.aws.functions.handler(logical_id)
    loggers = [logging.getLogger("mxpush"), logging.getLogger("mxpush_local")]
    for logger in loggers:
        logger.addHandler(records)
    original = gateway.handle

    def recording_handle(
        method: str, raw_url: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        is_notify = method == "POST" and raw_url.split("?", maxsplit=1)[0] == NOTIFY_PATH
        try:
            status, answer_headers, payload = original(method, raw_url, headers, body)
        except Exception as exc:
            if is_notify:  # the HTTP front answers 500, as API Gateway would
                notify_log.record(Exchange(time.monotonic(), 500, _json(body), repr(exc)))
            raise
        if is_notify:
            notify_log.record(Exchange(time.monotonic(), status, _json(body), _json(payload)))
        return status, answer_headers, payload

    # The HTTP front looks the method up on the instance for every request.
    setattr(gateway, "handle", recording_handle)  # noqa: B010 - mypy refuses method assignment
    harness = Harness(synapse, gateway, notify_log, records)
    request.config.stash[HARNESS] = harness
    try:
        yield harness
    finally:
        del request.config.stash[HARNESS]
        delattr(gateway, "handle")
        for logger in loggers:
            logger.removeHandler(records)


@pytest.fixture(autouse=True)
def _mark_logs(request: pytest.FixtureRequest, harness: Harness) -> None:
    """Where each log stood when the test started: a failure report quotes only what follows."""
    request.node.stash[MARKS] = (
        harness.synapse.log_size(),
        len(harness.mxpush_log.lines),
        len(harness.notify_log.exchanges),
    )


@pytest.fixture
def matrix(synapse: Synapse) -> MatrixClient:
    return MatrixClient(synapse.url)


class TimedGotify(FakeGotify):
    """FakeGotify that also notes when each request arrived (time.monotonic())."""

    def __init__(self) -> None:
        super().__init__(prefix="/gotify")
        self.arrivals: list[float] = []

    def respond(self, request: Received) -> Reply:
        self.arrivals.append(time.monotonic())
        return super().respond(request)


@pytest.fixture
def gotify() -> Iterator[TimedGotify]:
    server = TimedGotify().start()
    yield server
    server.stop()


# Fresh users for every scenario, so that no earlier scenario's pusher or room interferes.
_scene_numbers = itertools.count(1)


@dataclass
class Scene:
    """One scenario's world: fresh users alice and bob in a DM (made before bob has a pusher, so
    there is no invite push), bob's fake Gotify, and the clients to drive it all."""

    api: Api
    matrix: MatrixClient
    harness: Harness
    gotify: TimedGotify
    alice: User
    bob: User
    room: str

    @property
    def notify_log(self) -> NotifyLog:
        return self.harness.notify_log

    def register(self, *, delay: int, pusher: dict[str, Any] | None = None) -> dict[str, Any]:
        """bob registers his Gotify target with his Matrix token; mxpush sets the pusher."""
        body = {
            "backend": "gotify",
            "target": {"url": self.gotify.base_url, "token": GOTIFY_TOKEN},
            "delay_seconds": delay,
            "pusher": {"device_display_name": "Bob's phone", "lang": "en", **(pusher or {})},
        }
        answer = self.api.request("POST", "/api/v1/pushkeys", body, token=self.bob.access_token)
        assert answer.status == 201, answer.body
        assert answer.body["pusher_registered"] is True, answer.body
        return dict(answer.body)

    def deliveries(self, pushkey: str) -> list[dict[str, Any]]:
        return self.api.deliveries(pushkey, auth=self.bob.access_token)

    def wait_for_outcome(
        self, pushkey: str, outcome: str, *, count: int = 1, timeout: float = 15
    ) -> list[dict[str, Any]]:
        """Poll bob's delivery log until `count` entries have `outcome`."""

        def found() -> list[dict[str, Any]]:
            matching = [e for e in self.deliveries(pushkey) if e["outcome"] == outcome]
            return matching if len(matching) >= count else []

        return list(wait_until(found, timeout=timeout, interval=0.1))


@pytest.fixture
def scene(api: Api, matrix: MatrixClient, harness: Harness, gotify: TimedGotify) -> Scene:
    n = next(_scene_numbers)
    alice = matrix.register(f"alice{n}", "Alice")
    bob = matrix.register(f"bob{n}", "Bob")
    room = matrix.create_dm(alice, bob)
    return Scene(api, matrix, harness, gotify, alice, bob, room)


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> list[str]:
    """Lines a test wants printed in the run's summary (measurements)."""
    return _figures(request.config)


def _figures(config: pytest.Config) -> list[str]:
    if FIGURES not in config.stash:
        config.stash[FIGURES] = []
    return config.stash[FIGURES]


# --- Reporting --------------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    harness = item.config.stash.get(HARNESS, None)
    if not report.failed or harness is None:
        return report
    synapse_mark, mxpush_mark, notify_mark = item.stash.get(MARKS, (0, 0, 0))
    scenario = _scenario(item)
    report.sections.append(
        (
            f"e2e scenario failed: {scenario}",
            f"test {item.nodeid} failed in {report.when}.\n"
            f"Synapse at {harness.synapse.url}, full log: {harness.synapse.log_path}\n"
            f"mxpush local mode at {harness.gateway.url}",
        )
    )
    exchanges = harness.notify_log.exchanges[notify_mark:]
    report.sections.append(
        (
            "Synapse -> mxpush notify requests during this test",
            "\n".join(e.line() for e in exchanges) or "(none)",
        )
    )
    report.sections.append(
        (
            f"Synapse log during this test (last {LOG_TAIL_LINES} lines)",
            harness.synapse.tail(LOG_TAIL_LINES, since=synapse_mark),
        )
    )
    report.sections.append(
        (
            f"mxpush log during this test (last {LOG_TAIL_LINES} lines)",
            harness.mxpush_log.tail(mxpush_mark, LOG_TAIL_LINES),
        )
    )
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    figures = config.stash.get(FIGURES, [])
    if figures:
        terminalreporter.section("e2e measurements")
        for line in figures:
            terminalreporter.write_line(line)


def _scenario(item: pytest.Item) -> str:
    doc = getattr(getattr(item, "function", None), "__doc__", None)
    first = (doc or "").strip().splitlines()
    return first[0] if first else item.name


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw[:200].decode("utf-8", "replace")
