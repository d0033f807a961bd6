"""A small run of the load test (`make load` is the big one): a few hundred notifications over
20 pushkeys through the session's local gateway, with backend faults, then the audit."""

from __future__ import annotations

import pytest

from mxpush_local.gateway import LocalGateway
from tests.conftest import ADMIN_TOKEN
from tests.load.driver import LoadConfig
from tests.load.fake_backend import FaultRates
from tests.load.run import run_load


@pytest.mark.slow
def test_every_accepted_event_has_exactly_one_outcome_under_faults(
    gateway: LocalGateway,
) -> None:
    config = LoadConfig(notifications=300, pushkeys=20, seed=7, rate=15, delay=1)
    rates = FaultRates(error=0.05, late=0.01, drop=0.03, fail=0.02)
    report = run_load(config, gateway.url, ADMIN_TOKEN, rates=rates)
    print(report.table())
    assert report.ok, report.table()
