"""A Query on the partition key alone, answered from moto's partition without moto's detour.

The notify path reads a pushkey's registration and latest batches with one such Query
(`KeyConditionExpression="rid = :rid"`, newest first, a small `Limit`). moto answers it by
collecting the partition's items, sorting them with `DynamoType` comparisons, deep-copying the
page, turning it into plain dicts (`dynamo_to_dict`) and serializing those to JSON, which
local mode then parses back: ~20% of local mode's CPU under load, for one read.

`answer_query` gives botocore's parsed answer to the same request — the same items in the same
order, the same `Count`, `ScannedCount` and `LastEvaluatedKey` — straight from the partition.
It handles only the plain shape; for anything else (an index, a sort-key condition, a filter, a
projection, a start key, `Select`, consumed capacity, unused or missing placeholders, a
binary value, a number moto holds as other than text, a page that could reach the 1 MB limit)
it returns None and moto answers as before. Tests compare both ways.
"""

from __future__ import annotations

import re
from typing import Any

from moto.dynamodb.models.dynamo_type import DynamoType, Item
from moto.dynamodb.models.table import RESULT_SIZE_LIMIT

from mxpush_local import cold, resting

# Request keys this path understands; any other key sends the request moto's way.
_PLAIN_KEYS = frozenset(
    {
        "TableName",
        "KeyConditionExpression",
        "ExpressionAttributeValues",
        "ExpressionAttributeNames",
        "ScanIndexForward",
        "Limit",
        "ConsistentRead",
    }
)
_HASH_EQUALS = re.compile(r"\s*(#?[A-Za-z0-9_]+)\s*=\s*(:[A-Za-z0-9_]+)\s*\Z")
# An upper bound of what one value adds to moto's item size (UTF-8 takes at most 4 bytes a
# character; a little for each value's own overhead).
_BYTES_PER_CHAR = 4
_BYTES_PER_VALUE = 16


class _NotPlain(Exception):
    """The page holds something this path does not convert exactly as moto would."""


def answer_query(request: dict[str, Any], tables: dict[str, Any]) -> dict[str, Any] | None:
    """The parsed answer (without `ResponseMetadata`) to a plain Query, or None. Call it under
    the lock moto's requests hold."""
    if not request.keys() <= _PLAIN_KEYS:
        return None
    table = tables.get(str(request.get("TableName")))
    hash_value = _hash_value(request, table)
    if table is None or hash_value is None or not table.range_key_attr:
        return None
    limit = request.get("Limit")
    if limit is not None and (type(limit) is not int or limit < 1):
        return None
    partition = table.items.get(DynamoType({table.hash_key_type: hash_value}))
    newest_first = request.get("ScanIndexForward", True) is False
    items: list[Item] = _newest_warm(partition, limit) if newest_first else []
    more = bool(items)  # from the warm items alone: the cold ones come after them
    if not items:
        items = list(partition.values()) if partition else []
    if any(item.range_key is None or item.range_key.type != "S" for item in items):
        return None  # moto sorts other types by their cast value: leave it to moto
    items.sort(key=_range_text, reverse=newest_first)
    page = items if limit is None else items[:limit]
    try:
        converted, bound = [], 0
        for item in page:
            attributes, size = _attributes(item)
            bound += size
            converted.append(attributes)
    except _NotPlain:
        return None
    if bound > RESULT_SIZE_LIMIT:
        return None  # moto may end the page early at 1 MB: let it decide
    answer: dict[str, Any] = {"Count": len(page), "ScannedCount": len(page), "Items": converted}
    if (more or len(items) > len(page)) and page:
        last = page[-1]
        answer["LastEvaluatedKey"] = {
            table.hash_key_attr: _plain(last.hash_key),
            table.range_key_attr: _plain(last.range_key),
        }
    return answer


def _hash_value(request: dict[str, Any], table: Any) -> str | None:
    """The text the KeyConditionExpression sets the table's partition key equal to, when it
    does only that and every placeholder given is used; else None."""
    expression = request.get("KeyConditionExpression")
    if table is None or table.hash_key_type != "S" or not isinstance(expression, str):
        return None
    match = _HASH_EQUALS.match(expression)
    if match is None:
        return None
    name, placeholder = match.groups()
    names = request.get("ExpressionAttributeNames") or {}
    if name.startswith("#"):
        if names.keys() != {name}:
            return None
        name = names[name]
    elif names:
        return None
    values = request.get("ExpressionAttributeValues") or {}
    if name != table.hash_key_attr or values.keys() != {placeholder}:
        return None
    value = values[placeholder]
    if not isinstance(value, dict) or value.keys() != {"S"} or not isinstance(value["S"], str):
        return None
    return str(value["S"])


def _newest_warm(partition: Any, limit: int | None) -> list[Item]:
    """The warm items of a partition with cold ones (`cold.py`) that sort after every cold
    one, when there are at least `limit` of them: the first page, newest first, without
    thawing. Else [] (the whole partition is read)."""
    if not isinstance(partition, cold.Partition) or not partition.cold or limit is None:
        return []
    partition.touched = True
    high = partition.cold_high
    newer = [
        item
        for item in partition.warm_values()
        if item.range_key is not None
        and item.range_key.type == "S"
        and type(item.range_key.value) is str
        and item.range_key.value > high
    ]
    return newer if len(newer) >= limit else []


def _range_text(item: Item) -> str:
    # answer_query checked that every item has one
    return str(item.range_key.value)  # type: ignore[union-attr]


def _attributes(item: Item) -> tuple[dict[str, Any], int]:
    """The item as DynamoDB JSON, and an upper bound of moto's size for it."""
    size = 0
    out: dict[str, Any] = {}
    # A packed item (`resting.py`) is read without being expanded for good.
    for name, value in resting.attributes(item).items():
        plain, value_size = _convert(value)
        out[name] = plain
        size += _BYTES_PER_CHAR * len(name) + value_size
    return out, size


def _convert(value: Any) -> tuple[dict[str, Any], int]:
    """One attribute value as DynamoDB JSON (fresh containers: the caller may change them),
    and an upper bound of its size."""
    if isinstance(value, DynamoType):
        kind, inner = value.type, value.value
    elif isinstance(value, dict) and len(value) == 1:
        ((kind, inner),) = value.items()  # a raw value moto keeps inside a list or map
    else:
        raise _NotPlain
    if kind == "S" and isinstance(inner, str):
        return {"S": inner}, _BYTES_PER_CHAR * len(inner) + _BYTES_PER_VALUE
    if kind == "N" and isinstance(inner, str):
        return {"N": inner}, len(inner) + _BYTES_PER_VALUE
    if kind == "BOOL" and isinstance(inner, bool):
        return {"BOOL": inner}, _BYTES_PER_VALUE
    if kind == "NULL" and inner is True:
        return {"NULL": True}, _BYTES_PER_VALUE
    if kind in ("SS", "NS") and isinstance(inner, list) and all(isinstance(v, str) for v in inner):
        return {kind: list(inner)}, sum(
            _BYTES_PER_CHAR * len(v) + _BYTES_PER_VALUE for v in inner
        ) + _BYTES_PER_VALUE
    if kind == "L" and isinstance(inner, list):
        elements, size = [], _BYTES_PER_VALUE
        for element in inner:
            plain, element_size = _convert(element)
            elements.append(plain)
            size += element_size
        return {"L": elements}, size
    if kind == "M" and isinstance(inner, dict):
        members, size = {}, _BYTES_PER_VALUE
        for key, member in inner.items():
            plain, member_size = _convert(member)
            members[key] = plain
            size += _BYTES_PER_CHAR * len(key) + member_size
        return {"M": members}, size
    raise _NotPlain  # binary values, and anything unexpected


def _plain(value: DynamoType | None) -> dict[str, Any]:
    plain, _ = _convert(value)
    return plain
