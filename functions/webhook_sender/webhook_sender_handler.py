"""The webhook sender: the state machine's task for batches whose backend is the webhook.

Raises `TransientDeliveryError` on purpose (no answer, or any answer but 2xx, 404 and 410): the
state machine retries it for about eleven minutes (SendWebhook's own Retry).
"""

from __future__ import annotations

from mxpush.backends.webhook import WebhookBackend
from mxpush.sender import sender_handler

lambda_handler = sender_handler(WebhookBackend())
