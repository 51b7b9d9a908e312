"""Audience stages: from a change to one impact per affected customer."""

from __future__ import annotations

from typing import Any

from preaviso.agents.stage import EventHandler, Outbox, run_stage
from preaviso.audience import DirectoryEntry, Owners, discontinuation_impacts, policy_impacts
from preaviso.schemas.events import PolicyChanged, ProductDiscontinued
from preaviso.streams import topics as t
from preaviso.streams.app import Pipeline
from preaviso.streams.codecs import decode, decode_upstream, encode


class UnsupportedChangeError(ValueError):
    """An event on the changes topic that is not a change Preaviso handles."""


def register(pipe: Pipeline) -> None:
    customers = pipe.tables["customers"]
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

    def owners_of_sku(outbox: Outbox) -> EventHandler:
        async def handle(event: Any) -> None:
            change = decode(ProductDiscontinued, event.message.value)
            sku = (event.message.key or b"").decode()
            raw = owners.get(event.message.key)
            found = decode(Owners, raw) if raw is not None else None
            for impact in discontinuation_impacts(change, sku, found):
                await outbox.send(t.IMPACTS, impact.customer_id.encode(), encode(impact))

        return handle

    def customers_in_scope(outbox: Outbox) -> EventHandler:
        async def handle(event: Any) -> None:
            change = decode(PolicyChanged, event.message.value)
            entries = (decode(DirectoryEntry, raw) for raw in customers.values())
            for impact in policy_impacts(change, entries, event.message.partition):
                await outbox.send(t.IMPACTS, impact.customer_id.encode(), encode(impact))

        return handle

    run_stage(pipe, t.CHANGES, "audience-router", route_change)
    run_stage(pipe, t.DISCONTINUED_SKUS, "audience-discontinued", owners_of_sku)
    run_stage(pipe, t.POLICY_FANOUT, "audience-policy", customers_in_scope)
