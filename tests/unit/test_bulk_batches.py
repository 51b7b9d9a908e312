"""How the bulk loop cuts fetches into batches and writes them, and notify as one of its
stages: a notice is written before its ``issued`` mark, a fetch is never handled twice."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from faust.types import TP

from preaviso.agents import bulk, ledger, notify
from preaviso.agents.composer import (
    KILLED,
    ComposerUnavailableError,
    InlineComposer,
    ProcessComposer,
)
from preaviso.audience import DirectoryEntry, discontinuation_impacts, owned_product
from preaviso.compose import Job
from preaviso.devtools import dataset
from preaviso.schemas.records import DeadLetter, Impact, Notice
from preaviso.settings import Settings
from preaviso.streams import keys, scan
from preaviso.streams import topics as t
from preaviso.streams.codecs import decode, encode
from tests.unit.composer_faults import MARK, compose_or_die
from tests.unit.producers import GatedProducer
from tests.unit.stage_fakes import faust_consumer
from tests.unit.stores import Tables

SETTINGS = Settings(partitions=2, message_id_domain="notices.example.com")
PEOPLE, OWNED = dataset.directory(40)


@dataclass
class Record:
    """What ``getmany`` returns, as far as the loop reads it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes = b""


def a_pipe(tables: Tables, producer: Any, commits: list[dict[Any, int]]) -> Any:
    """A pipe whose worker holds every impacts partition (no rebalance)."""
    assigned = {TP(SETTINGS.topic("impacts"), p) for p in range(SETTINGS.partitions)}

    async def commit(offsets: dict[Any, int]) -> bool:
        commits.append(offsets)
        return True

    return SimpleNamespace(
        settings=SETTINGS,
        tables={name: tables.table(name) for name in ("customers", "issued")},
        topic_name=lambda spec: SETTINGS.topic(spec.name),
        app=SimpleNamespace(
            producer=SimpleNamespace(_ensure_producer=lambda: producer),
            consumer=faust_consumer(lambda: assigned, commit),
        ),
    )


def impacts_of(customer_ids: set[str]) -> list[Impact]:
    owners = [(o.customer_id, owned_product(o)) for o in OWNED if o.sku == "DW400-W"]
    event = dataset.dishwasher_discontinued()
    return [
        decode(Impact, record.value)
        for record in discontinuation_impacts(event, "DW400-W", owners)
        if record.key.decode() in customer_ids
    ]


def store_customer(tables: Tables, table: Any, partition: int, customer_id: str) -> None:
    customer = next(c for c in PEOPLE if c.customer_id == customer_id)
    entry = encode(DirectoryEntry(partition=partition, customer=customer))
    tables.put(table, partition, customer_id.encode(), entry)


async def test_a_notice_is_written_before_its_issued_mark_reaches_kafka(
    tables: Tables,
) -> None:
    producer = GatedProducer(gated=SETTINGS.topic("notices"))
    commits: list[dict[Any, int]] = []
    pipe = a_pipe(tables, producer, commits)
    [impact] = impacts_of({next(o.customer_id for o in OWNED if o.sku == "DW400-W")})
    store_customer(tables, pipe.tables["customers"], 1, impact.customer_id)
    [(_, handle)] = notify.stages(pipe).values()
    record = Record(SETTINGS.topic("impacts"), 1, 9, impact.customer_id.encode(), encode(impact))
    batch = bulk.Batch(pipe)
    handle(record, batch)
    loader = bulk.BulkLoader(pipe, {}, InlineComposer(SETTINGS))
    await loader._compose(batch)

    finishing = asyncio.ensure_future(
        loader._finish(batch, {TopicPartition(record.topic, 1): [record]})
    )
    for _ in range(20):
        await asyncio.sleep(0)
    assert producer.written == []  # the notice is not written: nor is its mark
    assert commits == []

    producer.opened.set()
    assert await finishing

    topics = [topic for topic, _, _ in producer.written]
    assert topics == [
        SETTINGS.topic("notices"),
        pipe.tables["issued"].changelog_topic.get_topic_name(),
    ]
    mark = keys.key(impact.customer_id.encode(), impact.notice_id.encode())
    assert scan.read(pipe.tables["issued"], 1, mark) == keys.MARK
    assert commits == [{TP(record.topic, 1): 10}]


async def test_notify_issues_each_impact_of_a_fetch_once_and_names_an_unknown_customer(
    tables: Tables,
) -> None:
    pipe = a_pipe(tables, None, [])
    owners = sorted({o.customer_id for o in OWNED if o.sku == "DW400-W"})
    known, unknown = owners[0], owners[1]
    store_customer(tables, pipe.tables["customers"], 0, known)
    [(stage, handle)] = notify.stages(pipe).values()
    [first] = impacts_of({known})
    [stranger] = impacts_of({unknown})
    topic = SETTINGS.topic("impacts")
    batch = bulk.Batch(pipe)

    handle(Record(topic, 0, 0, known.encode(), encode(first)), batch)
    handle(Record(topic, 0, 1, known.encode(), encode(first)), batch)  # the same again
    with pytest.raises(notify.UnknownCustomerError, match=unknown):
        handle(Record(topic, 0, 2, unknown.encode(), encode(stranger)), batch)
    await bulk.BulkLoader(pipe, {}, InlineComposer(SETTINGS))._compose(batch)

    assert stage == "notify"
    [(sent_to, key, value, _)] = batch.sends
    notice = decode(Notice, value)
    customer = next(c for c in PEOPLE if c.customer_id == known)
    assert (sent_to, key) == (SETTINGS.topic("notices"), known.encode())
    assert (notice.notice_id, notice.recipient) == (first.notice_id, str(customer.email))
    assert f"<{first.notice_id}@notices.example.com>" in notice.mime


async def test_a_notice_whose_composing_kills_the_child_is_dead_lettered_and_the_rest_sent(
    tables: Tables,
) -> None:
    pipe = a_pipe(tables, None, [])
    impacts = impacts_of({o.customer_id for o in OWNED if o.sku == "DW400-W"})[:3]
    deadly = impacts[1].model_copy(update={"model_name": MARK.decode()})
    [(_, handle)] = notify.stages(pipe).values()
    batch = bulk.Batch(pipe)
    for offset, impact in enumerate([impacts[0], deadly, impacts[2]]):
        store_customer(tables, pipe.tables["customers"], 0, impact.customer_id)
        handle(
            Record(
                SETTINGS.topic("impacts"), 0, offset, impact.customer_id.encode(), encode(impact)
            ),
            batch,
        )
    composer = ProcessComposer(SETTINGS, processes=1, work=compose_or_die)
    try:
        await bulk.BulkLoader(pipe, {}, composer)._compose(batch)
    finally:
        composer.close()

    [first, letter, last] = [
        (topic, decode(Notice if "notices" in topic else DeadLetter, value))
        for topic, _, value, _ in batch.sends
    ]
    assert [first[0], letter[0], last[0]] == [
        SETTINGS.topic(t) for t in ("notices", "dead-letters", "notices")
    ]
    assert (letter[1].error_type, letter[1].offset) == (KILLED, 1)
    assert (first[1].notice_id, last[1].notice_id) == (impacts[0].notice_id, impacts[2].notice_id)
    issued = batch.table("issued", 0)
    assert not ledger.contains(issued, deadly.customer_id.encode(), deadly.notice_id)
    assert ledger.contains(issued, impacts[0].customer_id.encode(), impacts[0].notice_id)


async def test_a_notice_that_cannot_be_composed_is_dead_lettered_without_its_issued_mark(
    tables: Tables,
) -> None:
    pipe = a_pipe(tables, None, [])
    [impact] = impacts_of({next(o.customer_id for o in OWNED if o.sku == "DW400-W")})
    unnamed = impact.model_copy(update={"model_name": None})  # the template needs it
    store_customer(tables, pipe.tables["customers"], 0, impact.customer_id)
    [(_, handle)] = notify.stages(pipe).values()
    batch = bulk.Batch(pipe)
    record = Record(SETTINGS.topic("impacts"), 0, 3, impact.customer_id.encode(), encode(unnamed))

    handle(record, batch)
    await bulk.BulkLoader(pipe, {}, InlineComposer(SETTINGS))._compose(batch)

    [(sent_to, key, value, _)] = batch.sends
    letter = decode(DeadLetter, value)
    assert (sent_to, key) == (SETTINGS.topic("dead-letters"), impact.customer_id.encode())
    assert (letter.stage, letter.error_type, letter.offset) == ("notify", "ValueError", 3)
    assert "model_name" in letter.reason
    assert not ledger.contains(batch.table("issued", 0), key, impact.notice_id)


async def test_a_fetch_cut_short_by_the_batch_time_is_handled_once_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bulk, "BATCH_TIME", 0.0)  # every record ends its batch
    seen: list[tuple[int, int]] = []
    pipe = SimpleNamespace(topic_name=lambda spec: SETTINGS.topic(spec.name))
    loader = bulk.BulkLoader(pipe, {t.IMPACTS: ("notify", lambda r, b: seen.append(where(r)))})  # type: ignore[arg-type]
    topic = SETTINGS.topic("impacts")
    rest: bulk.Fetched = {
        TopicPartition(topic, 0): [Record(topic, 0, n) for n in (4, 5, 6)],
        TopicPartition(topic, 1): [Record(topic, 1, n) for n in (0, 1)],
    }
    batches: list[bulk.Fetched] = []
    while rest:
        _, handled, rest = await loader._handle(rest, None)
        batches.append(handled)

    assert seen == [(0, 4), (0, 5), (0, 6), (1, 0), (1, 1)]
    assert [[where(r) for rs in b.values() for r in rs] for b in batches] == [[s] for s in seen]


async def test_a_batch_composes_at_most_compose_max_notices_and_the_rest_waits_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The notices of a batch are written once all are composed: a fetch of thousands
    is cut into batches, so the first mails need not wait for the whole fetch."""
    monkeypatch.setattr(bulk, "COMPOSE_MAX", 2)
    pipe = SimpleNamespace(topic_name=lambda spec: SETTINGS.topic(spec.name))

    def defer(record: Any, batch: bulk.Batch) -> None:
        batch.compose("notify", record, Job(b"", b""), lambda result, b: None)

    loader = bulk.BulkLoader(pipe, {t.IMPACTS: ("notify", defer)})  # type: ignore[arg-type]
    topic = SETTINGS.topic("impacts")
    rest: bulk.Fetched = {TopicPartition(topic, 0): [Record(topic, 0, n) for n in range(5)]}
    batches: list[list[tuple[int, int]]] = []
    while rest:
        batch, handled, rest = await loader._handle(rest, None)
        assert len(batch.jobs) == len(handled[TopicPartition(topic, 0)])
        batches.append([where(r) for rs in handled.values() for r in rs])

    assert batches == [[(0, 0), (0, 1)], [(0, 2), (0, 3)], [(0, 4)]]


def where(record: Any) -> tuple[int, int]:
    return record.partition, record.offset


class FailingSecondTime(InlineComposer):
    """Composes the first batch; the second fails as if its child process died."""

    calls = 0

    async def compose(self, jobs: Any) -> Any:
        self.calls += 1
        if self.calls == 2:
            raise ComposerUnavailableError("a process composing notices died")
        return await super().compose(jobs)


async def test_a_batch_that_cannot_be_composed_lets_the_batch_before_finish(
    tables: Tables,
) -> None:
    """The batch before is being written while the next is composed; when composing
    fails, that write and its commit still finish, so only the failed batch is read again."""
    producer = GatedProducer(gated=SETTINGS.topic("notices"))
    commits: list[dict[Any, int]] = []
    pipe = a_pipe(tables, producer, commits)
    owner_ids = sorted({o.customer_id for o in OWNED if o.sku == "DW400-W"})[:2]
    for cid in owner_ids:
        store_customer(tables, pipe.tables["customers"], 1, cid)
    [(_, handle)] = notify.stages(pipe).values()
    topic = SETTINGS.topic("impacts")
    fetches = [
        {TopicPartition(topic, 1): [Record(topic, 1, n, i.customer_id.encode(), encode(i))]}
        for n, i in enumerate(impacts_of(set(owner_ids)))
    ]

    async def getmany(**_: Any) -> Any:
        return fetches.pop(0) if fetches else {}

    loader = bulk.BulkLoader(pipe, {t.IMPACTS: ("notify", handle)}, FailingSecondTime(SETTINGS))
    loading = asyncio.ensure_future(loader._load(SimpleNamespace(getmany=getmany)))  # type: ignore[arg-type]
    for _ in range(50):
        await asyncio.sleep(0)
    assert not loading.done()  # the second batch failed; the first is still being written
    producer.opened.set()

    with pytest.raises(ComposerUnavailableError):
        await loading
    assert commits == [{TP(topic, 1): 1}]
