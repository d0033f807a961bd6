"""The state machine's bookkeeping task: log how a batch ended and release it.

Runs after every sender, also when the sender failed for good (then the input has `error`),
and at the start of an execution when cancelled batches wait to be written to the log.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from mxpush import wiring
from mxpush.delivery import record_outcome

logger = Logger(service="mxpush")


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, str]:
    return record_outcome(event, store=wiring.store(), now=wiring.clock())
