"""Raw DynamoDB requests: the botocore client pynamodb holds, DynamoDB JSON in and out, and
AWS errors turned into `StoreUnavailable` / `ConditionFailed`.

The batch, due and slot items are written with plain requests rather than pynamodb models:
their writes need `ReturnValuesOnConditionCheckFailure`, one-request queries that mix item
kinds, and exact control of what each request costs.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.exceptions import PynamoDBException

from mxpush.errors import StoreUnavailable

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

Raw = dict[str, Any]


class ConditionFailed(Exception):
    """A conditional write's condition did not hold; `old_item` is the item as it was."""

    def __init__(self, old_item: Mapping[str, Any] | None) -> None:
        super().__init__("conditional check failed")
        self.old_item = old_item


def serialize(value: Any) -> dict[str, Any]:
    """A Python value as DynamoDB JSON (the subset mxpush stores)."""
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | float | Decimal):
        return {"N": _number(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, Mapping):
        return {"M": {str(k): serialize(v) for k, v in value.items()}}
    if isinstance(value, list | tuple):
        return {"L": [serialize(v) for v in value]}
    raise TypeError(f"cannot store a {type(value).__name__}")


def serialize_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: serialize(v) for k, v in item.items() if v is not None}


def deserialize(raw: Mapping[str, Any]) -> Any:
    ((kind, value),) = raw.items()
    if kind == "M":
        return {k: deserialize(v) for k, v in value.items()}
    if kind == "L":
        return [deserialize(v) for v in value]
    if kind == "N":
        number = float(value)
        return int(number) if number.is_integer() else number
    if kind == "NULL":
        return None
    return value


def deserialize_item(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: deserialize(v) for k, v in (raw or {}).items()}


def error_code(exc: Exception) -> str:
    if isinstance(exc, PynamoDBException):
        return exc.cause_response_code or type(exc.cause).__name__
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    return type(exc).__name__


def call(client: DynamoDBClient, operation: str, **kwargs: Any) -> dict[str, Any]:
    """One DynamoDB request. A failed condition raises `ConditionFailed` with the old item
    (conditional writes here ask for it); any other failure `StoreUnavailable`."""
    if "ConditionExpression" in kwargs and operation in ("PutItem", "UpdateItem", "DeleteItem"):
        kwargs.setdefault("ReturnValuesOnConditionCheckFailure", "ALL_OLD")
    try:
        response = getattr(client, _METHODS[operation])(**kwargs)
    except ClientError as exc:
        if error_code(exc) == "ConditionalCheckFailedException":
            raise ConditionFailed(
                cast("Mapping[str, Any] | None", exc.response.get("Item"))
            ) from None
        raise StoreUnavailable(f"DynamoDB {operation} failed ({error_code(exc)})") from None
    except BotoCoreError as exc:
        raise StoreUnavailable(f"DynamoDB {operation} failed ({type(exc).__name__})") from None
    return cast("dict[str, Any]", response)


_METHODS = {
    "GetItem": "get_item",
    "PutItem": "put_item",
    "UpdateItem": "update_item",
    "DeleteItem": "delete_item",
    "Query": "query",
    "BatchGetItem": "batch_get_item",
    "BatchWriteItem": "batch_write_item",
}


def _number(value: float | Decimal) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
