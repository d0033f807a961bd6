"""A real Synapse on 127.0.0.1 for the e2e suite, and a small Matrix client to drive it.

Synapse runs as a subprocess from its own venv (`make e2e` builds `.venv-synapse` from
`tests/e2e/requirements-synapse.txt`), with SQLite and a data directory of its own. Its log goes
to a file that failure reports quote.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

SERVER_NAME = "localhost"
PR_SET_PDEATHSIG = 1
# Rate limits high enough that no scripted step is ever throttled.
_UNLIMITED = {"per_second": 10000, "burst_count": 10000}


class SynapseError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config_overrides(data_dir: Path, port: int) -> dict[str, Any]:
    """What the e2e suite changes in the generated homeserver.yaml."""
    return {
        "listeners": [
            {
                "port": port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                "resources": [{"names": ["client"], "compress": False}],
            }
        ],
        "database": {"name": "sqlite3", "args": {"database": str(data_dir / "homeserver.db")}},
        "log_config": str(data_dir / "log.yaml"),
        "media_store_path": str(data_dir / "media_store"),
        "pid_file": str(data_dir / "homeserver.pid"),
        "report_stats": False,
        "enable_registration": True,
        "enable_registration_without_verification": True,
        "bcrypt_rounds": 4,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "presence": {"enabled": False},
        # Synapse 1.163 reads this key (not ip_range_allowlist): pushers may call 127.0.0.1.
        "ip_range_whitelist": ["127.0.0.1"],
        "rc_message": _UNLIMITED,
        "rc_registration": _UNLIMITED,
        "rc_login": {
            "address": _UNLIMITED,
            "account": _UNLIMITED,
            "failed_attempts": _UNLIMITED,
        },
        "rc_joins": {"local": _UNLIMITED, "remote": _UNLIMITED},
        "rc_joins_per_room": _UNLIMITED,
        "rc_invites": {
            "per_room": _UNLIMITED,
            "per_user": _UNLIMITED,
            "per_issuer": _UNLIMITED,
        },
        "rc_room_creation": _UNLIMITED,
        "rc_profile": _UNLIMITED,
        "rc_delayed_event_mgmt": _UNLIMITED,
    }


def log_config(log_path: Path) -> dict[str, Any]:
    """Unbuffered, so that a failure report shows what Synapse logged up to that moment."""
    return {
        "version": 1,
        "formatters": {
            "precise": {
                "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - "
                "%(request)s - %(message)s"
            }
        },
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "formatter": "precise",
                "filename": str(log_path),
                "encoding": "utf8",
            }
        },
        "loggers": {
            # DEBUG here would log access tokens.
            "synapse.storage.SQL": {"level": "INFO"},
            "synapse.storage.background_updates": {"level": "WARNING"},
            # One line per pusher request and answer.
            "synapse.push": {"level": "DEBUG"},
            "synapse.push.bulk_push_rule_evaluator": {"level": "INFO"},
            "synapse.federation": {"level": "WARNING"},
        },
        "root": {"level": "INFO", "handlers": ["file"]},
        "disable_existing_loggers": False,
    }


class Synapse:
    """`start()` generates a config in `data_dir` and runs Synapse until `stop()`."""

    def __init__(self, python: Path, data_dir: Path) -> None:
        self.python = python
        self.data_dir = data_dir
        self.port = free_port()
        self.config_path = data_dir / "homeserver.yaml"
        self.log_path = data_dir / "homeserver.log"
        self.console_path = data_dir / "console.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def generate_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._run(
            "--server-name",
            SERVER_NAME,
            "--config-path",
            str(self.config_path),
            "--generate-config",
            "--report-stats=no",
        )
        config = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        config.update(config_overrides(self.data_dir, self.port))
        self.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        (self.data_dir / "log.yaml").write_text(
            yaml.safe_dump(log_config(self.log_path)), encoding="utf-8"
        )

    def start(self, timeout: float = 60.0) -> None:
        self.generate_config()
        with self.console_path.open("wb") as console:
            self._process = subprocess.Popen(
                [str(self.python), "-m", "synapse.app.homeserver", "-c", str(self.config_path)],
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads run yet; Linux only
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise SynapseError(
                    f"Synapse exited with {self._process.returncode} while starting:\n"
                    + self.tail(40)
                )
            if self._healthy():
                return
            if time.monotonic() > deadline:
                raise SynapseError(f"Synapse did not answer /health in {timeout}s:\n{self.tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def tail(self, lines: int = 60, *, since: int = 0) -> str:
        """The last `lines` lines Synapse logged (from byte offset `since`), and its console."""
        parts = []
        for path in (self.log_path, self.console_path):
            try:
                with path.open("rb") as handle:
                    if path == self.log_path:
                        handle.seek(since)
                    text = handle.read().decode("utf-8", "replace")
            except FileNotFoundError:
                continue
            kept = text.splitlines()[-lines:]
            if kept:
                parts.append(f"--- {path.name} ---\n" + "\n".join(kept))
        return "\n".join(parts) or "(Synapse logged nothing)"

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            [str(self.python), "-m", "synapse.app.homeserver", *args],
            cwd=self.data_dir,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise SynapseError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, SIGTERM Synapse if the test process dies without
    running its finalizers (killed). The finalizers stop it in every other case."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return


# --- Client-server API ------------------------------------------------------------------------


@dataclass(frozen=True)
class User:
    user_id: str
    access_token: str
    display_name: str


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any


class MatrixClient:
    """The client-server API calls the scenarios make, as a Matrix client would."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._txn = itertools.count(1)

    def request(
        self, method: str, path: str, body: Any = None, *, user: User | None = None
    ) -> Answer:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        if user is not None:
            request.add_header("Authorization", f"Bearer {user.access_token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                payload = response.read()
                status = response.status
        except urllib.error.HTTPError as error:
            payload = error.read()
            status = error.code
        return Answer(status, json.loads(payload) if payload else None)

    def call(self, method: str, path: str, body: Any = None, *, user: User | None = None) -> Any:
        """A request that must succeed; its JSON answer."""
        answer = self.request(method, path, body, user=user)
        if not 200 <= answer.status < 300:
            raise SynapseError(f"{method} {path} answered {answer.status}: {answer.body}")
        return answer.body

    def register(self, localpart: str, display_name: str) -> User:
        body = {
            "username": localpart,
            "password": f"pw-{localpart}",
            "auth": {"type": "m.login.dummy"},
            "inhibit_login": False,
        }
        answer = self.call("POST", "/_matrix/client/v3/register", body)
        user = User(answer["user_id"], answer["access_token"], display_name)
        self.call(
            "PUT",
            f"/_matrix/client/v3/profile/{quote(user.user_id)}/displayname",
            {"displayname": display_name},
            user=user,
        )
        return user

    def create_dm(self, creator: User, other: User) -> str:
        """A direct chat as Element creates one: is_direct, the other user invited, who joins."""
        answer = self.call(
            "POST",
            "/_matrix/client/v3/createRoom",
            {"preset": "trusted_private_chat", "is_direct": True, "invite": [other.user_id]},
            user=creator,
        )
        room_id = str(answer["room_id"])
        self.call("POST", f"/_matrix/client/v3/join/{quote(room_id)}", {}, user=other)
        return room_id

    def send(self, user: User, room_id: str, event_type: str, content: dict[str, Any]) -> str:
        path = (
            f"/_matrix/client/v3/rooms/{quote(room_id)}/send/{quote(event_type)}/"
            f"e2e-{os.getpid()}-{next(self._txn)}"
        )
        return str(self.call("PUT", path, content, user=user)["event_id"])

    def send_text(self, user: User, room_id: str, text: str) -> str:
        return self.send(user, room_id, "m.room.message", {"msgtype": "m.text", "body": text})

    def read_receipt(self, user: User, room_id: str, event_id: str) -> None:
        path = f"/_matrix/client/v3/rooms/{quote(room_id)}/receipt/m.read/{quote(event_id)}"
        self.call("POST", path, {}, user=user)

    def pushers(self, user: User) -> list[dict[str, Any]]:
        return list(self.call("GET", "/_matrix/client/v3/pushers", user=user)["pushers"])
