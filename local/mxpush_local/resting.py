"""Local mode's resting items: moto's DynamoDB items nobody changed for a while, kept compact.

moto keeps every item as an `Item` whose every attribute, and every element of a nested list or
map, is a `DynamoType` object: ~4 KB of Python objects for a 1 KB delivery-log record. Every
notification leaves such records for days (TTL), so a long local run grows by ~10 KB per
notification. Here an item at rest is a `CompactItem` holding its attributes as one `marshal`
blob, deflated with a preset dictionary made from the first items packed (~0.2 KB for that
record), its keys shared with the table's partition dicts: ~0.5 KB in all.

`CompactItem` is an `Item` moto can use as it uses its own, wherever it finds it:

- reading or writing `attrs` (conditions, updates in place, a Query's sort-key test) expands the
  blob into the same `LimitedSizeDict` of `DynamoType`s moto would hold, and keeps it: the item
  is hot again, and in-place updates work as on any Item;
- what only reads an item (`to_json`, `describe_attrs`, `project`, `size`, `==`, a `deepcopy` as
  Query, Scan and UpdateItem make) answers from a throwaway expansion (`size` from the size kept
  beside the blob) and leaves it packed;
- its TTL, which the expiry pass reads every minute, is kept beside the blob (`expiry`).

`Sweeper.rest(table, key, ...)` sweeps one partition (under local mode's DynamoDB lock; the
expiry pass runs it on every partition each minute). Each hot item's attributes are encoded and
their fingerprint kept; an item whose attributes did not change since the last sweep is packed
(a blob it was expanded from is reused when the encoding is the same, byte for byte), one that
changed waits for the next; `now=True` packs at once (items loaded from the state journal).
Whatever the fingerprints say, packing is exact: it encodes the attributes as they are. An item
whose values `marshal` cannot encode (none moto makes) stays hot.
"""

from __future__ import annotations

import copy
import marshal
import threading
import zlib
from collections.abc import Iterable
from typing import Any, cast

from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict

# Key attributes whose value is the item's key: stored as these markers, rebuilt from the keys.
_HASH = 0
_RANGE = 1
# Raw deflate (no zlib header/checksum: the blob never leaves the process).
_WBITS = -15
_LEVEL = 6
# Items of one shape (the same attribute names in the same order: a finished batch, a due entry)
# share most of their bytes: attribute names, types, many values. So each shape gets a preset
# dictionary, the encoding of the first item of that shape packed: it takes a delivery record
# from ~560 bytes (plain deflate) to ~200. Its last ZDICT_BYTES (a bigger one costs more per
# pack: deflate hashes the whole dictionary each time). Shapes past MAX_SHAPES get none.
ZDICT_BYTES = 4 * 1024
MAX_SHAPES = 512

# Version 2: the same values always make the same bytes (later versions share repeated objects
# by reference, so the bytes depend on which objects are shared).
_MARSHAL_VERSION = 2
_new_dynamo_type = DynamoType.__new__
_MARSHAL_PLAIN = (str, bytes, int, float, bool, type(None))


class Unpackable(Exception):
    """An attribute value marshal cannot encode (the item stays hot)."""


class Codec:
    """Raw deflate with a preset dictionary (empty: none), for the items of one shape (their
    attribute names; None: any)."""

    def __init__(self, zdict: bytes = b"", shape: frozenset[str] | None = None) -> None:
        self.zdict = zdict
        self.shape = shape

    def compress(self, raw: bytes) -> bytes:
        if self.zdict:
            packer = zlib.compressobj(
                _LEVEL, zlib.DEFLATED, _WBITS, 8, zlib.Z_DEFAULT_STRATEGY, self.zdict
            )
        else:
            packer = zlib.compressobj(_LEVEL, zlib.DEFLATED, _WBITS)
        return packer.compress(raw) + packer.flush()

    def decompress(self, blob: bytes) -> bytes:
        unpacker = (
            zlib.decompressobj(_WBITS, self.zdict) if self.zdict else zlib.decompressobj(_WBITS)
        )
        return unpacker.decompress(blob) + unpacker.flush()


# Every codec ever made, by index (an item keeps the index: a small int, shared).
_codecs: list[Codec] = [Codec()]
_making = threading.Lock()


class CompactItem(Item):
    """An `Item` packed (`_attrs` None, `_blob` set) or hot (`_attrs` set; `_blob`, if set, is
    what it was expanded from, maybe changed since)."""

    # Slots: no per-item dict. (Item's instances have one; this class's never fill it.)
    __slots__ = (
        "_attrs",
        "_blob",
        "_codec",
        "_expiry",
        "_seen",
        "_size",
        "_ttl_name",
        "hash_key",
        "range_key",
    )
    _attrs: LimitedSizeDict | None
    _blob: bytes | None
    _codec: int
    _expiry: float | None
    _seen: int
    _size: int
    _ttl_name: str | None

    # --- the attributes: expanded on first use -------------------------------------------------

    @property
    def attrs(self) -> LimitedSizeDict:
        found = self._attrs
        if found is None:
            raw = self._raw_blob()
            found = self._decode(raw)
            self._attrs = found
            self._seen = hash(raw)  # unchanged at the next sweep: packed again
        return found

    @attrs.setter
    def attrs(self, value: LimitedSizeDict) -> None:
        self._attrs = value
        self._seen = 0

    @property
    def packed(self) -> bool:
        return self._attrs is None

    def _raw_blob(self) -> bytes:
        blob = self._blob
        assert blob is not None  # noqa: S101 - packed or hot, never neither
        return _codecs[self._codec].decompress(blob)

    def _view(self) -> LimitedSizeDict:
        """The attributes, for a read: a packed item stays packed (the view is thrown away)."""
        found = self._attrs
        return self._decode(self._raw_blob()) if found is None else found

    def _plain(self) -> Item:
        """A throwaway `Item` with the attributes, whose own methods answer a read."""
        plain = cast("Item", Item.__new__(Item))
        plain.hash_key = self.hash_key
        plain.range_key = self.range_key
        plain.attrs = self._view()
        return plain

    def _decode(self, raw: bytes) -> LimitedSizeDict:
        # Bytes this module made in this process: nothing else reaches `_blob`.
        pairs = marshal.loads(raw)  # noqa: S302
        attrs = LimitedSizeDict.__new__(LimitedSizeDict)
        dict.update(
            attrs,
            [
                (name, self._key_value(value) if type(value) is int else _decode(value))
                for name, value in pairs
            ],
        )
        return attrs

    def _key_value(self, marker: int) -> DynamoType:
        key = self.hash_key if marker == _HASH else self.range_key
        assert key is not None  # noqa: S101 - only a key's value was stored as a marker
        value: DynamoType = _new_dynamo_type(DynamoType)
        value.type = key.type
        value.value = key.value
        return value

    # --- reads that leave a packed item packed ---------------------------------------------------

    def size(self) -> int:
        if self._attrs is None:
            return self._size
        return self._plain().size()

    def to_json(self, root_attr_name: str = "Attributes") -> dict[str, Any]:
        return self._plain().to_json(root_attr_name)

    def to_regular_json(self) -> dict[str, Any]:
        return self._plain().to_regular_json()

    def describe_attrs(self, attributes: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        return self._plain().describe_attrs(attributes)

    def project(self, projection_expressions: list[list[str]]) -> Item:
        return self._plain().project(projection_expressions)

    def __eq__(self, other: Item) -> bool:  # type: ignore[override]
        return self._plain() == (other._plain() if isinstance(other, CompactItem) else other)

    __hash__ = None  # type: ignore[assignment]  # as Item's

    def __repr__(self) -> str:
        return f"Item: {self.to_json()}"

    def __deepcopy__(self, memo: dict[int, Any]) -> CompactItem:
        """A copy in the same state (a packed one shares the blob: bytes never change). Query
        and Scan copy what they return, TransactWriteItems the whole table."""
        result: CompactItem = object.__new__(CompactItem)
        memo[id(self)] = result
        result.hash_key = copy.deepcopy(self.hash_key, memo)
        result.range_key = copy.deepcopy(self.range_key, memo)
        hot = self._attrs
        if hot is None:
            result._attrs = None
        else:
            attrs = LimitedSizeDict.__new__(LimitedSizeDict)
            dict.update(attrs, ((name, copy.deepcopy(value, memo)) for name, value in hot.items()))
            result._attrs = attrs
        result._blob = self._blob
        result._codec = self._codec
        result._size = self._size
        result._expiry = self._expiry
        result._ttl_name = self._ttl_name
        result._seen = self._seen
        return result

    def __reduce_ex__(self, protocol: Any) -> Any:
        # Pickled (nothing in moto does): as the plain Item it stands for.
        return (_itself, (self._plain(),))

    # --- the sweep ---------------------------------------------------------------------------

    def encode(self, hash_name: str, range_name: str | None) -> bytes:
        """The hot attributes as `marshal` bytes (the key attributes as markers); `Unpackable`
        if a value cannot be encoded."""
        attrs = self._attrs
        assert attrs is not None  # noqa: S101 - only a hot item is encoded
        try:
            return marshal.dumps(
                [
                    (name, _key_marker(self, name, value, hash_name, range_name))
                    for name, value in attrs.items()
                ],
                _MARSHAL_VERSION,
            )
        except ValueError as exc:
            raise Unpackable(str(exc)) from None

    def pack(self, raw: bytes, codec: int, ttl_name: str | None) -> None:
        """Drop the hot attributes for `raw`, their encoding (`encode`)."""
        blob = self._blob
        if blob is None or self._raw_blob() != raw or self._ttl_name != ttl_name:
            self._size = self._plain().size()
            self._expiry = expiry_of(self._view(), ttl_name)
            self._ttl_name = ttl_name
            self._blob = _codecs[codec].compress(raw)
            self._codec = codec
        # else: the blob it was expanded from holds just that (and its size and TTL are kept).
        self._attrs = None


def attributes(item: Item) -> dict[str, Any]:
    """The item's attributes for a read (not to change): a packed item stays packed (a
    throwaway expansion), where `item.attrs` would expand it in place."""
    if isinstance(item, CompactItem):
        return item._view()
    return item.attrs


def may_have(item: Item, names: Iterable[str]) -> bool:
    """False if the item surely lacks one of the attributes `names` (a packed item knows its
    attribute names from its shape): a Query on an index need not expand it."""
    if isinstance(item, CompactItem) and item._attrs is None:
        return shape_may_have(item._codec, names)
    return True


def shape_may_have(codec: int, names: Iterable[str]) -> bool:
    """False if items packed with codec `codec` surely lack one of the attributes `names`."""
    shape = _codecs[codec].shape
    return shape is None or all(name in shape for name in names)


def is_packed(item: Any) -> bool:
    return isinstance(item, CompactItem) and item._attrs is None


def packed_state(item: CompactItem) -> tuple[bytes, int, int, float | None, str | None]:
    """What a packed item is besides its keys (`revive` makes it again): its blob, codec, size,
    TTL and TTL attribute's name."""
    assert item._blob is not None and item._attrs is None  # noqa: S101 - a packed item
    return item._blob, item._codec, item._size, item._expiry, item._ttl_name


def revive(  # noqa: PLR0917 - packed_state's parts, and the keys
    hash_key: DynamoType,
    range_key: DynamoType,
    blob: bytes,
    codec: int,
    size: int,
    expiry: float | None,
    ttl_name: str | None,
) -> CompactItem:
    """A packed item again, from its keys and `packed_state`."""
    item: CompactItem = object.__new__(CompactItem)
    item.hash_key = hash_key
    item.range_key = range_key
    item._attrs = None
    item._blob = blob
    item._codec = codec
    item._size = size
    item._expiry = expiry
    item._ttl_name = ttl_name
    item._seen = 0
    return item


def index_key_names(table: Any, index_name: str) -> list[str]:
    """The key attributes of the table's index `index_name` (none if there is no such index)."""
    for index in (table.global_indexes or []) + (table.indexes or []):
        if index.name == index_name:
            return [str(key["AttributeName"]) for key in index.schema]
    return []


def _itself(item: Item) -> Item:
    return item


def expiry(item: Item, attribute: str) -> float | None:
    """The item's TTL attribute as a number, or None (absent, not a number): what the expiry
    timer reads, without expanding a packed item."""
    if isinstance(item, CompactItem):
        if item._attrs is None and item._ttl_name == attribute:
            return item._expiry
        return expiry_of(item._view(), attribute)
    return expiry_of(item.attrs, attribute)


def expiry_of(attrs: dict[str, Any], attribute: str | None) -> float | None:
    value = attrs.get(attribute) if attribute is not None else None
    if value is None or value.type != "N":
        return None
    try:
        return float(value.value)
    except (TypeError, ValueError):
        return None


def _key_marker(item: Item, name: str, value: Any, hash_name: str, range_name: str | None) -> Any:
    if name == hash_name and _same(value, item.hash_key):
        return _HASH
    if name == range_name and _same(value, item.range_key):
        return _RANGE
    return _encode(value)


def _same(value: Any, key: DynamoType | None) -> bool:
    return (
        key is not None
        and type(value) is DynamoType
        and value.type == key.type
        and type(value.value) is type(key.value)
        and value.value == key.value
    )


def _encode(value: Any) -> Any:
    """A DynamoType as (type, value), its list/map elements likewise; anything else (moto keeps
    none) as itself if plain JSON-like data, refused otherwise."""
    if type(value) is not DynamoType:
        _check_plain(value)
        return value
    kind = value.type
    inner = value.value
    if kind == "L":
        return (kind, [_encode(element) for element in inner])
    if kind == "M":
        return (kind, {key: _encode(element) for key, element in inner.items()})
    if isinstance(inner, (list, set, frozenset)):
        _check_plain(inner)
        return (kind, inner)
    if type(inner) not in _MARSHAL_PLAIN:
        raise Unpackable(kind)
    return (kind, inner)


def _check_plain(value: Any) -> None:
    """Values marshal gives back as they were, and that decode cannot take for a DynamoType
    (a tuple)."""
    if type(value) in _MARSHAL_PLAIN:
        return
    if type(value) in (list, set, frozenset):
        for element in value:
            _check_plain(element)
        return
    if type(value) is dict:
        for key, element in value.items():
            _check_plain(key)
            _check_plain(element)
        return
    raise Unpackable(type(value).__name__)


def _decode(value: Any) -> Any:
    if type(value) is not tuple:
        return value
    kind, inner = value
    if kind == "L":
        inner = [_decode(element) for element in inner]
    elif kind == "M":
        inner = {key: _decode(element) for key, element in inner.items()}
    result = _new_dynamo_type(DynamoType)
    result.type = kind
    result.value = inner
    return result


class Sweeper:
    """Packs a table's idle items, one partition at a time, each shape with its own preset
    dictionary."""

    def __init__(self) -> None:
        self.packed = 0
        # Shape (attribute names) -> index of its codec in `_codecs`.
        self._codecs: dict[tuple[str, ...], int] = {}

    def rest(self, table: Any, key: Any, ttl_name: str | None, *, now: bool = False) -> int:
        """Sweep the partition `key` of moto's `table`; returns how many items it packed."""
        partition = table.items.get(key)
        if partition is None:
            return 0
        before = self.packed
        hash_name = table.hash_key_attr
        range_name = table.range_key_attr
        if range_name is None:
            swept = self._sweep(partition, key, None, hash_name, None, ttl_name, now)
            if swept is not partition:
                table.items[key] = swept
            return self.packed - before
        # The warm items only (`dict.items`: cold ones, `cold.py`, are packed already).
        for range_key, item in list(dict.items(partition)):
            swept = self._sweep(item, key, range_key, hash_name, range_name, ttl_name, now)
            if swept is not item:
                dict.__setitem__(partition, range_key, swept)
        return self.packed - before

    def _sweep(  # noqa: PLR0917 - one call site, above
        self,
        item: Item,
        hash_key: DynamoType,
        range_key: DynamoType | None,
        hash_name: str,
        range_name: str | None,
        ttl_name: str | None,
        now: bool,
    ) -> CompactItem:
        compact = item if isinstance(item, CompactItem) else _adopt(item, hash_key, range_key)
        if compact._attrs is None:
            return compact
        try:
            raw = compact.encode(hash_name, range_name)
        except Unpackable:
            return compact
        seen = hash(raw)
        if seen != compact._seen and not now:
            compact._seen = seen  # new or changed since the last sweep: packed at the next
            return compact
        compact.pack(raw, self._codec(compact, raw), ttl_name)
        self.packed += 1
        return compact

    def _codec(self, item: CompactItem, raw: bytes) -> int:
        assert item._attrs is not None  # noqa: S101 - a hot item
        shape = tuple(item._attrs)
        found = self._codecs.get(shape)
        if found is None:
            if len(self._codecs) >= MAX_SHAPES:
                return 0
            with _making:
                _codecs.append(Codec(raw[-ZDICT_BYTES:], frozenset(shape)))
                found = len(_codecs) - 1
            self._codecs[shape] = found
        return found


def _adopt(item: Item, hash_key: DynamoType, range_key: DynamoType | None) -> CompactItem:
    """A hot CompactItem for moto's `item` (new since the last sweep), with the same attributes
    (the same dict), and the partition's key objects in place of the item's equal copies."""
    compact: CompactItem = object.__new__(CompactItem)
    compact.hash_key = hash_key if _same(item.hash_key, hash_key) else item.hash_key
    compact.range_key = range_key if _same(item.range_key, range_key) else item.range_key
    compact._attrs = item.attrs
    compact._blob = None
    compact._codec = 0
    compact._size = 0
    compact._expiry = None
    compact._ttl_name = None
    compact._seen = 0
    return compact
