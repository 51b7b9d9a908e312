"""Directory stages: customers and what they own, kept in tables that survive restarts.

Upstream records are re-keyed through the worker's own topics before any table
holds them, so the tables never depend on how the publisher partitioned. A table
entry (and its changelog record) is written to the partition of the record being
handled, whatever its key hashes to: composite keys stay with the record's partition.
The stages run in bulk (``agents/bulk.py``); the functions below are what they do
per record, over a batch's view of each table partition.
"""

from __future__ import annotations

from typing import Any

from preaviso.agents.bulk import Batch, Handler
from preaviso.agents.produce import partition_for
from preaviso.audience import DirectoryEntry, newer, owned_product
from preaviso.schemas.events import CustomerUpserted, OwnershipRecorded
from preaviso.streams import keys
from preaviso.streams import topics as t
from preaviso.streams.app import Pipeline
from preaviso.streams.codecs import decode, decode_expected, encode


def stages(pipe: Pipeline) -> dict[t.TopicSpec, tuple[str, Handler]]:
    """The four directory stages, to be read in bulk (``agents/bulk.py``)."""

    partitions = pipe.settings.partitions

    def repartition_customer(record: Any, batch: Batch) -> None:
        customer = decode_expected(CustomerUpserted, record.value)
        key = customer.customer_id.encode()
        check_key(record.key, key, "customer_id")
        # Whatever partitioner the publisher used, the worker places the customer
        # itself: its producer's murmur2, the same that places their impacts. A
        # customer already on that partition (a murmur2 publisher) is kept at once.
        if partition_for(key, partitions) == record.partition:
            keep(customer, record.partition, batch)
        else:
            batch.send(t.CUSTOMERS_BY_ID, key, encode(customer))  # as checked: normalized

    def keep_customer(record: Any, batch: Batch) -> None:
        keep(decode(CustomerUpserted, record.value, trusted=True), record.partition, batch)

    def keep(customer: CustomerUpserted, partition: int, batch: Batch) -> None:
        by_region = batch.table("customers-by-region", partition)
        upsert_customer(batch.table("customers", partition), by_region, customer, partition)

    def repartition_ownership(record: Any, batch: Batch) -> None:
        ownership = decode_expected(OwnershipRecorded, record.value)
        check_key(record.key, ownership.customer_id.encode(), "customer_id")
        batch.send(t.OWNERSHIPS_BY_SKU, ownership.sku.encode(), record.value)  # as checked

    def keep_owner(record: Any, batch: Batch) -> None:
        ownership = decode(OwnershipRecorded, record.value, trusted=True)
        record_owner(batch.table("owners", record.partition), ownership)

    return {
        t.CUSTOMERS: ("directory-customers", repartition_customer),
        t.CUSTOMERS_BY_ID: ("directory-entries", keep_customer),
        t.OWNERSHIPS: ("directory-ownerships", repartition_ownership),
        t.OWNERSHIPS_BY_SKU: ("directory-owners", keep_owner),
    }


def upsert_customer(
    customers: Any, by_region: Any, customer: CustomerUpserted, partition: int
) -> None:
    """Keep the newest upsert in ``customers`` and its region in ``customers-by-region``.

    O(1): one read, at most one delete and two writes. The index entry is written
    before the customer's entry and whenever it is missing, so a replay after a crash
    between the two writes completes it. A stale entry under an old region (a crash
    between the delete and the rest) is harmless: audience-policy checks the region
    in ``customers``, the truth, before it counts a customer.
    """
    key = customer.customer_id.encode()
    raw = customers.get(key)
    current = decode(DirectoryEntry, raw, trusted=True) if raw is not None else None
    if not newer(current, customer):
        return
    if current is not None and current.customer.region != customer.region:
        old = keys.key(current.customer.region.encode(), key)
        if old in by_region:
            del by_region[old]  # a tombstone on the changelog
    new = keys.key(customer.region.encode(), key)
    if new not in by_region:
        by_region[new] = keys.MARK
    customers[key] = encode(DirectoryEntry(partition=partition, customer=customer))


def record_owner(owners: Any, ownership: OwnershipRecorded) -> None:
    """One entry per (SKU, customer): one write, no read, whatever the SKU's other owners.

    The same pair recorded again overwrites its entry: the last one recorded wins.
    """
    key = keys.key(ownership.sku.encode(), ownership.customer_id.encode())
    owners[key] = encode(owned_product(ownership))


class KeyMismatchError(ValueError):
    """The record's Kafka key is not the id it carries: it would land on the wrong partition."""


def check_key(key: bytes | None, expected: bytes, field: str) -> None:
    if key != expected:
        raise KeyMismatchError(
            f"record key {key!r} must equal its {field} {expected!r}; "
            "publish with the key documented for this topic (preaviso publish does)"
        )
