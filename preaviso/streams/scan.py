"""Reads and bulk writes of one table partition: the one module that knows Faust's stores.

Faust's ``Table`` has point reads and full scans (over every active partition) but
no range reads. Its RocksDB store keeps one rocksdict ``Rdict`` per partition,
sorted by key, so a seek to a prefix reads only the matching entries: cost
O(matches), whatever the table's size. The memory store (``memory://``, dev and
tests only) has no partitions and no order: there a scan filters and sorts every
key of the table, O(table); callers that need one partition check it in the value.

Both return entries in ascending key order, and never Faust's own offset entry.

``read`` and ``write`` serve the bulk stages (``agents/bulk.py``) and deliver's
receipts recorder (``agents/receipts.py``), which write entries whose changelog
records they have already put in Kafka themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from faust.stores import memory, rocksdb
from rocksdict import WriteBatch


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


def read(table: Any, partition: int, key: bytes) -> bytes | None:
    """The value of ``key`` in ``partition`` of ``table``, read without a current event."""
    store = table.data
    if isinstance(store, rocksdb.Store) and store.use_rocksdict:
        value: bytes | None = store._db_for_partition(partition).get(key)
        return value
    if isinstance(store, memory.Store):
        return store.data.get(key)
    raise TypeError(f"no partition read for table store {type(store).__name__}")


def write(
    table: Any, partition: int, entries: dict[bytes, bytes | None], changelog_offset: int
) -> None:
    """Store ``entries`` (None deletes) in ``partition``, whose changelog holds them up to
    ``changelog_offset``: recorded as Faust's persisted offset, so a restart with the
    data dir kept reads the changelog only from there."""
    store = table.data
    if isinstance(store, rocksdb.Store) and store.use_rocksdict:
        batch = WriteBatch(raw_mode=True)  # one atomic write, offset included
        for key, value in entries.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        batch.put(store.offset_key, str(changelog_offset).encode())  # Faust's persisted offset
        store._db_for_partition(partition).write(batch)
        return
    if isinstance(store, memory.Store):
        for key, value in entries.items():
            if value is None:
                store.data.pop(key, None)
            else:
                store.data[key] = value
        return
    raise TypeError(f"no partition write for table store {type(store).__name__}")
