"""Local mode's state on disk: a write-through journal of moto's DynamoDB table.

Every write moto applies (PutItem, UpdateItem, DeleteItem, BatchWriteItem, TransactWriteItems)
appends what the written items are now — each item, or its key when it is gone — as one JSON
line, handed to the OS at once: a `kill -9` loses nothing that was acknowledged (a power cut may
lose the last lines; they are written, not fsynced). At start the journal is loaded into the
table, then compacted: the current items, minus those whose TTL passed (moto never expires
items), are written to a new file that is renamed over the journal, so a crash while compacting
leaves the old journal whole. A long run compacts too, when the journal has grown several times
the table (a busy chat rewrites its batch at every message).

Step Functions executions and asynchronous invokes are not kept: `recovery.py` re-drives what
they were doing from the table.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.dynamodb.models import dynamodb_backends

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
        self.table_name = table_name
        self.key_names = key_names
        self.ttl_attribute = ttl_attribute
        self.region = region
        self.loaded_items = 0
        self.dropped_lines = 0
        self._file: IO[str] | None = None
        self._held: IO[str] | None = None
        self._lock = threading.Lock()
        self.compact_min_lines = COMPACT_MIN_LINES
        self.compact_factor = COMPACT_FACTOR
        # Lines appended since the last compaction, and how many items that one wrote.
        self._appended = 0
        self._live = 0

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
            self._compact_running(backend)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
            if self._held is not None:
                self._held.close()  # and with it the lock
                self._held = None

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

    def _compact_running(self, backend: Any) -> None:
        """Called under the request lock: no write changes the table meanwhile. The items are
        written one at a time as they are encoded: a list of the whole table's JSON (tens of
        MB in a long run) would raise the process's memory for good (CPython keeps the
        arenas it grew)."""
        now = time.time()
        table_items = backend.get_table(self.table_name).all_items()
        encoded = (item.to_json()["Attributes"] for item in table_items)
        with self._lock:
            if self._file is None:
                return  # closed: local mode is stopping
            try:
                self._compact(item for item in encoded if not self._expired(item, now))
            except OSError as exc:
                # The journal is whole, only longer: the request that got here succeeded.
                log.warning("state file %s not compacted: %s", self.path, exc)
                self._appended = 0
                return
            self._file.close()
            self._file = self.path.open("a", encoding="utf-8")

    def _records(self) -> Iterator[dict[str, Any]]:
        try:
            handle = self.path.open(encoding="utf-8")
        except FileNotFoundError:
            return
        with handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    # A line cut short by a crash (the last one), or a damaged file.
                    log.warning("state file %s: line %d unreadable, skipped", self.path, number)
                    self.dropped_lines += 1
                    continue
                if isinstance(record, dict):
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
        return tuple(json.dumps(item.get(name), sort_keys=True) for name in self.key_names)

    def _expired(self, item: dict[str, Any], now: float) -> bool:
        if self.ttl_attribute is None:
            return False
        raw = item.get(self.ttl_attribute, {}).get("N")
        try:
            return raw is not None and float(raw) < now
        except ValueError:
            return False


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
