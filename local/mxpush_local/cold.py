"""Local mode's cold items: a partition's packed items nobody reads, kept as a few blobs.

A packed item (`resting.py`) still costs ~0.5 KB of Python objects: the item, its sort-key
`DynamoType` and string, the sizes and TTL beside its blob, its slot in the partition's dict.
Every notification leaves two such items for days (its delivery-log record, its due entry), so
a long run still grows by ~1 KB per notification, while nearly all of them are never read again:
a due-index partition after its slot, a pushkey's records older than the latest few.

`Partition` is the dict moto keeps a partition's items in (sort key -> Item), able to keep some
of them *cold*: their sort-key strings and blobs in compressed chunks (~0.3 KB a delivery-log
record, most of it its blob; ~0.16 KB a due entry), not in the dict. It is a dict to moto in
every way: a lookup or write of one key within the cold keys' range revives that item alone
(back as a packed `CompactItem`; its chunk is written again without it), any walk of the whole
partition (a Query, a Scan, a copy) thaws it first (no blob is re-encoded), and `len` counts
both. Only local mode's own readers know better:

- the notify path's Query (`fast_query`: newest first, a small Limit) answers from the warm
  items when enough of them sort after every cold one;
- the expiry pass reads the cold items' earliest TTL, and thaws only when it has passed;
- a Query on an index skips a partition whose cold items' shapes lack the index's keys.

`freeze(partition, key)` (the expiry pass, under local mode's DynamoDB lock, every 20 s, after
`resting` packed what it could) makes the packed items cold: all of them if nobody touched the
partition since the previous pass, else all but the newest `KEEP_WARM` (a pushkey's
registration and latest batches, which every notify reads). What changed stays warm, as in
`resting`.
"""

from __future__ import annotations

import copy
import marshal
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from moto.dynamodb.models.dynamo_type import DynamoType

from mxpush_local import resting

# The newest items of a partition someone reads that stay warm: more than the notify path's
# Query reads (a registration and its 8 latest batches, plus one to see there are more).
KEEP_WARM = 16
# Freeze only this many items or more at once (each freeze adds a chunk).
MIN_CHUNK = 8
_LEVEL = 1  # the blobs inside are deflated already: what is left to gain is in the keys
_MARSHAL_VERSION = 2


@dataclass(frozen=True, slots=True)
class _Cold:
    """A partition's cold items: compressed chunks of (sort key, blob, codec, size, TTL, TTL
    name) records, and what readers ask of them without thawing."""

    # Each chunk with the least and greatest sort key in it.
    chunks: tuple[tuple[str, str, bytes], ...]
    count: int
    low: str
    high: str
    expiry: float | None
    shapes: frozenset[int]
    hash_key: DynamoType


class Partition(dict):  # type: ignore[type-arg]
    """A partition's items (sort key -> Item), some maybe cold (see the module's doc)."""

    # Two slots: a partition that never freezes (a busy pushkey's) costs little more than a dict.
    __slots__ = ("_cold", "touched")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cold: _Cold | None = None
        # Read or written since the last freeze (any access but the expiry pass's own).
        self.touched = True

    # --- what local mode's own readers use ------------------------------------------------------

    @property
    def cold(self) -> int:
        """How many items are cold."""
        return 0 if self._cold is None else self._cold.count

    @property
    def cold_high(self) -> str:
        """The greatest sort key among the cold items ("" if none)."""
        return "" if self._cold is None else self._cold.high

    @property
    def cold_expiry(self) -> float | None:
        """The earliest TTL among the cold items (None: none has one)."""
        return None if self._cold is None else self._cold.expiry

    def cold_may_have(self, names: list[str]) -> bool:
        """False if no cold item can have all the attributes `names` (by their shapes)."""
        found = self._cold
        return found is not None and any(
            resting.shape_may_have(codec, names) for codec in found.shapes
        )

    def warm_values(self) -> list[Any]:
        """The warm items, without thawing (the partition is not marked touched)."""
        return list(dict.values(self))

    # --- thawing --------------------------------------------------------------------------------

    def thaw(self) -> None:
        """Every cold item back into the dict, packed (a warm item of the same key wins: it was
        written after the freeze)."""
        found = self._cold
        if found is None:
            return
        for _, _, chunk in found.chunks:
            for record in _records(chunk):
                self._revive(found.hash_key, record)
        self._cold = None

    def _revive(self, hash_key: DynamoType, record: tuple[Any, ...]) -> None:
        text, blob, codec, size, expiry, ttl_name = record
        key = _string_key(text)
        if not dict.__contains__(self, key):
            item = resting.revive(hash_key, key, blob, codec, size, expiry, ttl_name)
            dict.__setitem__(self, key, item)

    def _take(self, text: str) -> None:
        """The cold item of sort key `text` (if any) back into the dict, alone: its chunk is
        written again without it. (A sweep reads batches one by one, a few minutes old: a
        lookup must not thaw every item of their pushkeys.)"""
        found = self._cold
        assert found is not None  # noqa: S101 - only with cold items
        chunks = list(found.chunks)
        for index, (low, high, chunk) in enumerate(chunks):
            if not low <= text <= high:
                continue
            records = _records(chunk)
            kept = [record for record in records if record[0] != text]
            if len(kept) == len(records):
                continue
            for record in records:
                if record[0] == text:
                    self._revive(found.hash_key, record)
            if kept:
                texts = [str(record[0]) for record in kept]
                chunks[index] = (min(texts), max(texts), _chunk(kept))
            else:
                del chunks[index]
            count = found.count - (len(records) - len(kept))
            self._cold = replace(found, chunks=tuple(chunks), count=count) if count else None
            return

    def _may_be_cold(self, key: Any) -> bool:
        """Whether `key` may name a cold item (a string key within the cold keys' range; any
        other key, to be safe)."""
        found = self._cold
        if found is None:
            return False
        if type(key) is not DynamoType or key.type != "S" or type(key.value) is not str:
            return True
        return found.low <= key.value <= found.high

    def _whole(self) -> None:
        self.touched = True
        if self._cold is not None:
            self.thaw()

    def _for_key(self, key: Any) -> None:
        self.touched = True
        if self._cold is not None and not dict.__contains__(self, key) and self._may_be_cold(key):
            if _is_text(key):
                self._take(key.value)
            else:
                self.thaw()

    # --- the dict moto sees ---------------------------------------------------------------------

    def __getitem__(self, key: Any) -> Any:
        self._for_key(key)
        return dict.__getitem__(self, key)

    def get(self, key: Any, default: Any = None) -> Any:
        self._for_key(key)
        return dict.get(self, key, default)

    def __contains__(self, key: object) -> bool:
        self._for_key(key)
        return dict.__contains__(self, key)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._for_key(key)  # a cold item of that key would otherwise come back over it
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: Any) -> None:
        self._for_key(key)
        dict.__delitem__(self, key)

    def pop(self, key: Any, *default: Any) -> Any:
        self._for_key(key)
        return dict.pop(self, key, *default)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        self._for_key(key)
        return dict.setdefault(self, key, default)

    def __len__(self) -> int:
        return dict.__len__(self) + self.cold

    def __iter__(self) -> Iterator[Any]:
        self._whole()
        return dict.__iter__(self)

    def keys(self) -> Any:
        self._whole()
        return dict.keys(self)

    def values(self) -> Any:
        self._whole()
        return dict.values(self)

    def items(self) -> Any:
        self._whole()
        return dict.items(self)

    def popitem(self) -> tuple[Any, Any]:
        self._whole()
        return dict.popitem(self)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._whole()
        dict.update(self, *args, **kwargs)

    def clear(self) -> None:
        self.touched = True
        self._cold = None
        dict.clear(self)

    def copy(self) -> Partition:
        self._whole()
        return Partition(dict.items(self))

    def __eq__(self, other: object) -> bool:
        self._whole()
        if isinstance(other, Partition):
            other._whole()
        return dict.__eq__(self, other)

    __hash__ = None

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __repr__(self) -> str:
        self._whole()
        return f"Partition({dict.__repr__(self)})"

    def __deepcopy__(self, memo: dict[int, Any]) -> Partition:
        """A copy with the same cold chunks (bytes never change) and copies of the warm items
        (TransactWriteItems copies the whole table)."""
        result = Partition()
        memo[id(self)] = result
        for key, item in dict.items(self):
            dict.__setitem__(result, copy.deepcopy(key, memo), copy.deepcopy(item, memo))
        found = self._cold
        if found is not None:
            result._cold = replace(found, hash_key=copy.deepcopy(found.hash_key, memo))
        result.touched = self.touched
        return result

    def __reduce_ex__(self, protocol: Any) -> Any:
        self._whole()
        return (Partition, (list(dict.items(self)),))


def freeze(partition: Any, hash_key: DynamoType) -> int:
    """Make the partition's packed items cold (see the module's doc); returns how many."""
    if not isinstance(partition, Partition):
        return 0
    candidates = [
        (key.value, item)
        for key, item in dict.items(partition)
        if type(key) is DynamoType
        and key.type == "S"
        and type(key.value) is str
        and resting.is_packed(item)
        and item.range_key is key
    ]
    if partition.touched:
        # Someone reads it: its newest items stay warm, whether packed or not.
        newest = sorted((key.value for key in dict.keys(partition) if _is_text(key)), reverse=True)
        if len(newest) <= KEEP_WARM:
            candidates = []
        else:
            floor = newest[KEEP_WARM - 1]
            candidates = [(text, item) for text, item in candidates if text < floor]
    partition.touched = False
    if len(candidates) < MIN_CHUNK and not (
        candidates and dict.__len__(partition) == len(candidates)
    ):
        return 0
    before = partition._cold
    records: list[tuple[Any, ...]] = []
    shapes = set(() if before is None else before.shapes)
    expiry = None if before is None else before.expiry
    for text, item in candidates:
        blob, codec, size, item_expiry, ttl_name = resting.packed_state(item)
        records.append((text, blob, codec, size, item_expiry, ttl_name))
        shapes.add(codec)
        if item_expiry is not None and (expiry is None or item_expiry < expiry):
            expiry = item_expiry
    texts = [text for text, _ in candidates]
    low, high = min(texts), max(texts)
    chunk = (low, high, _chunk(records))
    for _, item in candidates:
        dict.__delitem__(partition, item.range_key)
    if before is not None:
        low, high = min(low, before.low), max(high, before.high)
    partition._cold = _Cold(
        chunks=(() if before is None else before.chunks) + (chunk,),
        count=len(records) + (0 if before is None else before.count),
        low=low,
        high=high,
        expiry=expiry,
        shapes=frozenset(shapes),
        hash_key=hash_key if before is None else before.hash_key,
    )
    return len(records)


def _chunk(records: list[tuple[Any, ...]]) -> bytes:
    return zlib.compress(marshal.dumps(records, _MARSHAL_VERSION), _LEVEL)


def _records(chunk: bytes) -> list[tuple[Any, ...]]:
    # Bytes `_chunk` made in this process: nothing else reaches a partition's chunks.
    return list(marshal.loads(zlib.decompress(chunk)))  # noqa: S302


def _is_text(key: Any) -> bool:
    return type(key) is DynamoType and key.type == "S" and type(key.value) is str


def _string_key(text: str) -> DynamoType:
    key: DynamoType = DynamoType.__new__(DynamoType)
    key.type = "S"
    key.value = text
    return key
