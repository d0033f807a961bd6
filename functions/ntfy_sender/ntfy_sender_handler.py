"""The ntfy sender: the state machine's task for batches whose backend is ntfy.

Raises `TransientDeliveryError` on purpose (timeouts, 429, 5xx): the state machine retries it.
"""

from __future__ import annotations

from mxpush.backends.ntfy import NtfyBackend
from mxpush.sender import sender_handler

lambda_handler = sender_handler(NtfyBackend())
