"""A slot execution's delivery step: after the Wait, hand the slot's due batches to their
senders (asynchronous invokes) and mark the slot dispatched."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from mxpush import wiring
from mxpush.delivery import deliver_slot

logger = Logger(service="mxpush")


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    return deliver_slot(event, store=wiring.store(), senders=wiring.senders(), clock=wiring.clock)
