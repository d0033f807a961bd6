"""Logs `failed` for pushes that will not be tried again: a retry execution out of retries
(its Catch), or a sender invocation Lambda gave up on (the senders' on-failure destination).
A push with another channel to try goes on to it (in the next slot) instead."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from mxpush import metrics, wiring
from mxpush.delivery import record_outcome

logger = Logger(service="mxpush")


@logger.inject_lambda_context(clear_state=True)
@metrics.flushed
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return record_outcome(event, store=wiring.store(), now=wiring.clock(), slots=wiring.scheduler())
