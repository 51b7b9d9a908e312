"""What arrived: mails at the catcher, records on topics, the group's lag per partition.

Read-only views for the reliability tests and benches (``chaos.py``, ``rig.py``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from preaviso.devtools.catcher import message_id_of
from preaviso.settings import Settings
from preaviso.streams import lag
from preaviso.streams import topics as t
from preaviso.streams.kafka import client_options, connect_admin, partition_ids

if TYPE_CHECKING:
    from preaviso.devtools.sink import SinkControl

CONSUMED_TOPICS = tuple(s for s in t.ALL_TOPICS if s not in (t.RECEIPTS, t.DEAD_LETTERS))
"""Every topic the worker group reads: its lag must return to zero after each fault."""

__all__ = [
    "CONSUMED_TOPICS",
    "Arrivals",
    "Located",
    "MailBox",
    "SinkBox",
    "committed_offsets",
    "partition_lag",
    "read_raw",
    "read_records",
]


class Arrivals(Protocol):
    """The mails an SMTP server took, per Message-ID, and when."""

    def scan(self) -> None: ...
    def counts(self) -> Counter[str]: ...
    def first_after(self, wall: float, among: Iterable[str]) -> float | None: ...
    def last_arrival(self, among: Iterable[str]) -> float | None: ...


class MailBox:
    """The catcher's directory, read incrementally: each mail file is read once."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._files: dict[str, tuple[str, float]] = {}  # file name -> (Message-ID, mtime)

    def scan(self) -> None:
        if not self.directory.is_dir():
            return
        for path in self.directory.iterdir():
            name = path.name
            if name in self._files or name.startswith(".") or not name.endswith(".eml"):
                continue
            found = message_id_of(path.read_bytes())
            message_id = found.decode("ascii", "replace") if found else "(no Message-ID)"
            self._files[name] = (message_id, path.stat().st_mtime)

    def counts(self) -> Counter[str]:
        """How many mails the catcher holds per Message-ID (without angle brackets)."""
        return Counter(message_id for message_id, _ in self._files.values())

    def first_after(self, wall: float, among: Iterable[str]) -> float | None:
        """The earliest arrival (wall clock) after ``wall`` of a mail with one of ``among``."""
        wanted = set(among)
        times = [m for i, m in self._files.values() if m > wall and i in wanted]
        return min(times, default=None)

    def last_arrival(self, among: Iterable[str]) -> float | None:
        wanted = set(among)
        return max((m for i, m in self._files.values() if i in wanted), default=None)


class SinkBox:
    """The sink's counts (``devtools/sink.py``, which offers CHUNKING as the catcher
    cannot), read over its control port; times are each Message-ID's first arrival."""

    def __init__(self, control: SinkControl) -> None:
        self.control = control
        self._counts: Counter[str] = Counter()
        self._first: dict[str, float] = {}

    def scan(self) -> None:
        answer = self.control.ask("IDS")
        self._counts, self._first = Counter(answer["counts"]), answer["first_seen"]

    def counts(self) -> Counter[str]:
        return self._counts

    def first_after(self, wall: float, among: Iterable[str]) -> float | None:
        times = [self._first[m] for m in among if self._first.get(m, 0) > wall]
        return min(times, default=None)

    def last_arrival(self, among: Iterable[str]) -> float | None:
        return max((self._first[m] for m in among if m in self._first), default=None)


Located = tuple[int, int, dict[str, Any]]  # partition, offset, the decoded record


async def read_raw(settings: Settings, name: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of a topic as stored (key, value bytes, timestamp), up to its current end."""
    topic = settings.topic(name)
    found = await partition_ids(settings, [topic])
    if topic not in found:
        return []
    tps = [TopicPartition(topic, p) for p in found[topic]]
    consumer = AIOKafkaConsumer(
        **client_options(settings), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + 60
        while True:
            behind = [tp for tp, end in ends.items() if await consumer.position(tp) < end]
            if not behind:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end within 60 s")
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                records.extend(messages)
        return records
    finally:
        await consumer.stop()


def read_records(settings: Settings, name: str) -> list[Located]:
    """Every record of a topic, decoded from JSON, read up to its current end."""
    raw = asyncio.run(read_raw(settings, name))
    return [(m.partition, m.offset, json.loads(m.value)) for m in raw]


async def committed_offsets(settings: Settings) -> dict[tuple[str, int], int]:
    admin = await connect_admin(settings)
    try:
        offsets = await admin.list_consumer_group_offsets(settings.topic(settings.app_id))
    finally:
        await admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}


async def _partition_lag(settings: Settings, names: Sequence[str]) -> dict[str, int]:
    behind = await lag.partition_lag(settings, names)
    return {
        f"{tp.topic.removeprefix(settings.topic_prefix)}[{tp.partition}]": n
        for tp, n in sorted(behind.items())
        if n
    }


def partition_lag(settings: Settings) -> dict[str, int]:
    """Records the group has not committed yet, per partition that has any (``impacts[2]``)."""
    names = [settings.topic(s.name) for s in CONSUMED_TOPICS]
    try:
        return asyncio.run(_partition_lag(settings, names))
    except Exception as exc:  # a coordinator moving or loading: ask again later
        return {f"(lag unknown: {type(exc).__name__})": -1}
