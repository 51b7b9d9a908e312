"""The worker's consumer group, reached through Faust's consumer: committed offsets, commits.

The bulk loader and the stage readers read partitions Faust holds with consumers of
their own, outside the group; what they commit must still be the group's, with Faust's
member id and generation, so a reader whose partitions moved is refused. Both calls
run in Faust's consumer thread, where its aiokafka consumer lives.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import TP

from preaviso.settings import Settings
from preaviso.streams.kafka import client_options

FETCH_WAIT = 0.1
"""Seconds a fetch waits for records (the broker, then ``getmany``) before it asks again:
the bulk loader's own writes come back to it (re-keyed records), and deliver's loop may
flush what it holds meanwhile."""
FETCH_WAIT_MS = int(FETCH_WAIT * 1000)
"""``FETCH_WAIT`` as Kafka's clients take it."""


def consumer_outside(settings: Settings) -> AIOKafkaConsumer:
    """A consumer of the loaders' own (no group, no auto-commit) for partitions Faust
    holds; they seek it to the group's ``committed_offsets`` and commit with
    ``commit_assigned``."""
    return AIOKafkaConsumer(
        **client_options(settings),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_wait_ms=FETCH_WAIT_MS,
    )


async def commit_assigned(app: Any, offsets: dict[TP, int]) -> bool:
    """Commit ``offsets`` through Faust's consumer (its member id and generation), in its
    thread; False, committing nothing, if any of them is no longer assigned there, or the
    consumer no longer knows its generation. (Faust's own commit drops such partitions,
    and crashes the worker when none is left.)"""
    thread = app.consumer._thread

    async def commit() -> bool:
        if not offsets or not offsets.keys() <= thread.assignment():
            return False
        if not _member(thread._ensure_consumer()):
            return False
        committed: bool = await thread._commit(offsets)
        return committed

    result: bool = await thread.call_thread(commit)
    return result


def _member(consumer: Any) -> bool:
    """False once aiokafka forgot its membership (a refused heartbeat resets its generation
    to -1 until it joins again): Kafka takes a commit without one as a standalone
    consumer's when the group has no member left, which would pass for proof of a
    membership this worker lost (``agents/fence.py``)."""
    coordinator = getattr(consumer, "_coordinator", None)
    return coordinator is None or getattr(coordinator, "generation", 0) >= 0


async def committed_offsets(app: Any, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    """The group's committed offsets, asked by Faust's own consumer (in its thread); never
    committed is offset 0, the beginning (as ``faust_fixes.seek_to_committed``)."""
    thread = app.consumer._thread

    async def ask() -> dict[TopicPartition, int]:
        consumer = thread._ensure_consumer()
        return {tp: await consumer.committed(tp) or 0 for tp in tps}

    result: dict[TopicPartition, int] = await thread.call_thread(ask)
    return result
