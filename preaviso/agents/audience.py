"""Audience stages: from a change to one impact per affected customer.

Each stage reads only the table entries that can match, on its own partition
(``streams/scan.py``): a discontinuation the owners of one SKU, a policy the
customers of this partition (all of them, or those of the regions in scope).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from typing import Any

from preaviso.agents.produce import write_chunked
from preaviso.agents.stage import Beside, EventHandler, Outbox, run_stage
from preaviso.audience import Candidate, ImpactRecord, discontinuation_impacts, policy_impacts
from preaviso.schemas.events import PolicyChanged, ProductDiscontinued
from preaviso.schemas.records import OwnedProduct
from preaviso.streams import keys, scan
from preaviso.streams import topics as t
from preaviso.streams.app import Pipeline
from preaviso.streams.codecs import decode, decode_upstream
from preaviso.streams.scan import scan_prefix

FAN_OUTS = 2
"""Copies of a policy fanned out at once: one built while the other is written."""


class FanOuts:
    """Turns for fan-outs beside the loop: ``at_once`` at a time, a partition's in order."""

    def __init__(self, partitions: int, at_once: int = FAN_OUTS) -> None:
        self._at_once = asyncio.Semaphore(at_once)
        self._in_order = [asyncio.Lock() for _ in range(partitions)]

    @asynccontextmanager
    async def turn(self, partition: int) -> AsyncIterator[None]:
        async with self._in_order[partition], self._at_once:
            yield


class UnsupportedChangeError(ValueError):
    """An event on the changes topic that is not a change Preaviso handles."""


def register(pipe: Pipeline) -> None:
    customers = pipe.tables["customers"]
    by_region = pipe.tables["customers-by-region"]
    owners = pipe.tables["owners"]
    partitions = pipe.settings.partitions

    def route_change(outbox: Outbox) -> EventHandler:
        async def handle(event: Any) -> None:
            change = decode_upstream(event.message.value)
            if isinstance(change, ProductDiscontinued):
                for sku in change.skus:
                    await outbox.send(t.DISCONTINUED_SKUS, sku.encode(), event.message.value)
            elif isinstance(change, PolicyChanged):
                for partition in range(partitions):
                    await outbox.send(t.POLICY_FANOUT, None, event.message.value, partition)
            else:
                raise UnsupportedChangeError(
                    f"{change.type} does not belong on the changes topic; "
                    "publish customers and ownerships to their own topics"
                )

        return handle

    impacts_topic = pipe.topic_name(t.IMPACTS)

    async def write_impacts(impacts: Iterable[ImpactRecord]) -> None:
        """Every impact in Kafka before the change is released: in produce batches, a
        chunk at a time (a fan-out is thousands of records from one event)."""
        sends = ((impacts_topic, key, value, None) for key, value in impacts)
        await write_chunked(pipe.app.producer._ensure_producer(), sends, partitions)

    def owners_of_sku(_: Outbox) -> EventHandler:
        async def handle(event: Any) -> None:
            change = decode(ProductDiscontinued, event.message.value)
            sku = (event.message.key or b"").decode()
            found = owners_of(owners, sku, event.message.partition)
            await write_impacts(discontinuation_impacts(change, sku, found))

        return handle

    fan_outs = FanOuts(partitions)

    def customers_in_scope(_: Outbox) -> EventHandler:
        """A policy's copies, one per partition, fanned out beside the loop: one copy's
        impacts are built while another's are written (the worker's CPU, then the
        broker's). Two copies on one partition go one after the other, so the impacts
        of a customer keep the order of their changes."""

        async def handle(event: Any) -> Beside:
            change = decode(PolicyChanged, event.message.value)
            return fan_out(change, event.message.partition)

        async def fan_out(change: PolicyChanged, partition: int) -> None:
            async with fan_outs.turn(partition):
                found = candidates(customers, by_region, change, partition)
                await write_impacts(policy_impacts(change, found, partition))

        return handle

    run_stage(pipe, t.CHANGES, "audience-router", route_change)
    run_stage(pipe, t.DISCONTINUED_SKUS, "audience-discontinued", owners_of_sku)
    run_stage(pipe, t.POLICY_FANOUT, "audience-policy", customers_in_scope)


def owners_of(owners: Any, sku: str, partition: int) -> Iterator[tuple[str, OwnedProduct]]:
    """The SKU's owners in the order of their ids: one prefix scan, O(owners of the SKU)."""
    group = keys.prefix(sku.encode())
    for key, raw in scan_prefix(owners, partition, group):
        yield keys.member(key, group).decode(), decode(OwnedProduct, raw)


def candidates(
    customers: Any, by_region: Any, change: PolicyChanged, partition: int
) -> Iterator[Candidate]:
    """The customers of ``partition`` who can be in scope, and no others.

    All customers: the partition's own store, read whole. Some regions: the
    ``customers-by-region`` entries of each region, then each customer's entry
    (a point read of ``partition``, not of Faust's current event: a fan-out runs
    beside the stage loop); an index entry whose customer has since moved is skipped.
    """
    if change.scope.all_customers:
        for _, entry in scan_prefix(customers, partition, b""):
            yield Candidate.read(entry)
        return
    for region in sorted(set(change.scope.regions)):
        group = keys.prefix(region.encode())
        for key, _ in scan_prefix(by_region, partition, group):
            raw = scan.read(customers, partition, keys.member(key, group))
            found = Candidate.read(raw) if raw is not None else None
            if found is not None and found.region == region:
                yield found
