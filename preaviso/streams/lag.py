"""Consumer lag of the worker's group: how far each topic's committed offsets trail its end."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CoordinatorLoadInProgressError, GroupCoordinatorNotAvailableError

from preaviso.settings import Settings
from preaviso.streams.kafka import client_options, connect_admin, describe_partitions


class UnknownTopicError(LookupError):
    """Lag was asked of a topic the cluster does not have."""


async def _partitions(admin: AIOKafkaAdminClient, topics: list[str]) -> list[TopicPartition]:
    """Every partition of ``topics``; an unknown topic is an error, not zero."""
    found = await describe_partitions(admin, topics)
    missing = sorted(set(topics) - set(found))
    if missing:
        raise UnknownTopicError(f"no such topic(s): {', '.join(missing)}")
    return [TopicPartition(name, p) for name in topics for p in found[name]]


def _behind(
    ends: dict[TopicPartition, int], committed: dict[Any, Any]
) -> dict[TopicPartition, int]:
    """Records past the group's committed offset, per partition (never committed = all)."""
    lag: dict[TopicPartition, int] = {}
    for tp, end in ends.items():
        meta = committed.get(tp)
        done = meta.offset if meta is not None and meta.offset >= 0 else 0
        lag[tp] = max(0, end - done)
    return lag


async def _end_offsets(
    settings: Settings, admin: AIOKafkaAdminClient, topics: list[str]
) -> dict[TopicPartition, int]:
    tps = await _partitions(admin, topics)
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False)
    try:
        await consumer.start()
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return ends


async def end_offsets(settings: Settings, topics: list[str]) -> dict[TopicPartition, int]:
    """End offset of every partition of ``topics``; an unknown topic is an error, not zero."""
    admin = await connect_admin(settings)
    try:
        return await _end_offsets(settings, admin, topics)
    finally:
        await admin.close()


async def partition_lag(settings: Settings, topics: Iterable[str]) -> dict[TopicPartition, int]:
    """Records not yet committed by the worker group, per partition (never committed = all)."""
    names = list(topics)
    admin = await connect_admin(settings)
    try:
        ends = await _end_offsets(settings, admin, names)
        committed = await admin.list_consumer_group_offsets(settings.topic(settings.app_id))
    finally:
        await admin.close()
    return _behind(ends, committed)


async def topic_lag(settings: Settings, topics: Iterable[str]) -> dict[str, int]:
    """Records not yet committed by the worker group, per topic (never committed = all)."""
    names = list(topics)
    lag = dict.fromkeys(names, 0)
    for tp, behind in (await partition_lag(settings, names)).items():
        lag[tp.topic] += behind
    return lag


class LagWatcher:
    """Asks the group's lag on some topics again and again over the same two clients."""

    def __init__(
        self,
        settings: Settings,
        admin: AIOKafkaAdminClient,
        consumer: AIOKafkaConsumer,
        tps: list[TopicPartition],
    ) -> None:
        self._group = settings.topic(settings.app_id)
        self._admin, self._consumer, self._tps = admin, consumer, tps

    @classmethod
    async def open(cls, settings: Settings, topics: list[str]) -> LagWatcher:
        admin = await connect_admin(settings)
        consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False)
        try:
            tps = await _partitions(admin, topics)
            await consumer.start()
        except BaseException:
            await admin.close()
            await consumer.stop()
            raise
        return cls(settings, admin, consumer, tps)

    async def lag(self) -> int:
        """Records not yet committed by the group on the topics (never committed = all)."""
        ends = await self._consumer.end_offsets(self._tps)
        committed = await self._admin.list_consumer_group_offsets(self._group)
        return sum(_behind(ends, committed).values())

    async def close(self) -> None:
        await self._consumer.stop()
        await self._admin.close()


async def wait_idle(settings: Settings, topics: Iterable[str], within: float = 120.0) -> None:
    """Wait until the worker has committed everything on ``topics``."""
    names = list(topics)
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            lag = await topic_lag(settings, names)
        except (GroupCoordinatorNotAvailableError, CoordinatorLoadInProgressError):
            lag = dict.fromkeys(names, -1)  # a fresh broker is still electing the coordinator
        if not any(lag.values()):
            return
        if asyncio.get_running_loop().time() > deadline:
            behind = ", ".join(f"{k}={v}" for k, v in lag.items() if v)
            raise TimeoutError(f"worker still behind after {within:g}s: {behind}")
        await asyncio.sleep(0.5)


async def end_offsets_total(settings: Settings, topic: str) -> int:
    """Records ever written to ``topic`` (sum of its partitions' end offsets)."""
    return sum((await end_offsets(settings, [topic])).values())


async def stable_members(settings: Settings) -> int:
    """Members of the workers' group once it is stable; 0 while it rebalances, or while
    its coordinator cannot be asked yet."""
    try:
        admin = await connect_admin(settings)
        try:
            [answer] = await admin.describe_consumer_groups([settings.topic(settings.app_id)])
        finally:
            await admin.close()
    except Exception:  # a coordinator still loading: ask again
        return 0
    found = answer.to_object()["groups"][0]
    return len(found["members"]) if found["state"] == "Stable" else 0
