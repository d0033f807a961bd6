"""The DynamoDB store, read by concern: `notify_side` (the notify path), `delivery_side` (slots,
senders, sweep), `registrations` (the registration API), `log` (the delivery log); `models`
says what the table holds. The domain code depends on small Protocols, not on this class."""

from __future__ import annotations

from mxpush.store.delivery_side import (
    CLAIM_LEASE_SECONDS,
    Claimed,
    ClaimResult,
    DeliverySide,
    Skipped,
    SlotMarker,
)
from mxpush.store.log import DeliveryLog
from mxpush.store.models import BatchItem, ClaimItem, DueEntry, RegistrationItem, claim_id
from mxpush.store.notify_side import (
    AcceptResult,
    Cancelled,
    CancelResult,
    Duplicate,
    IsRejected,
    Joined,
    NothingPending,
    NotifySide,
    Opened,
    PushkeyView,
    SlotState,
    Unknown,
)
from mxpush.store.registrations import ClaimTaken, Registrations, Removed


class DynamoStore(NotifySide, DeliverySide, Registrations, DeliveryLog):
    """All of mxpush's state in one table (see `mxpush.store.models`)."""


__all__ = [
    "CLAIM_LEASE_SECONDS",
    "AcceptResult",
    "BatchItem",
    "CancelResult",
    "Cancelled",
    "ClaimItem",
    "ClaimResult",
    "ClaimTaken",
    "Claimed",
    "DueEntry",
    "Duplicate",
    "DynamoStore",
    "IsRejected",
    "Joined",
    "NothingPending",
    "Opened",
    "PushkeyView",
    "RegistrationItem",
    "Removed",
    "Skipped",
    "SlotMarker",
    "SlotState",
    "Unknown",
    "claim_id",
]
