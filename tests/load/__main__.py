"""`python -m tests.load` (`make load`): local mode in this process, a faulty fake Gotify, many
Synapse-like senders, then the exactly-once audit. Exits 1 when a must-be-zero figure is not."""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
import time

from mxpush_local.gateway import LocalGateway, LocalSettings
from tests.load.driver import LoadConfig
from tests.load.fake_backend import FaultRates
from tests.load.run import run_load


def main(argv: list[str] | None = None) -> int:
    defaults, default_rates = LoadConfig(), FaultRates()
    parser = argparse.ArgumentParser(prog="python -m tests.load", description=__doc__)
    parser.add_argument("--notifications", type=int, default=defaults.notifications)
    parser.add_argument("--pushkeys", type=int, default=defaults.pushkeys)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--rate", type=float, default=defaults.rate, help="notifications/s")
    parser.add_argument("--delay", type=int, default=defaults.delay, help="delay_seconds")
    parser.add_argument("--error-rate", type=float, default=default_rates.error, help="500s")
    parser.add_argument("--late-rate", type=float, default=default_rates.late)
    parser.add_argument("--drop-rate", type=float, default=default_rates.drop)
    parser.add_argument("--fail-rate", type=float, default=default_rates.fail, help="400s")
    parser.add_argument("--bad-token-ratio", type=float, default=defaults.bad_token_ratio)
    parser.add_argument("--idle-timeout", type=float, default=None, help="seconds")
    args = parser.parse_args(argv)
    config = LoadConfig(
        notifications=args.notifications,
        pushkeys=args.pushkeys,
        seed=args.seed,
        rate=args.rate,
        delay=args.delay,
        bad_token_ratio=args.bad_token_ratio,
    )
    rates = FaultRates(args.error_rate, args.late_rate, args.drop_rate, args.fail_rate)
    # The handlers' own logs would drown the figures; failures show up in the audit.
    logging.disable(logging.WARNING)
    gateway = LocalGateway(
        LocalSettings(
            port=0,
            admin_token=secrets.token_urlsafe(16),
            delay_seconds=config.delay,
            access_log=False,
        )
    )
    gateway.start()

    def say(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    say(f"{config}; faults {rates} (total {rates.total:.0%})")
    try:
        report = run_load(
            config,
            gateway.url,
            gateway.admin_token,
            rates=rates,
            idle_timeout=args.idle_timeout,
            say=say,
        )
    finally:
        gateway.aws.stop_running_executions()
        gateway.stop()
    print(report.table())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
