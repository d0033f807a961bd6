"""The email sender: mails a digest of each batch through Amazon SES v2 or SMTP.

Raises `TransientDeliveryError` on purpose (SMTP 4xx, a lost connection, SES throttling): the
state machine retries it. The mail transport and the unsubscribe key are read on first use.
"""

from __future__ import annotations

from mxpush.backends.email import EmailBackend
from mxpush.sender import sender_handler

lambda_handler = sender_handler(EmailBackend())
