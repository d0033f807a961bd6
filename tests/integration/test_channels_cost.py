"""What a fallback and an escalation cost in AWS calls (README, "Channels"), counted by the
bench's meter (every thread: the notify handler, the slot executions, the senders) from the
notification to the last outcome, against the same push on a registration of one channel.

Run with `-s` to print the tables the README quotes."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from bench.cost_meter import Meter

from mxpush_local.gateway import LocalGateway
from tests.conftest import Api, synapse_body, wait_until
from tests.fakes.gotify import FakeGotify
from tests.fakes.ntfy import FakeNtfy
from tests.integration.test_channels_flow import (
    READ_ALL,
    channel_outcomes,
    gotify_channel,
    ntfy_channel,
    register_channels,
)
from tests.integration.test_local_mode import free_port

pytestmark = pytest.mark.slow

DM = "message_dm_2_members.1.full"
Calls = Counter[tuple[str, str]]


@pytest.fixture
def meter(gateway: LocalGateway) -> Iterator[Meter]:
    installed = Meter(gateway.aws.functions, gateway.aws.table_name)
    installed.install()
    yield installed
    installed.uninstall()


def measure(meter: Meter, api: Api, work: Callable[[], object], done: Callable[[], Any]) -> Calls:
    """AWS calls by service and operation from `work` until `done()` holds (and a second more:
    nothing may follow), the registration API's own calls left out."""
    meter.start()
    work()
    with meter.measuring():
        wait_until(done, timeout=20)
    time.sleep(1.2)
    tally = meter.stop()
    calls: Calls = Counter()
    for (source, service, operation), count in tally.calls.items():
        if source == "RegistrationFunction":
            continue  # the test's own reads of the log
        calls[(service, operation)] += count
    return calls


def show(title: str, calls: Calls) -> None:
    print(f"\n{title}: {sum(calls.values())} calls")
    for (service, operation), count in sorted(calls.items()):
        print(f"  {service:14} {operation:16} {count}")


def delivered_entry(api: Api, pushkey: str, channels: int) -> Callable[[], Any]:
    def check() -> Any:
        for entry in api.deliveries(pushkey):
            if entry["outcome"] == "delivered" and (
                channels == 0
                or (
                    len(entry.get("channels", ())) == channels
                    and entry["channels"][-1]["outcome"] == "delivered"
                )
            ):
                return entry
        return None

    return check


def test_what_a_fallback_and_an_escalation_cost(
    api: Api, meter: Meter, gotify: FakeGotify, ntfy: FakeNtfy
) -> None:
    # The baseline: one channel, delivered at once (delay 0).
    single = register_channels(api, [gotify_channel(gotify)])
    baseline = measure(
        meter,
        api,
        lambda: api.notify(synapse_body(DM, single)),
        delivered_entry(api, single, 0),
    )
    show("one channel, delivered", baseline)

    # Fallback: Gotify refuses connections and gives up at once; ntfy delivers.
    down = f"http://127.0.0.1:{free_port()}/gotify"
    chain = register_channels(
        api, [gotify_channel(down, give_up_after_seconds=0), ntfy_channel(ntfy)]
    )
    fallback = measure(
        meter, api, lambda: api.notify(synapse_body(DM, chain)), delivered_entry(api, chain, 2)
    )
    show("fallback (gotify failed, ntfy delivered)", fallback)

    # Escalation: Gotify delivers, the push stays unread, ntfy gets it 2 s later.
    escalating = register_channels(
        api, [gotify_channel(gotify), ntfy_channel(ntfy, after_seconds=2)]
    )
    escalation = measure(
        meter,
        api,
        lambda: api.notify(synapse_body(DM, escalating)),
        delivered_entry(api, escalating, 2),
    )
    show("escalation (gotify delivered, unread, ntfy 2 s later)", escalation)

    # A read before the escalation's time: one more write on the notify path, nothing sent.
    read_first = register_channels(
        api, [gotify_channel(gotify), ntfy_channel(ntfy, after_seconds=30)]
    )
    api.notify(synapse_body(DM, read_first))
    wait_until(lambda: api.deliveries(read_first), timeout=15)
    cancelled = measure(
        meter,
        api,
        lambda: api.notify(synapse_body(READ_ALL, read_first)),
        lambda: channel_outcomes(api.deliveries(read_first)[0])[-1][2] == "cancelled",
    )
    show("a read cancelling a waiting escalation", cancelled)

    extra_fallback = fallback - baseline
    extra_escalation = escalation - baseline
    show("fallback beyond one channel", extra_fallback)
    show("escalation beyond one channel", extra_escalation)
    # A fallback: the failed attempt's claim and the move (the channel's outcome in the same
    # write), then the next channel in the next slot: its marker (read, write) and the slot's
    # execution, its delivery step's reads, a sender invoke and the claim.
    # Alone in its slot (the worst case): 15 calls more, one of them StartExecution.
    assert extra_fallback[("stepfunctions", "StartExecution")] <= 1
    assert sum(c for (s, _), c in extra_fallback.items() if s == "dynamodb") <= 12
    assert sum(extra_fallback.values()) <= 15
    # An escalation: the same, from the delivering sender; no other Step Functions execution.
    assert extra_escalation[("stepfunctions", "StartExecution")] <= 1
    assert sum(c for (s, _), c in extra_escalation.items() if s == "dynamodb") <= 12
    assert sum(extra_escalation.values()) <= 15
    # Ending a waiting escalation is one conditional write beside the read's own Query.
    assert cancelled[("dynamodb", "UpdateItem")] == 1
    assert ("stepfunctions", "StartExecution") not in cancelled
