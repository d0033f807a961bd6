"""The one shape of every sender Lambda: the state machine's task for a batch of one backend.

Each `functions/<name>_sender/<name>_sender_handler.py` is `sender_handler(<Name>Backend())`:
one function per backend (its own logs, metrics, timeout, and only its own imports at cold
start), one body. Errors pass through on purpose: the state machine retries
`TransientDeliveryError` and records the others.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

from mxpush import wiring
from mxpush.delivery import send_batch

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from mxpush.backends.base import Backend

SenderHandler = Callable[[dict[str, Any], "LambdaContext"], dict[str, str]]


def sender_handler(backend: Backend) -> SenderHandler:
    logger = Logger(service="mxpush")

    @logger.inject_lambda_context(clear_state=True)
    def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, str]:
        return send_batch(
            event,
            backend=backend,
            store=wiring.store(),
            http=wiring.outbound_http(),
            now=wiring.clock(),
        )

    return lambda_handler
