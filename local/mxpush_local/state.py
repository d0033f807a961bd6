"""Local mode's state on disk: a write-through journal of moto's DynamoDB table.

Every write moto applies (PutItem, UpdateItem, DeleteItem, BatchWriteItem, TransactWriteItems)
appends what the written items are now — each item, or its key when it is gone — as one JSON
line, handed to the OS at once: a `kill -9` loses nothing that was acknowledged (a power cut may
lose the last lines; they are written, not fsynced). At start the journal is loaded into the
table, then compacted: the current items, minus those whose TTL passed (moto never expires
items), are written to a new file that is renamed over the journal, so a crash while compacting
leaves the old journal whole.

A long run compacts too, when the journal has grown several times the table (a busy chat
rewrites its batch at every message), without stopping the gateway: the journal is renamed to
`STATE.old` and a new one begun (a moment under the lock), a child process
(`compact_journal.py`) compacts `STATE.old` into `STATE.old.new`, and then - under the lock
again, for as long as it takes to copy the lines written meanwhile - those lines are appended
to the compacted file, which is renamed over the journal, and `STATE.old` is deleted. Loading
reads `STATE.old` (if a crash left it) before `STATE`, so every crash point leaves the items
whole; the child's memory goes back to the OS when it exits. Compacting the file is compacting
the table: every item the table holds came through the journal (loaded from it, or written by
a request); the expiry pass deletes items without a line, but only those past their TTL, which
compaction drops too.

Step Functions executions and asynchronous invokes are not kept: `recovery.py` re-drives what
they were doing from the table.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.dynamodb.models import dynamodb_backends

from mxpush_local import compact_journal

log = logging.getLogger("mxpush_local")

MEMORY = ":memory:"
# The write actions whose items the journal follows, and where each names its items.
WRITE_ACTIONS = frozenset(
    {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}
)


# Compact a running journal once it has this many lines more than the table has items, and
# at least this factor more.
COMPACT_MIN_LINES = 10_000
COMPACT_FACTOR = 4
# The compacting child yields the CPU to the gateway.
COMPACT_NICE = 10
# A compaction that takes longer than this is given up (the journal stays whole, only longer).
COMPACT_TIMEOUT_SECONDS = 600


class StateError(Exception):
    """The state file cannot be used (unreadable, or another local mode holds it)."""


class Journal:
    """The table's items in a file. `load()` once, before the first request; then `record()`
    after each request moto handled (under the lock that makes requests atomic)."""

    def __init__(
        self,
        path: Path,
        *,
        table_name: str,
        key_names: tuple[str, ...],
        ttl_attribute: str | None,
        region: str,
    ) -> None:
        self.path = path
        # The segment a running compaction works on, and the compacted file it writes.
        self.old_path = path.with_name(path.name + ".old")
        self.compacted_path = path.with_name(path.name + ".old.new")
        self.table_name = table_name
        self.key_names = key_names
        self.ttl_attribute = ttl_attribute
        self.region = region
        self.loaded_items = 0
        self.dropped_lines = 0
        self.compactions = 0
        self._file: IO[str] | None = None
        self._held: IO[str] | None = None
        self._lock = threading.Lock()
        self.compact_min_lines = COMPACT_MIN_LINES
        self.compact_factor = COMPACT_FACTOR
        # Wraps the compacting child's command line (tests slow it down with it).
        self.compact_command: Callable[[list[str]], list[str]] = lambda command: command
        # Lines appended since the last compaction, and how many items that one wrote.
        self._appended = 0
        self._live = 0
        self._compactor: threading.Thread | None = None
        self._child: subprocess.Popen[str] | None = None

    def load(self, *, now: float | None = None) -> int:
        """Put the journal's items into the (new, empty) table and compact the file; returns
        how many items it held."""
        now = time.time() if now is None else now
        try:
            self._hold()
            return self._load(now)
        except OSError as exc:
            raise StateError(f"cannot use the state file {self.path}: {exc}") from exc

    def _load(self, now: float) -> int:
        # A partial compaction a crash left behind: its source, `.old`, is read instead.
        self.compacted_path.unlink(missing_ok=True)
        items: dict[tuple[str, ...], dict[str, Any]] = {}
        for record in self._records():
            if "put" in record:
                items[self._key(record["put"])] = record["put"]
            elif "del" in record:
                items.pop(self._key(record["del"]), None)
        live = [item for item in items.values() if not self._expired(item, now)]
        backend = dynamodb_backends[DEFAULT_ACCOUNT_ID][self.region]
        for item in live:
            backend.put_item(self.table_name, item)
        self._compact(live)
        # Only now: until the compacted journal replaced it, `.old` held part of the items.
        self.old_path.unlink(missing_ok=True)
        with self._lock:
            self._file = self.path.open("a", encoding="utf-8")
        self.loaded_items = len(live)
        return len(live)

    def record(self, handler: Any, response: Any) -> None:
        """After moto handled `handler`'s request: journal the items a successful write
        touched, as they are now."""
        action = _action(handler)
        if action not in WRITE_ACTIONS or _status(response) != 200:
            return
        body = handler.body if isinstance(handler.body, dict) else json.loads(handler.body or "{}")
        backend = handler.dynamodb_backend
        lines = []
        for table, named in _written_keys(action, body):
            if table != self.table_name:
                continue
            key = {name: named[name] for name in self.key_names}
            item = backend.get_item(table, key)
            if item is None:
                lines.append({"del": key})
            else:
                lines.append({"put": item.to_json()["Attributes"]})
        self._append(lines)
        if self._appended > max(self.compact_min_lines, self.compact_factor * self._live):
            self._begin_compaction()

    def wait_compacted(self, timeout: float) -> bool:
        """Wait for a running compaction to end; whether none is running now."""
        compactor = self._compactor
        if compactor is not None:
            compactor.join(timeout)
            return not compactor.is_alive()
        return True

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
            if self._child is not None and self._child.poll() is None:
                # Its output is partial; the next load reads `.old` and the journal instead.
                self._child.kill()
            if self._held is not None:
                self._held.close()  # and with it the lock
                self._held = None
        compactor = self._compactor
        if compactor is not None and compactor is not threading.current_thread():
            compactor.join(timeout=10)

    # --- internals -----------------------------------------------------------------------------

    def _hold(self) -> None:
        """Only one local mode per state file: two would each write their own table to it.
        The OS drops the lock with the process, also on `kill -9`."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        held = self.path.with_name(self.path.name + ".lock").open("a", encoding="utf-8")
        try:
            fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held.close()
            raise StateError(f"{self.path} is in use by another local mode") from None
        self._held = held

    def _append(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        text = "".join(_line(record) for record in records)
        with self._lock:
            if self._file is None:
                return  # closed: local mode is stopping
            # One write per request, flushed: what the OS has survives the process.
            self._file.write(text)
            self._file.flush()
            self._appended += len(records)

    def _begin_compaction(self) -> None:
        """Set the journal so far aside as `.old` and compact it in a child process; the
        requests go on meanwhile, into a new journal."""
        with self._lock:
            if self._file is None or self._compactor is not None:
                return  # stopping, or a compaction is under way
            if self.old_path.exists():
                # A compaction that failed to put the files back together left `.old` holding
                # items the journal lacks: setting the journal aside now would overwrite it.
                # The next load joins them; until then the journal only grows.
                return
            try:
                self._file.close()
                self.path.replace(self.old_path)
            except OSError as exc:
                log.warning("state file %s not compacted: %s", self.path, exc)
                self._appended = 0
                self._file = self.path.open("a", encoding="utf-8")
                return
            self._file = self.path.open("a", encoding="utf-8")
            self.path.chmod(0o600)
            self._appended = 0
            command = [
                sys.executable,
                "-I",  # the standard library only: no PYTHONPATH, user site or current directory
                compact_journal.__file__,
                str(self.old_path),
                str(self.compacted_path),
                "--keys",
                *self.key_names,
                "--now",
                repr(time.time()),
                "--nice",
                str(COMPACT_NICE),
            ]
            if self.ttl_attribute is not None:
                command += ["--ttl", self.ttl_attribute]
            self._compactor = threading.Thread(
                target=self._compact_aside,
                args=(self.compact_command(command),),
                name="state-compaction",
                daemon=True,
            )
            self._compactor.start()

    def _compact_aside(self, command: list[str]) -> None:
        try:
            self._settle(self._run_compactor(command))
        finally:
            self._compactor = None
            self._child = None

    def _run_compactor(self, command: list[str]) -> int | None:
        """How many items the child wrote to the compacted file; None if it did not."""
        with self._lock:
            if self._file is None:
                return None  # stopping
            try:
                self._child = subprocess.Popen(  # noqa: S603 - our own script, no shell
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            except OSError as exc:
                log.warning("state file %s not compacted: %s", self.path, exc)
                return None
        child = self._child
        try:
            out, err = child.communicate(timeout=COMPACT_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            log.warning(
                "state file %s not compacted: took over %d s", self.path, COMPACT_TIMEOUT_SECONDS
            )
            return None
        if child.returncode != 0 or not out.strip().isdigit():
            if self._file is not None:  # not killed by close()
                log.warning(
                    "state file %s not compacted: exit %s: %s",
                    self.path,
                    child.returncode,
                    err.strip()[-500:],
                )
            return None
        return int(out.strip())

    def _settle(self, written: int | None) -> None:
        """Under the lock: put the compacted file (or, if it failed, the segment it came
        from) back in front of the lines written meanwhile, as the one journal."""
        with self._lock:
            if self._file is None:
                return  # stopping: the next load reads `.old` and the journal
            base = self.old_path if written is None else self.compacted_path
            try:
                self._file.close()
                with (
                    self.path.open(encoding="utf-8") as tail,
                    base.open("a", encoding="utf-8") as out,
                ):
                    copied = 0
                    for line in tail:
                        out.write(line)
                        copied += 1
                    out.flush()
                    os.fsync(out.fileno())
                base.replace(self.path)
                self.path.chmod(0o600)
                if written is not None:
                    self.old_path.unlink()
                    self.compactions += 1
                    self._live = written
                self._appended = copied
            except OSError as exc:
                # Whatever step failed, `.old` + the journal (or the journal alone) still hold
                # every item; the next load puts them together.
                log.warning("state file %s not compacted: %s", self.path, exc)
            self._file = self.path.open("a", encoding="utf-8")

    def _records(self) -> Iterator[dict[str, Any]]:
        for path in (self.old_path, self.path):
            if not path.exists():
                continue

            def unreadable(number: int, path: Path = path) -> None:
                log.warning("state file %s: line %d unreadable, skipped", path, number)
                self.dropped_lines += 1

            for _line, record in compact_journal.records(path, unreadable):
                yield record

    def _compact(self, items: Iterable[dict[str, Any]]) -> None:
        partial = self.path.with_name(self.path.name + ".new")
        written = 0
        with partial.open("w", encoding="utf-8") as out:
            for item in items:
                out.write(_line({"put": item}))
                written += 1
            out.flush()
            os.fsync(out.fileno())
        partial.replace(self.path)
        # The state holds message previews and backend tokens: the owner's eyes only.
        self.path.chmod(0o600)
        self._appended = 0
        self._live = written

    def _key(self, item: dict[str, Any]) -> tuple[str, ...]:
        return compact_journal.item_key(item, self.key_names)

    def _expired(self, item: dict[str, Any], now: float) -> bool:
        return compact_journal.expired(item, self.ttl_attribute, now)


def secrets_file(state: Path) -> Path:
    """Where the secrets local mode generated (operator token, VAPID key) are kept beside the
    state: registrations outlive a restart, so must the token that manages them and the key
    browsers subscribed with."""
    return state.with_name(state.name + ".keys")


def read_secrets(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise StateError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise StateError(f"cannot read {path}: not a JSON object")
    return {str(k): str(v) for k, v in data.items()}


def write_secrets(path: Path, values: Mapping[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".new")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(dict(values), out)
        out.flush()
        os.fsync(out.fileno())
    partial.replace(path)


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":")) + "\n"


def _action(handler: Any) -> str:
    target = handler.headers.get("x-amz-target") or handler.headers.get("X-Amz-Target") or ""
    return str(target).rsplit(".", 1)[-1]


def _status(response: Any) -> int:
    try:
        return int(response[0])
    except (TypeError, ValueError, IndexError):
        return 0


def _written_keys(action: str, body: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(table, key) of every item a write request names. A PutItem's key is in its item; the
    journal takes the whole item as its key and keeps only the key attributes."""
    if action == "PutItem":
        yield body["TableName"], body["Item"]
    elif action in ("UpdateItem", "DeleteItem"):
        yield body["TableName"], body["Key"]
    elif action == "BatchWriteItem":
        for table, requests in (body.get("RequestItems") or {}).items():
            for request in requests:
                if "PutRequest" in request:
                    yield table, request["PutRequest"]["Item"]
                elif "DeleteRequest" in request:
                    yield table, request["DeleteRequest"]["Key"]
    elif action == "TransactWriteItems":
        for entry in body.get("TransactItems") or ():
            for kind, part in entry.items():
                if kind == "Put":
                    yield part["TableName"], part["Item"]
                elif kind in ("Update", "Delete"):
                    yield part["TableName"], part["Key"]
