"""Notice ids a stage already handled, kept in a table: the dedup memory of a stage.

One entry per (customer, notice), key ``customer_id 0x1F notice_id``: a lookup is one
point read and a write one small put, whatever the customer's history, and the
changelog carries one tiny record per notice instead of the whole list again.

The key's hash does not place the entry: it is written (with its changelog record)
to the partition of the record being handled, the customer's partition of
``impacts`` (notify, in ``agents/bulk.py``) or ``notices`` (deliver, through
``agents/receipts.py``). So the ledger stays co-partitioned with the records that
read and write it.
"""

from __future__ import annotations

from typing import Any

from preaviso.streams import keys, scan


def contains(
    table: Any, customer_key: bytes, notice_id: str, *, partition: int | None = None
) -> bool:
    """Whether ``table`` has the notice. With ``partition`` (a Faust table), that
    partition's store is read directly (``scan.read``), without the current event and
    Faust's key serializers: a few µs less a mail for deliver."""
    key = keys.key(customer_key, notice_id.encode())
    if partition is None:
        return key in table
    return scan.read(table, partition, key) is not None


def add(table: Any, customer_key: bytes, notice_id: str) -> None:
    table[keys.key(customer_key, notice_id.encode())] = keys.MARK
