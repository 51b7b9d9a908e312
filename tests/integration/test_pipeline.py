"""End to end on the real broker: events published with the CLI become mails at the catcher."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from datetime import timedelta
from email.utils import parseaddr
from importlib.util import find_spec

import pytest
from aiokafka import AIOKafkaProducer

from preaviso.audience import expected_recipients
from preaviso.devtools import dataset
from preaviso.devtools.catcher import read_mails as mails
from preaviso.schemas.events import CustomerUpserted
from preaviso.settings import EventLoop
from preaviso.streams import topics as t
from preaviso.streams.kafka import client_options
from preaviso.streams.lag import wait_idle
from tests import oracle
from tests.integration.conftest import Stack
from tests.integration.helpers import cli, jsonl, read_topic, records_as_json, wait_for

pytestmark = pytest.mark.integration

CUSTOMERS, OWNED = dataset.directory(60, seed=11)
BY_ID = {c.customer_id: c for c in CUSTOMERS}


def publish_directory(stack: Stack) -> None:
    result = cli(stack.settings, "publish", "-", stdin=jsonl([*CUSTOMERS, *OWNED]))
    assert result.returncode == 0, result.stderr
    assert f"published {len(CUSTOMERS) + len(OWNED)} event(s)" in result.stdout
    names = [stack.settings.topic(s.name) for s in t.DIRECTORY_TOPICS]
    asyncio.run(wait_idle(stack.settings, names, within=90))


def wait_for_mails(stack: Stack, count: int) -> None:
    assert stack.worker is not None
    worker = stack.worker
    wait_for(
        lambda: len(list(stack.mail_dir.glob("*.eml"))) >= count,
        timeout=90,
        what=f"{count} mails",
        on_fail=worker.log_tail,
    )


def recipients(stack: Stack) -> list[str]:
    return sorted(parseaddr(str(m["To"]))[1] for m in mails(stack.mail_dir))


def emails_of(ids: set[str]) -> list[str]:
    return sorted(str(BY_ID[i].email) for i in ids)


@pytest.mark.parametrize(
    "catcher", [True, False], indirect=True, ids=["pipelining", "one-command-at-a-time"]
)
def test_a_discontinuation_reaches_exactly_the_owners(stack: Stack) -> None:
    stack.start_worker()
    publish_directory(stack)
    change = dataset.dishwasher_discontinued("disc-it-1")
    owners = expected_recipients(BY_ID, OWNED, change)
    assert owners, "the fixture data must contain owners"

    result = cli(stack.settings, "publish", "-", stdin=jsonl([change]))
    assert result.returncode == 0, result.stderr
    wait_for_mails(stack, len(owners))

    assert recipients(stack) == emails_of(owners)
    spanish = next(m for m in mails(stack.mail_dir) if "Lavavajillas" in str(m["Subject"]))
    to = parseaddr(str(spanish["To"]))[1]
    customer = next(c for c in CUSTOMERS if c.email == to)
    body = spanish.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert customer.name in text
    assert "Serie 4 DW-400" in text
    receipts = records_as_json(read_topic(stack.settings, t.RECEIPTS.name, len(owners)))
    assert sorted(r["recipient"] for r in receipts) == emails_of(owners)
    assert {r["status"] for r in receipts} == {"sent"}
    assert {r["message_id"] for r in receipts} == {
        str(m["Message-ID"]) for m in mails(stack.mail_dir)
    }


@pytest.mark.parametrize("window", [None, 1], ids=["default-unrecorded-window", "window-of-1"])
def test_a_policy_change_reaches_exactly_the_customers_in_its_regions(
    stack: Stack, window: int | None
) -> None:
    stack.settings = stack.settings.model_copy(update={"smtp_unrecorded_max": window})
    stack.start_worker()
    publish_directory(stack)
    change = dataset.warranty_change("policy-it-1")
    in_scope = expected_recipients(BY_ID, OWNED, change)
    assert 0 < len(in_scope) < len(CUSTOMERS)

    assert cli(stack.settings, "publish", "-", stdin=jsonl([change])).returncode == 0
    wait_for_mails(stack, len(in_scope))

    assert recipients(stack) == emails_of(in_scope)  # each once, whatever the window
    assert stack.worker is not None
    said = re.findall(r"(\d+) answered at most awaiting", stack.worker.log_path.read_text())
    c = stack.settings.smtp_connections
    second = c if stack.settings.smtp_pipelining else 0  # the second mail a connection
    assert said == [str(window or max(c, min(6 * c, 24) - second))]  # as the README says
    for mail in mails(stack.mail_dir):
        html = mail.get_body(("html",))
        assert html is not None
        assert "3 años" in html.get_content() or "3 años" in html.get_content().replace(
            "&nbsp;", " "
        )


def moved(customer: CustomerUpserted, region: str) -> CustomerUpserted:
    return customer.model_copy(
        update={
            "event_id": f"{customer.event_id}-moved",
            "occurred_at": customer.occurred_at + timedelta(days=1),
            "region": region,
        }
    )


def test_a_customer_who_moved_region_hears_of_a_regional_policy_only_if_moved_into_scope(
    stack: Stack,
) -> None:
    stack.start_worker()
    publish_directory(stack)
    change = dataset.warranty_change("policy-it-moves")  # ES-CT and ES-AN
    leaves = next(c for c in CUSTOMERS if c.region == "ES-CT")
    joins = next(c for c in CUSTOMERS if c.region not in change.scope.regions)
    moves = [moved(leaves, "GB-LND"), moved(joins, "ES-AN")]
    assert cli(stack.settings, "publish", "-", stdin=jsonl(moves)).returncode == 0
    names = [stack.settings.topic(s.name) for s in t.DIRECTORY_TOPICS]
    asyncio.run(wait_idle(stack.settings, names, within=90))
    # The oracle, written apart from the code: the newest upsert per customer decides.
    in_scope = oracle.affected(
        [c.model_dump(mode="json") for c in [*CUSTOMERS, *moves]],
        [],
        change.model_dump(mode="json"),
    )
    assert joins.customer_id in in_scope
    assert leaves.customer_id not in in_scope

    assert cli(stack.settings, "publish", "-", stdin=jsonl([change])).returncode == 0
    wait_for_mails(stack, len(in_scope))
    consumed = [stack.settings.topic(s.name) for s in (t.POLICY_FANOUT, t.IMPACTS, t.NOTICES)]
    asyncio.run(wait_idle(stack.settings, consumed, within=90))

    assert recipients(stack) == emails_of(in_scope)


def produce_raw(stack: Stack, spec: t.TopicSpec, value: bytes, key: bytes) -> None:
    """One record as any producer would write it, past every check of ours."""

    async def produce() -> None:
        producer = AIOKafkaProducer(**client_options(stack.settings))
        await producer.start()
        try:
            await producer.send_and_wait(stack.settings.topic(spec.name), value, key=key)
        finally:
            await producer.stop()

    asyncio.run(produce())


def test_a_malformed_record_is_dead_lettered_and_later_events_still_flow(stack: Stack) -> None:
    stack.start_worker()
    publish_directory(stack)
    garbage = b'{"type": "ProductDiscontinued", "skus": "not-a-list"'

    produce_raw(stack, t.CHANGES, garbage, key=b"bad")
    change = dataset.dishwasher_discontinued("disc-it-after-garbage")
    owners = expected_recipients(BY_ID, OWNED, change)
    assert cli(stack.settings, "publish", "-", stdin=jsonl([change])).returncode == 0
    wait_for_mails(stack, len(owners))
    assert recipients(stack) == emails_of(owners)

    letters = records_as_json(read_topic(stack.settings, t.DEAD_LETTERS.name, 1))
    assert len(letters) == 1
    letter = letters[0]
    assert letter["stage"] == "audience-router"
    assert base64.b64decode(letter["value"]) == garbage
    assert base64.b64decode(letter["key"]) == b"bad"
    assert "JSON" in letter["reason"] or "invalid" in letter["reason"]
    assert letter["topic"] == stack.settings.topic(t.CHANGES.name)


def test_a_malformed_notice_is_dead_lettered_by_deliver_and_the_notices_after_it_go_out(
    stack: Stack,
) -> None:
    stack.start_worker()
    publish_directory(stack)
    garbage = b'{"type": "Notice", "notice_id": 42}'
    produce_raw(stack, t.NOTICES, garbage, key=b"C-bad")  # deliver reads it with its own consumer

    change = dataset.dishwasher_discontinued("disc-it-after-a-bad-notice")
    owners = expected_recipients(BY_ID, OWNED, change)
    assert cli(stack.settings, "publish", "-", stdin=jsonl([change])).returncode == 0
    wait_for_mails(stack, len(owners))
    notices = [stack.settings.topic(t.NOTICES.name)]
    asyncio.run(wait_idle(stack.settings, notices, within=90))  # committed past it

    assert recipients(stack) == emails_of(owners)
    [letter] = records_as_json(read_topic(stack.settings, t.DEAD_LETTERS.name, 1))
    assert letter["stage"] == "deliver"
    assert letter["topic"] == stack.settings.topic(t.NOTICES.name)
    assert base64.b64decode(letter["value"]) == garbage


def test_a_restarted_worker_keeps_the_directory_on_either_event_loop_and_composer(
    stack: Stack,
) -> None:
    update = {"event_loop": EventLoop.AUTO, "compose_processes": 1}
    stack.settings = stack.settings.model_copy(update=update)
    stack.start_worker()  # uvloop, a dependency wherever it builds (not on Windows)
    publish_directory(stack)
    stack.stop_worker()
    assert stack.worker is None

    # A new process, on asyncio's own loop, composing in its own thread: the directory
    # comes from its RocksDB tables.
    update = {"event_loop": EventLoop.ASYNCIO, "compose_processes": 0}
    stack.settings = stack.settings.model_copy(update=update)
    worker = stack.start_worker()
    change = dataset.dishwasher_discontinued("disc-after-restart")
    owners = expected_recipients(BY_ID, OWNED, change)
    assert cli(stack.settings, "publish", "-", stdin=jsonl([change])).returncode == 0
    wait_for_mails(stack, len(owners))
    assert recipients(stack) == emails_of(owners)
    said = re.findall(r"event loop: (\w+)", worker.log_path.read_text())
    auto = "uvloop" if find_spec("uvloop") is not None else "asyncio"
    assert said == [auto, "asyncio"]
    composed = re.findall(r"notices composed in (.+)", worker.log_path.read_text())
    assert [c.strip() for c in composed] == ["1 child process(es)", "the worker's thread"]


def test_publish_validates_every_line_and_publishes_nothing_when_one_is_bad(stack: Stack) -> None:
    good = CUSTOMERS[0].model_dump_json()
    bad = json.loads(CUSTOMERS[1].model_dump_json())
    bad["email"] = "not-an-email"
    lines = "\n".join([good, json.dumps(bad), good, "{oops"]) + "\n"

    result = cli(stack.settings, "publish", "-", stdin=lines)

    assert result.returncode == 2
    assert "line 2: CustomerUpserted.email:" in result.stderr
    assert "line 4: not valid JSON" in result.stderr
    assert "nothing published" in result.stderr
    assert read_topic(stack.settings, t.CUSTOMERS.name, 1, timeout=3) == []
