"""Every minute (EventBridge schedule): re-drive slots whose execution was never started,
failed or was lost, and batches of past slots that nobody took. Reads one slot-marker
partition per minute of its window: next to nothing when nothing is due."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from mxpush import wiring
from mxpush.delivery import sweep

logger = Logger(service="mxpush")


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    result = sweep(store=wiring.store(), senders=wiring.senders(), now=wiring.clock())
    if any(result.get(k) for k in ("redriven_slots", "redriven_batches")):
        logger.warning("sweep re-drove lost deliveries", extra=result)
    return result
