"""Directory stages: customers and what they own, kept in tables that survive restarts.

Upstream records are re-keyed through the worker's own topics before any table
holds them, so the tables never depend on how the publisher partitioned.
"""

from __future__ import annotations

from typing import Any

from preaviso.agents.stage import EventHandler, Outbox, run_stage
from preaviso.audience import DirectoryEntry, Owners, add_owner, newer
from preaviso.schemas.events import CustomerUpserted, OwnershipRecorded
from preaviso.streams import topics as t
from preaviso.streams.app import Pipeline
from preaviso.streams.codecs import decode, decode_expected, encode


def register(pipe: Pipeline) -> None:
    customers = pipe.tables["customers"]
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

    def upsert_customer(_: Outbox) -> EventHandler:
        async def handle(event: Any) -> None:
            customer = decode(CustomerUpserted, event.message.value)
            key = customer.customer_id.encode()
            raw = customers.get(key)
            current = decode(DirectoryEntry, raw) if raw is not None else None
            if newer(current, customer):
                entry = DirectoryEntry(partition=event.message.partition, customer=customer)
                customers[key] = encode(entry)

        return handle

    def repartition_ownership(outbox: Outbox) -> EventHandler:
        async def handle(event: Any) -> None:
            ownership = decode_expected(OwnershipRecorded, event.message.value)
            check_key(event, ownership.customer_id.encode(), "customer_id")
            await outbox.send(t.OWNERSHIPS_BY_SKU, ownership.sku.encode(), encode(ownership))

        return handle

    def index_owner(_: Outbox) -> EventHandler:
        async def handle(event: Any) -> None:
            ownership = decode(OwnershipRecorded, event.message.value)
            key = ownership.sku.encode()
            raw = owners.get(key)
            current = decode(Owners, raw) if raw is not None else None
            owners[key] = encode(add_owner(current, ownership))

        return handle

    run_stage(pipe, t.CUSTOMERS, "directory-customers", repartition_customer)
    run_stage(pipe, t.CUSTOMERS_BY_ID, "directory-entries", upsert_customer)
    run_stage(pipe, t.OWNERSHIPS, "directory-ownerships", repartition_ownership)
    run_stage(pipe, t.OWNERSHIPS_BY_SKU, "directory-owners", index_owner)


class KeyMismatchError(ValueError):
    """The record's Kafka key is not the id it carries: it would land on the wrong partition."""


def check_key(event: Any, expected: bytes, field: str) -> None:
    if event.message.key != expected:
        raise KeyMismatchError(
            f"record key {event.message.key!r} must equal its {field} {expected!r}; "
            "publish with the key documented for this topic (preaviso publish does)"
        )
