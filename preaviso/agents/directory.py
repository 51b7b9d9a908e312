"""Directory stages: customers and what they own, kept in tables that survive restarts.

Upstream records are re-keyed through the worker's own topics before any table
holds them, so the tables never depend on how the publisher partitioned. Faust
writes a table entry (and its changelog record) to the partition of the event being
handled, whatever its key hashes to: composite keys stay with the record's partition.
"""

from __future__ import annotations

from typing import Any

from preaviso.agents.stage import EventHandler, Outbox, run_stage
from preaviso.audience import DirectoryEntry, newer, owned_product
from preaviso.schemas.events import CustomerUpserted, OwnershipRecorded
from preaviso.streams import keys
from preaviso.streams import topics as t
from preaviso.streams.app import Pipeline
from preaviso.streams.codecs import decode, decode_expected, encode


def register(pipe: Pipeline) -> None:
    customers = pipe.tables["customers"]
    by_region = pipe.tables["customers-by-region"]
    owners = pipe.tables["owners"]

    def repartition_customer(outbox: Outbox) -> EventHandler:
        async def handle(event: Any) -> None:
            customer = decode_expected(CustomerUpserted, event.message.value)
            key = customer.customer_id.encode()
            check_key(event, key, "customer_id")
            # Whatever partitioner the publisher used, the worker places the customer
            # itself: its producer's murmur2, the same that places their impacts.
            await outbox.send(t.CUSTOMERS_BY_ID, key, event.message.value)

        return handle

    def keep_customer(_: Outbox) -> EventHandler:
        async def handle(event: Any) -> None:
            customer = decode(CustomerUpserted, event.message.value)
            upsert_customer(customers, by_region, customer, event.message.partition)

        return handle

    def repartition_ownership(outbox: Outbox) -> EventHandler:
        async def handle(event: Any) -> None:
            ownership = decode_expected(OwnershipRecorded, event.message.value)
            check_key(event, ownership.customer_id.encode(), "customer_id")
            await outbox.send(t.OWNERSHIPS_BY_SKU, ownership.sku.encode(), encode(ownership))

        return handle

    def keep_owner(_: Outbox) -> EventHandler:
        async def handle(event: Any) -> None:
            record_owner(owners, decode(OwnershipRecorded, event.message.value))

        return handle

    run_stage(pipe, t.CUSTOMERS, "directory-customers", repartition_customer)
    run_stage(pipe, t.CUSTOMERS_BY_ID, "directory-entries", keep_customer)
    run_stage(pipe, t.OWNERSHIPS, "directory-ownerships", repartition_ownership)
    run_stage(pipe, t.OWNERSHIPS_BY_SKU, "directory-owners", keep_owner)


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
    current = decode(DirectoryEntry, raw) if raw is not None else None
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


def check_key(event: Any, expected: bytes, field: str) -> None:
    if event.message.key != expected:
        raise KeyMismatchError(
            f"record key {event.message.key!r} must equal its {field} {expected!r}; "
            "publish with the key documented for this topic (preaviso publish does)"
        )
