"""On the real broker: a record close to Kafka's size limit is dead-lettered, and nothing stops."""

from __future__ import annotations

import asyncio
import base64
import json
from email.utils import parseaddr

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from preaviso.audience import Candidate, expected_recipients, policy_impacts
from preaviso.devtools import dataset
from preaviso.devtools.catcher import read_mails
from preaviso.settings import Settings
from preaviso.streams import topics as t
from preaviso.streams.kafka import client_options
from preaviso.streams.lag import wait_idle
from tests.integration.conftest import Stack
from tests.integration.helpers import cli, jsonl, read_topic, wait_for

pytestmark = pytest.mark.integration

CUSTOMERS, OWNED = dataset.directory(30, seed=23)
BY_ID = {c.customer_id: c for c in CUSTOMERS}
HUGE_SIZE = 999_000  # the local broker takes records up to about 1 MB
PREVIEW = 64 * 1024
SECRET = "never.logged@example.com"


def huge_ownership(customer_id: str) -> bytes:
    """An ownership with a field Preaviso does not know, padded to ``HUGE_SIZE`` bytes."""
    head = (
        f'{{"type": "OwnershipRecorded", "customer_id": "{customer_id}", "sku": "DW400-W", '
        '"product_name": "Lavavajillas", "purchase_date": "2024-01-01", '
        f'"notes": "contact {SECRET} '
    ).encode()
    tail = b'"}'
    return head + b"n" * (HUGE_SIZE - len(head) - len(tail)) + tail


async def produce_raw(settings: Settings, topic: str, key: bytes, value: bytes) -> tuple[int, int]:
    """Send like kcat would, bypassing `preaviso publish`; where the record landed."""
    producer = AIOKafkaProducer(**client_options(settings))
    await producer.start()
    try:
        meta = await producer.send_and_wait(settings.topic(topic), value, key=key)
        return meta.partition, meta.offset
    finally:
        await producer.stop()


async def read_at(settings: Settings, topic: str, partition: int, offset: int) -> bytes:
    """The value of one record, read back by its coordinates as an operator would."""
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        found = await asyncio.wait_for(consumer.getone(tp), 30)
        assert found.offset == offset
        return bytes(found.value)
    finally:
        await consumer.stop()


def assert_mailed_exactly(stack: Stack, owners: set[str]) -> None:
    """Wait for one mail per owner, then check they went to exactly the owners."""
    worker = stack.worker
    assert worker is not None
    wait_for(
        lambda: len(list(stack.mail_dir.glob("*.eml"))) >= len(owners),
        timeout=90,
        what=f"{len(owners)} mails",
        on_fail=worker.log_tail,
    )
    mailed = sorted(parseaddr(str(m["To"]))[1] for m in read_mails(stack.mail_dir))
    assert mailed == sorted(str(BY_ID[c].email) for c in owners)


def test_a_record_near_the_size_limit_is_dead_lettered_and_later_events_still_flow(
    stack: Stack,
) -> None:
    owner = next(o.customer_id for o in OWNED if o.sku == "DW400-W")
    change = dataset.dishwasher_discontinued("disc-after-huge")
    owners = expected_recipients(BY_ID, OWNED, change)
    assert owner in owners
    huge = huge_ownership(owner)
    assert len(huge) == HUGE_SIZE
    stack.start_worker()
    assert cli(stack.settings, "publish", "-", stdin=jsonl(CUSTOMERS)).returncode == 0

    # Keyed like the owner's real records: it sits on their partition, just before them.
    partition, offset = asyncio.run(
        produce_raw(stack.settings, t.OWNERSHIPS.name, owner.encode(), huge)
    )
    assert cli(stack.settings, "publish", "-", stdin=jsonl(OWNED)).returncode == 0
    directory = [stack.settings.topic(s.name) for s in t.DIRECTORY_TOPICS]
    asyncio.run(wait_idle(stack.settings, directory, within=90))
    assert cli(stack.settings, "publish", "-", stdin=jsonl([change])).returncode == 0

    worker = stack.worker
    assert worker is not None
    assert_mailed_exactly(stack, owners)

    [letter_record] = read_topic(stack.settings, t.DEAD_LETTERS.name, 1)
    letter = json.loads(letter_record.value)
    assert len(letter_record.value) < HUGE_SIZE // 4
    assert letter["stage"] == "directory-ownerships"
    assert letter["error_type"] == "DecodeError"
    assert "notes" in letter["reason"]
    assert letter["value_size"] == HUGE_SIZE
    assert letter["value_truncated"] is True
    preview = base64.b64decode(letter["value"])
    assert preview == huge[:PREVIEW]
    assert base64.b64decode(letter["key"]) == owner.encode()
    assert letter_record.key == owner.encode()
    where = (letter["topic"], letter["partition"], letter["offset"])
    assert where == (stack.settings.topic(t.OWNERSHIPS.name), partition, offset)
    original = asyncio.run(read_at(stack.settings, *where))
    assert len(original) == letter["value_size"]
    assert original == huge
    assert SECRET not in worker.log_tail(10_000)


def test_impacts_notify_cannot_use_are_dead_lettered_with_the_reason_and_others_still_flow(
    stack: Stack,
) -> None:
    """notify reads ``impacts`` in bulk: a record it cannot use becomes a dead letter naming
    the fault, and the impacts around it (a discontinuation's) are still notified."""
    change = dataset.dishwasher_discontinued("disc-after-bad-impacts")
    owners = expected_recipients(BY_ID, OWNED, change)
    stranger = next(iter(policy_impacts(
        dataset.policy_for_everyone("pol-stranger"),
        [Candidate("NOBODY-1", CUSTOMERS[0].region, 0)],
        0,
    )))  # fmt: skip
    stack.start_worker()
    assert cli(stack.settings, "publish", "-", stdin=jsonl([*CUSTOMERS, *OWNED])).returncode == 0
    directory = [stack.settings.topic(s.name) for s in t.DIRECTORY_TOPICS]
    asyncio.run(wait_idle(stack.settings, directory, within=90))

    asyncio.run(produce_raw(stack.settings, t.IMPACTS.name, b"C-garbage", b"not json"))
    asyncio.run(produce_raw(stack.settings, t.IMPACTS.name, b"NOBODY-1", stranger.value))
    assert cli(stack.settings, "publish", "-", stdin=jsonl([change])).returncode == 0

    assert_mailed_exactly(stack, owners)

    letters = [json.loads(r.value) for r in read_topic(stack.settings, t.DEAD_LETTERS.name, 2)]
    by_key = {base64.b64decode(letter["key"]): letter for letter in letters}
    assert {letter["stage"] for letter in letters} == {"notify"}
    assert by_key[b"C-garbage"]["error_type"] == "DecodeError"
    assert base64.b64decode(by_key[b"C-garbage"]["value"]) == b"not json"
    assert by_key[b"NOBODY-1"]["error_type"] == "UnknownCustomerError"
    assert "NOBODY-1 is not in the directory" in by_key[b"NOBODY-1"]["reason"]
    assert "replay this record from the dead-letter topic" in by_key[b"NOBODY-1"]["reason"]
