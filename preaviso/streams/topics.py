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
CUSTOMERS_BY_ID = TopicSpec(
    "customers-by-id",
    "customer_id",
    "CustomerUpserted, repartitioned by the worker",
    compacted=True,
)
OWNERSHIPS_BY_SKU = TopicSpec("ownerships-by-sku", "sku", "OwnershipRecorded, repartitioned")
DISCONTINUED_SKUS = TopicSpec("discontinued-skus", "sku", "ProductDiscontinued, one per SKU")
POLICY_FANOUT = TopicSpec("policy-fanout", "none: one copy per partition", "PolicyChanged")
IMPACTS = TopicSpec("impacts", "customer_id", "Impact")
NOTICES = TopicSpec("notices", "customer_id", "Notice (rendered MIME)")
NOTICES_RETRY = TopicSpec("notices-retry", "customer_id", "ParkedNotice (a notice after a 4xx)")
RECEIPTS = TopicSpec("receipts", "customer_id", "DeliveryReceipt")
DEAD_LETTERS = TopicSpec("dead-letters", "original key", "DeadLetter")

ALL_TOPICS = (
    CUSTOMERS,
    OWNERSHIPS,
    CHANGES,
    CUSTOMERS_BY_ID,
    OWNERSHIPS_BY_SKU,
    DISCONTINUED_SKUS,
    POLICY_FANOUT,
    IMPACTS,
    NOTICES,
    NOTICES_RETRY,
    RECEIPTS,
    DEAD_LETTERS,
)
UPSTREAM_TOPICS = (CUSTOMERS, OWNERSHIPS, CHANGES)
DIRECTORY_TOPICS = (CUSTOMERS, OWNERSHIPS, CUSTOMERS_BY_ID, OWNERSHIPS_BY_SKU)
"""What the worker reads to build its directory: their lag at 0 means it is loaded."""

TABLES = ("customers", "customers-by-region", "owners", "issued", "delivered")
"""The worker's tables; each is backed by a compacted changelog topic."""


@dataclass(frozen=True, slots=True)
class InternalTopic:
    """A topic Faust would otherwise create itself, late: created before the worker joins."""

    name: str
    partitions: int
    compacted: bool


def internal_topics(settings: Settings) -> list[InternalTopic]:
    """Faust's changelogs (one per table) and its assignor topic, named as Faust names them.

    Faust declares these only once it runs; a changelog declared just before the first
    group assignment was seen with 0 partitions (``PartitionsMismatch`` for every
    write to its table), so the project creates them up front like its own topics.
    """
    group = settings.topic(settings.app_id)
    changelogs = [
        InternalTopic(f"{group}-{table}-changelog", settings.partitions, compacted=True)
        for table in TABLES
    ]
    return [*changelogs, InternalTopic(f"{group}-__assignor-__leader", 1, compacted=False)]


class TopicMismatchError(RuntimeError):
    """An existing topic has a partition count that breaks co-partitioning."""


async def ensure_topics(settings: Settings) -> list[str]:
    """Create missing topics with the configured partitions; return the names created.

    Every topic has ``settings.partitions`` partitions because the tables are joined
    with them by key: a different count silently sends a key to the wrong worker.
    Faust's own topics (changelogs, assignor) are checked and created here too.
    """
    wanted = [
        InternalTopic(settings.topic(spec.name), settings.partitions, spec.compacted)
        for spec in ALL_TOPICS
    ] + internal_topics(settings)
    admin = await connect_admin(settings)
    try:
        existing = await describe_partitions(admin, [w.name for w in wanted])
        wrong = [
            f"{w.name} has {len(existing[w.name])} (needs {w.partitions})"
            for w in wanted
            if w.name in existing and len(existing[w.name]) != w.partitions
        ]
        if wrong:
            raise TopicMismatchError(
                f"topics must have {settings.partitions} partitions (PREAVISO_PARTITIONS) but "
                f"{', '.join(sorted(wrong))}; set PREAVISO_PARTITIONS to match or use a new "
                "PREAVISO_TOPIC_PREFIX"
            )
        missing = [w for w in wanted if w.name not in existing]
        if missing:
            await admin.create_topics(
                [
                    NewTopic(
                        w.name,
                        w.partitions,
                        settings.replication_factor,
                        topic_configs={"cleanup.policy": "compact"} if w.compacted else {},
                    )
                    for w in missing
                ]
            )
        return [w.name for w in missing]
    finally:
        await admin.close()
