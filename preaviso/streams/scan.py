"""Prefix scans of a table partition: the one module that knows Faust's store internals.

Faust's ``Table`` has point reads and full scans (over every active partition) but
no range reads. Its RocksDB store keeps one rocksdict ``Rdict`` per partition,
sorted by key, so a seek to a prefix reads only the matching entries: cost
O(matches), whatever the table's size. The memory store (``memory://``, dev and
tests only) has no partitions and no order: there a scan filters and sorts every
key of the table, O(table); callers that need one partition check it in the value.

Both return entries in ascending key order, and never Faust's own offset entry.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from faust.stores import memory, rocksdb


def scan_prefix(table: Any, partition: int, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Entries of ``table`` in ``partition`` whose key starts with ``prefix`` (b"" for all).

    The partition must be active on this worker (it is the current event's partition
    when the table is co-partitioned with the stage's topic). On RocksDB the iterator
    reads a consistent snapshot, so writes made while the caller awaits between
    entries neither show up nor break the scan.
    """
    store = table.data
    if isinstance(store, rocksdb.Store) and store.use_rocksdict:
        return _rocksdict_prefix(store._db_for_partition(partition), prefix, store.offset_key)
    if isinstance(store, memory.Store):
        return _filtered(store.data.items(), prefix)
    raise TypeError(f"no prefix scan for table store {type(store).__name__}")


def _rocksdict_prefix(db: Any, prefix: bytes, skip: bytes) -> Iterator[tuple[bytes, bytes]]:
    for found, value in db.items(from_key=prefix):
        if not found.startswith(prefix):
            return
        if found != skip:
            yield found, value


def _filtered(items: Any, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    # A list, not a view: the dict may change while the caller awaits between entries.
    return iter(sorted((k, v) for k, v in items if k.startswith(prefix) and v is not None))
