"""Every topic Preaviso reads or writes: name, key and why, created by the project itself."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.admin import NewTopic

from preaviso.settings import Settings
from preaviso.streams.kafka import connect_admin, describe_partitions


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    key: str
    carries: str
    compacted: bool = False


CUSTOMERS = TopicSpec("customers", "customer_id", "CustomerUpserted (upstream)", compacted=True)
OWNERSHIPS = TopicSpec("ownerships", "customer_id", "OwnershipRecorded (upstream)")
CHANGES = TopicSpec(
    "changes", "policy_id or event_id", "ProductDiscontinued, PolicyChanged (upstream)"
)
OWNERSHIPS_BY_SKU = TopicSpec("ownerships-by-sku", "sku", "OwnershipRecorded, repartitioned")
DISCONTINUED_SKUS = TopicSpec("discontinued-skus", "sku", "ProductDiscontinued, one per SKU")
POLICY_FANOUT = TopicSpec("policy-fanout", "none: one copy per partition", "PolicyChanged")
IMPACTS = TopicSpec("impacts", "customer_id", "Impact")
NOTICES = TopicSpec("notices", "customer_id", "Notice (rendered MIME)")
RECEIPTS = TopicSpec("receipts", "customer_id", "DeliveryReceipt")
DEAD_LETTERS = TopicSpec("dead-letters", "original key", "DeadLetter")

ALL_TOPICS = (
    CUSTOMERS,
    OWNERSHIPS,
    CHANGES,
    OWNERSHIPS_BY_SKU,
    DISCONTINUED_SKUS,
    POLICY_FANOUT,
    IMPACTS,
    NOTICES,
    RECEIPTS,
    DEAD_LETTERS,
)
UPSTREAM_TOPICS = (CUSTOMERS, OWNERSHIPS, CHANGES)


class TopicMismatchError(RuntimeError):
    """An existing topic has a partition count that breaks co-partitioning."""


async def ensure_topics(settings: Settings) -> list[str]:
    """Create missing topics with the configured partitions; return the names created.

    Every topic has ``settings.partitions`` partitions because the tables are joined
    with them by key: a different count silently sends a key to the wrong worker.
    """
    admin = await connect_admin(settings)
    try:
        existing = await describe_partitions(admin, [settings.topic(t.name) for t in ALL_TOPICS])
        counts = {name: len(ids) for name, ids in existing.items()}
        wrong = {n: c for n, c in counts.items() if c != settings.partitions}
        if wrong:
            listing = ", ".join(f"{n} has {c}" for n, c in sorted(wrong.items()))
            raise TopicMismatchError(
                f"topics must have {settings.partitions} partitions (PREAVISO_PARTITIONS) but "
                f"{listing}; set PREAVISO_PARTITIONS to match or use a new PREAVISO_TOPIC_PREFIX"
            )
        missing = [t for t in ALL_TOPICS if settings.topic(t.name) not in counts]
        if missing:
            await admin.create_topics(
                [
                    NewTopic(
                        settings.topic(t.name),
                        settings.partitions,
                        settings.replication_factor,
                        topic_configs={"cleanup.policy": "compact"} if t.compacted else {},
                    )
                    for t in missing
                ]
            )
        return [settings.topic(t.name) for t in missing]
    finally:
        await admin.close()
