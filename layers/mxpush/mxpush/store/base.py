"""What every part of the store shares: the table, its client, and the item conversions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from mxpush.model import (
    Channel,
    ChannelRejection,
    Mode,
    Registration,
    RegistrationOptions,
    Status,
)
from mxpush.store.models import (
    INDEX_RETENTION_SECONDS,
    REGISTRATION_SK,
    BatchItem,
    ClaimItem,
    RegistrationItem,
)
from mxpush.store.raw import call, deserialize_item, serialize_item

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class StoreBase:
    """The table and the requests on it. Methods raise `StoreUnavailable` on AWS errors."""

    def __init__(self, table_name: str, region: str, *, log_retention_days: int = 7) -> None:
        for model in (RegistrationItem, ClaimItem):
            model.Meta.table_name = table_name
            model.Meta.region = region
            model._connection = None
        self.table_name = table_name
        self.log_retention_seconds = log_retention_days * 24 * 3600
        self.index_retention_seconds = INDEX_RETENTION_SECONDS

    def _client(self) -> DynamoDBClient:
        # pynamodb's botocore client (fail-fast timeouts, created once per container).
        return cast("DynamoDBClient", RegistrationItem._get_connection().connection.client)

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        return call(self._client(), operation, TableName=self.table_name, **kwargs)

    def _call_batch(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        """BatchGetItem / BatchWriteItem: the table is named in their `RequestItems`."""
        return call(self._client(), operation, **kwargs)

    def _put(self, item: dict[str, Any], **kwargs: Any) -> None:
        self._call("PutItem", Item=serialize_item(item), **kwargs)

    def _get_raw(self, rid: str, sk: str) -> dict[str, Any] | None:
        response = self._call(
            "GetItem", Key={"rid": {"S": rid}, "sk": {"S": sk}}, ConsistentRead=True
        )
        item = response.get("Item")
        return deserialize_item(item) if item else None

    def _get_batch(self, rid: str, sk: str) -> BatchItem | None:
        item = self._get_raw(rid, sk)
        return BatchItem.from_item(item) if item else None

    def _get_registration(self, rid: str) -> Registration | None:
        item = self._get_raw(rid, REGISTRATION_SK)
        return registration_from_item(item) if item else None


def registration_from_item(item: dict[str, Any]) -> Registration:
    """A registration item (plain, deserialized) as the domain's record."""
    delay = item.get("delay_seconds")
    give_up = item.get("give_up_after_seconds")
    return Registration(
        rid=str(item["rid"]),
        pushkey=str(item["pushkey"]),
        backend=str(item["backend"]),
        target=dict(item.get("target") or {}),
        app_id=str(item.get("app_id", "")),
        owner=str(item.get("owner", "")),
        created_at=float(item.get("created_at", 0)),
        delay_seconds=None if delay is None else int(delay),
        options=RegistrationOptions.from_item(item.get("options")),
        homeserver=item.get("homeserver"),
        pusher=item.get("pusher"),
        pusher_registered=bool(item.get("pusher_registered", False)),
        status=Status(item.get("status", Status.ACTIVE.value)),
        status_reason=item.get("status_reason"),
        status_at=item.get("status_at"),
        claim=item.get("claim"),
        expires_at=item.get("expires_at"),
        more_channels=tuple(Channel.from_item(c) for c in item.get("more_channels") or ()),
        mode=Mode(item.get("mode") or Mode.FALLBACK.value),
        give_up_after_seconds=None if give_up is None else int(give_up),
        rejected_channels={
            int(index): ChannelRejection(str(value.get("why", "")), float(value.get("at", 0)))
            for index, value in (item.get("chrej") or {}).items()
        },
    )
