"""The Web Push sender: the state machine's task for batches whose backend is Web Push.

Raises `TransientDeliveryError` on purpose (timeouts, 429, 5xx): the state machine retries it.
Runs with the crypto layer (cryptography, pywebpush); the VAPID key is read on first use.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from mxpush import wiring
from mxpush.backends.webpush import WebPushBackend
from mxpush.delivery import send_batch

logger = Logger(service="mxpush")
BACKEND = WebPushBackend()


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, str]:
    return send_batch(
        event,
        backend=BACKEND,
        store=wiring.store(),
        http=wiring.outbound_http(),
        now=wiring.clock(),
    )
