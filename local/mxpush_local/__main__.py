"""`python -m mxpush_local` (what `make run` runs): serve until interrupted."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import os
import signal
import sys
import threading
from types import FrameType

from mxpush.errors import ConfigError
from mxpush_local.gateway import LocalGateway, LocalSettings
from mxpush_local.state import StateError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mxpush_local",
        description="The whole mxpush gateway on one machine (local mode); Ctrl-C stops it. "
        "Settings come from the environment (see the README); these options override it.",
    )
    parser.add_argument(
        "--host",
        help="address to listen on (default: MXPUSH_HOST, else 127.0.0.1). Anything but "
        "loopback exposes the registration API, and its operator token travels over plain "
        "HTTP: put a TLS proxy in front and set MXPUSH_PUBLIC_URL to its https URL.",
    )
    parser.add_argument(
        "--port", type=int, help="port to listen on (default: PORT, else 3000; 0 = any free one)"
    )
    return parser.parse_args(argv)


# CPython's collector thresholds for a server that keeps its whole table as Python objects:
# gen-0 runs every 20,000 net allocations (default 700), a full collection is considered after
# 100 gen-1 runs (default 10). See `settle_collector`.
COLLECTOR_THRESHOLDS = (20_000, 20, 100)


def settle_collector() -> None:
    """Local mode keeps its table (moto's items, every value a Python object) in memory. With
    the default thresholds the cyclic collector walked all of it every few seconds under load:
    at 40 notifications/s, 14 full collections in 80 s, up to 436 ms each with every thread
    stopped, and collections of all ages ~8% of the CPU. Collect less often (2 s in all over
    the same run, one full collection), and move what start-up made and loaded - modules,
    the table read from the state file - out of the collector's way (`gc.freeze`: those
    objects are still freed by reference counting; only cycles among them would stay)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*COLLECTOR_THRESHOLDS)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = LocalSettings.from_env(os.environ)
    except (ValueError, ConfigError) as exc:
        print(f"mxpush: bad setting: {exc}", file=sys.stderr)
        return 2
    if args.host is not None:
        settings = dataclasses.replace(settings, host=args.host)
    if args.port is not None:
        settings = dataclasses.replace(settings, port=args.port)
    try:
        gateway = LocalGateway(settings)
    except StateError as exc:
        print(f"mxpush: {exc}", file=sys.stderr)
        return 1
    try:
        vapid_public_key = gateway.vapid_public_key()
    except ConfigError as exc:
        print(f"mxpush: bad setting: {exc}", file=sys.stderr)
        return 2
    try:
        gateway.start()
    except StateError as exc:
        print(f"mxpush: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:  # ValueError: waitress refuses the host or port
        print(f"mxpush: cannot listen on {settings.host}:{settings.port}: {exc}", file=sys.stderr)
        return 1
    settle_collector()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    say(
        f"mxpush local gateway listening on {gateway.url} "
        f"(notify URL {gateway.url}/_matrix/push/v1/notify, delay {settings.delay_seconds}s)",
    )
    say(state_line(gateway))
    if gateway.listens_beyond_loopback:
        say(
            f"mxpush: WARNING: listening on {settings.host}, beyond this machine: the operator "
            "token and pushkeys travel over plain HTTP. Put a TLS proxy in front and set "
            "MXPUSH_PUBLIC_URL to its https URL.",
        )
    if gateway.generated_admin_token:
        say(f"admin token (MXPUSH_ADMIN_TOKEN): {gateway.admin_token}")
    kept = ""
    if gateway.generated_vapid_key:
        where = gateway.secrets_path
        kept = f" (generated, kept in {where})" if where else " (generated for this session)"
    say(f"Web Push VAPID public key{kept}: {vapid_public_key}")
    say(email_line(gateway.settings))
    stop.wait()
    say("mxpush: metrics of this session (also at GET /metrics):")
    say("\n".join(gateway.metrics.summary()))
    say("mxpush: stopping")
    gateway.stop()
    return 0


def say(line: str) -> None:
    """One line on stdout in one write: the handlers' log lines, written by other threads
    meanwhile (a restart resumes pending pushes at once), cannot land inside it, as they could
    between print's text and its newline."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def email_line(settings: LocalSettings) -> str:
    """What the email backend will use (never the SMTP password)."""
    if not settings.smtp_url:
        return "email: off (set MXPUSH_SMTP_URL and MXPUSH_EMAIL_FROM to mail digests)"
    from mxpush.mailer import parse_smtp_url  # noqa: PLC0415

    try:
        server = parse_smtp_url(settings.smtp_url)
    except ConfigError as exc:
        return f"email: off ({exc})"
    starttls = "" if settings.smtp_starttls else ", STARTTLS off"
    sender = settings.email_from or "nobody: set MXPUSH_EMAIL_FROM"
    return f"email: through {server}{starttls}, from {sender}"


def state_line(gateway: LocalGateway) -> str:
    journal = gateway.aws.journal
    if journal is None:
        return "state: in memory (MXPUSH_STATE=:memory:): nothing is kept after a stop"
    line = f"state: {journal.path} ({journal.loaded_items} items kept; delete it to start afresh)"
    recovery = gateway.recovery
    if recovery is not None and recovery.total:
        line += (
            f"\nresumed {recovery.total} pending pushes: {recovery.sent_now} due now, "
            f"{recovery.scheduled} later, {recovery.retrying} retrying, {recovery.in_flight} "
            "in flight when it stopped (these may arrive twice)"
        )
    return line


if __name__ == "__main__":
    sys.exit(main())
