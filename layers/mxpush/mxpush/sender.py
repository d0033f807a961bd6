"""The one shape of every sender Lambda, one per backend.

Each `functions/<name>_sender/<name>_sender_handler.py` is `sender_handler(<Name>Backend())`:
one function per backend (its own logs, metrics, timeout, and only its own imports at cold
start), one body. Two kinds of event reach it:

- `{"backend", "batches": [{"registration", "batch"}, ...]}`: a first attempt, invoked
  asynchronously by a slot's delivery step (or by the notify path for calls and delay 0);
- `{"registration", "batch", "backend", "retry": true, ...}`: a retry execution's Task. Its
  `TransientDeliveryError` passes through on purpose: the state machine retries it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

from mxpush import metrics, wiring
from mxpush.delivery import send_batches, send_retry

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from mxpush.backends.base import Backend

SenderHandler = Callable[[dict[str, Any], "LambdaContext"], dict[str, Any]]


def sender_handler(backend: Backend) -> SenderHandler:
    logger = Logger(service="mxpush")

    @logger.inject_lambda_context(clear_state=True)
    @metrics.flushed
    def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        if "batches" in event:
            return send_batches(
                event,
                backend=backend,
                store=wiring.store(),
                http=wiring.outbound_http(),
                retries=wiring.scheduler(),
                clock=wiring.clock,
                slots=wiring.scheduler(),
            )
        return send_retry(
            event,
            backend=backend,
            store=wiring.store(),
            http=wiring.outbound_http(),
            clock=wiring.clock,
            slots=wiring.scheduler(),
        )

    return lambda_handler
