"""The Web Push sender: the state machine's task for batches whose backend is Web Push.

Raises `TransientDeliveryError` on purpose (timeouts, 429, 5xx): the state machine retries it.
Runs with the crypto layer (cryptography, http_ece); the VAPID key is read on first use.
"""

from __future__ import annotations

from mxpush.backends.webpush import WebPushBackend
from mxpush.sender import sender_handler

lambda_handler = sender_handler(WebPushBackend())
