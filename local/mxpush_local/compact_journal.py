"""Compact a state journal segment into one line per live item, in a process of its own.

    python compact_journal.py SOURCE DESTINATION --keys rid sk --ttl expires_at --now 1.7e9

Reads SOURCE (journal lines: `{"put": item}` or `{"del": key}`), writes to DESTINATION one
`{"put": item}` line per item whose last line is a put and whose TTL has not passed at --now,
fsyncs it and prints how many items it wrote. Lines that do not parse (a crash's torn last line)
are skipped. The running gateway starts this as a child process: the whole segment is decoded
here, so the memory it takes goes back to the OS when the child exits (a gateway that did this
itself would keep the arenas it grew), and the table lock is never held meanwhile.

Standard library only, and runnable by path (`python -I`): no import of the gateway's code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any


def compact(
    source: Path,
    destination: Path,
    *,
    key_names: Sequence[str],
    ttl_attribute: str | None,
    now: float,
) -> int:
    """Write SOURCE's live items to DESTINATION (fsynced); returns how many."""
    # Key -> the item's last line as read (not re-encoded: the bytes the gateway wrote).
    latest: dict[tuple[str, ...], str | None] = {}
    for line, record in records(source):
        if "put" in record and isinstance(record["put"], dict):
            item = record["put"]
            latest[item_key(item, key_names)] = None if expired(item, ttl_attribute, now) else line
        elif "del" in record and isinstance(record["del"], dict):
            latest[item_key(record["del"], key_names)] = None
    written = 0
    with destination.open("w", encoding="utf-8") as out:
        for kept in latest.values():
            if kept is not None:
                out.write(kept if kept.endswith("\n") else kept + "\n")
                written += 1
        out.flush()
        os.fsync(out.fileno())
    destination.chmod(0o600)
    return written


def records(
    path: Path, on_unreadable: Callable[[int], None] | None = None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each line of a journal and what it says, skipping blank lines and those that do not
    parse (a line cut short by a crash, the last one, or a damaged file: `on_unreadable` gets
    its number)."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                if on_unreadable is not None:
                    on_unreadable(number)
                continue
            if isinstance(record, dict):
                yield line, record


def item_key(item: dict[str, Any], key_names: Sequence[str]) -> tuple[str, ...]:
    return tuple(json.dumps(item.get(name), sort_keys=True) for name in key_names)


def expired(item: dict[str, Any], ttl_attribute: str | None, now: float) -> bool:
    if ttl_attribute is None:
        return False
    value = item.get(ttl_attribute)
    raw = value.get("N") if isinstance(value, dict) else None
    try:
        return raw is not None and float(raw) < now
    except (TypeError, ValueError):
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("destination", type=Path)
    parser.add_argument("--keys", nargs="+", required=True)
    parser.add_argument("--ttl", default=None)
    parser.add_argument("--now", type=float, required=True)
    parser.add_argument("--nice", type=int, default=0, help="lower this process's priority")
    args = parser.parse_args(argv)
    if args.nice:
        # Beside a gateway answering requests on the same cores: the gateway goes first.
        os.nice(args.nice)
    written = compact(
        args.source, args.destination, key_names=args.keys, ttl_attribute=args.ttl, now=args.now
    )
    print(written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
