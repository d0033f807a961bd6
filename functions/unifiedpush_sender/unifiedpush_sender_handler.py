"""The UnifiedPush sender: the state machine's task for batches whose backend is UnifiedPush.

Raises `TransientDeliveryError` on purpose (timeouts, 429, 5xx): the state machine retries it.
"""

from __future__ import annotations

from mxpush.backends.unifiedpush import UnifiedPushBackend
from mxpush.sender import sender_handler

lambda_handler = sender_handler(UnifiedPushBackend())
