"""The webhook sender: the state machine's task for batches whose backend is the webhook.

Raises `TransientDeliveryError` on purpose (no answer, or any answer but 2xx, 404 and 410): the
state machine retries it for about eleven minutes (SendWebhook's own Retry).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from mxpush import wiring
from mxpush.backends.webhook import WebhookBackend
from mxpush.delivery import send_batch

logger = Logger(service="mxpush")
BACKEND = WebhookBackend()


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, str]:
    return send_batch(
        event,
        backend=BACKEND,
        store=wiring.store(),
        http=wiring.outbound_http(),
        now=wiring.clock(),
    )
