"""The worker's topics, Faust's own included, exist with the right shape before it joins."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from preaviso.settings import Settings
from preaviso.streams.kafka import connect_admin, describe_partitions
from tests.integration.helpers import cli

pytestmark = pytest.mark.integration

EVENT = (
    '{"type": "CustomerUpserted", "customer_id": "C1", "email": "a@example.com",'
    ' "name": "Ana", "region": "ES-MD"}'
)
TABLES = (  # written out: the contract
    "customers",
    "customers-by-region",
    "owners",
    "issued",
    "delivered",
)


def settings_for(kafka_bootstrap: str, topic_prefix: str) -> Settings:
    return Settings(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, partitions=3, connect_timeout=5
    )


async def shape(settings: Settings, names: list[str]) -> dict[str, tuple[int, str]]:
    """Partition count and cleanup.policy of each existing topic."""
    admin = await connect_admin(settings)
    try:
        found = await describe_partitions(admin, names)
        configs = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in found]
        )
        policy: dict[str, str] = {}
        for response in configs:
            for resource in response.resources:  # (error, message, type, name, entries)
                name, entries = resource[3], resource[4]
                policy[name] = next(e[1] for e in entries if e[0] == "cleanup.policy")
        return {name: (len(ids), policy[name]) for name, ids in found.items()}
    finally:
        await admin.close()


def test_the_table_changelogs_exist_compacted_before_any_worker_runs(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    settings = settings_for(kafka_bootstrap, topic_prefix)

    result = cli(settings, "publish", "-", stdin=EVENT)

    assert result.returncode == 0, result.stderr
    group = f"{topic_prefix}preaviso"
    changelogs = [f"{group}-{table}-changelog" for table in TABLES]
    leader = f"{group}-__assignor-__leader"
    found = asyncio.run(shape(settings, [*changelogs, leader]))
    assert found == {
        **{name: (3, "compact") for name in changelogs},
        leader: (1, "delete"),
    }


def test_a_changelog_with_another_partition_count_stops_the_worker_with_the_fix(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    settings = settings_for(kafka_bootstrap, topic_prefix)
    wrong = f"{topic_prefix}preaviso-delivered-changelog"

    async def create_wrong() -> None:
        admin = await connect_admin(settings)
        try:
            await admin.create_topics([NewTopic(wrong, 2, 1)])
        finally:
            await admin.close()

    asyncio.run(create_wrong())

    result = cli(settings, "worker", timeout=60)

    assert result.returncode == 1
    assert f"{wrong} has 2 (needs 3)" in result.stderr
    assert "PREAVISO_PARTITIONS" in result.stderr
    assert "PREAVISO_TOPIC_PREFIX" in result.stderr


def test_a_heartbeat_too_slow_for_the_session_is_refused_naming_both_settings() -> None:
    bad = Settings().model_copy(update={"kafka_heartbeat_interval": 5.0})

    result = cli(bad, "publish", "-", stdin=EVENT, timeout=60)

    assert result.returncode == 2
    assert "PREAVISO_KAFKA_HEARTBEAT_INTERVAL (5)" in result.stderr
    assert "PREAVISO_KAFKA_SESSION_TIMEOUT (10)" in result.stderr
