"""`python -m mxpush_local` (what `make run` runs): serve until interrupted."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from types import FrameType

from mxpush.errors import ConfigError
from mxpush_local.gateway import LocalGateway, LocalSettings


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = LocalSettings.from_env(os.environ)
    except ValueError as exc:
        print(f"mxpush: bad setting: {exc}", file=sys.stderr)
        return 2
    gateway = LocalGateway(settings)
    try:
        vapid_public_key = gateway.vapid_public_key()
    except ConfigError as exc:
        print(f"mxpush: bad setting: {exc}", file=sys.stderr)
        return 2
    try:
        gateway.start()
    except OSError as exc:
        print(f"mxpush: cannot listen on 127.0.0.1:{settings.port}: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(
        f"mxpush local gateway listening on {gateway.url} "
        f"(notify URL {gateway.url}/_matrix/push/v1/notify, delay {settings.delay_seconds}s)",
        flush=True,
    )
    if gateway.generated_admin_token:
        print(f"admin token (MXPUSH_ADMIN_TOKEN): {gateway.admin_token}", flush=True)
    kept = " (generated for this session)" if gateway.generated_vapid_key else ""
    print(f"Web Push VAPID public key{kept}: {vapid_public_key}", flush=True)
    stop.wait()
    print("mxpush: stopping", flush=True)
    gateway.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
