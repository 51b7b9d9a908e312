"""SMTP trouble never holds a whole worker: real broker, real worker, a faulty SMTP server.

The server (``devtools/faulty_smtp.py``, its own process) refuses chosen recipients
with 451 or 550, or drops its answer after DATA; it logs every refusal, drop and
saved mail with the time, which is what the timings below are measured on. The
recipients expected are the test's own customers, not a computation of Preaviso's.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest

from preaviso.devtools.faulty_smtp import FaultySmtpProcess, Refusal
from preaviso.devtools.worker import WorkerProcess
from preaviso.schemas.events import CustomerUpserted, OwnershipRecorded, ProductDiscontinued
from preaviso.settings import Settings
from preaviso.streams import topics as t
from preaviso.streams.lag import wait_idle
from tests.integration.conftest import Stack
from tests.integration.helpers import cli, jsonl, read_topic, records_as_json, wait_for

pytestmark = pytest.mark.integration

STREAK = 10.0
"""Seconds the 451 streak lasts, from the server's first refusal."""


@dataclass
class Rig:
    stack: Stack
    server: FaultySmtpProcess

    @property
    def settings(self) -> Settings:
        return self.stack.settings

    def log_tail(self) -> str:
        worker = self.stack.worker
        return worker.log_tail(60) if worker is not None else "(no worker)"

    def events(self, what: str, address: str | None = None) -> list[dict[str, Any]]:
        """The server's log entries of one kind, for one recipient if given."""
        return [
            e
            for e in self.server.log()
            if e["what"] == what
            and (address is None or address in e.get("recipients", [e.get("recipient")]))
        ]

    def saved_for(self, address: str) -> list[float]:
        return [e["at"] for e in self.events("saved", address)]

    def receipts(self, expect: int, timeout: float = 5) -> list[dict[str, Any]]:
        return records_as_json(read_topic(self.settings, t.RECEIPTS.name, expect, timeout))

    def dead_letters(self) -> list[dict[str, Any]]:
        return records_as_json(read_topic(self.settings, t.DEAD_LETTERS.name, 1, timeout=2))

    def parked(self) -> list[dict[str, Any]]:
        return records_as_json(read_topic(self.settings, t.NOTICES_RETRY.name, 1, timeout=2))

    def publish(self, *events: Any) -> None:
        result = cli(self.settings, "publish", "-", stdin=jsonl(events))
        assert result.returncode == 0, result.stderr

    def publish_directory(self, people: list[tuple[CustomerUpserted, OwnershipRecorded]]) -> None:
        self.publish(*(c for c, _ in people), *(o for _, o in people))
        names = [self.settings.topic(s.name) for s in t.DIRECTORY_TOPICS]
        asyncio.run(wait_idle(self.settings, names, within=90))

    def wait(self, predicate: Callable[[], bool], what: str, timeout: float = 90) -> None:
        wait_for(predicate, timeout, what, on_fail=self.log_tail)


@pytest.fixture
def rig_for(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> Iterator[Callable[..., Rig]]:
    """Start a faulty SMTP server with the given faults and a stack pointing at it."""
    rigs: list[Rig] = []

    def make(
        *,
        refusals: tuple[Refusal, ...] = (),
        drop_after_data: int = 0,
        lose_after_data: int = 0,
        refuse_sender: float = 0.0,
        **settings: Any,
    ) -> Rig:
        server = FaultySmtpProcess(
            tmp_path / "mail",
            refusals=refusals,
            drop_after_data=drop_after_data,
            lose_after_data=lose_after_data,
            refuse_sender=refuse_sender,
        )
        server.start()
        config = Settings(
            kafka_bootstrap=kafka_bootstrap,
            topic_prefix=topic_prefix,
            partitions=3,
            smtp_host=server.host,
            smtp_port=server.port,
            data_dir=tmp_path / "data",
            connect_timeout=5,
            **settings,
        )
        rig = Rig(Stack(settings=config, mail_dir=tmp_path / "mail", tmp=tmp_path), server)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.stack.stop_worker()
        rig.server.stop()


def people(prefix: str, sku: str, count: int) -> list[tuple[CustomerUpserted, OwnershipRecorded]]:
    """``count`` customers who each own ``sku``; their addresses are ``<prefix>NN@example.com``."""
    found = []
    for n in range(1, count + 1):
        cid = f"C-{prefix.upper()}{n:02d}"
        found.append(
            (
                CustomerUpserted(
                    event_id=f"cust-{cid}",
                    source="test",
                    customer_id=cid,
                    email=f"{prefix}{n:02d}@example.com",
                    name=f"Cliente {prefix} {n}",
                    region="ES-CT",
                ),
                OwnershipRecorded(
                    event_id=f"own-{cid}-{sku}",
                    source="test",
                    customer_id=cid,
                    sku=sku,
                    product_name=f"Producto {sku}",
                    purchase_date=date(2024, 5, 14),
                ),
            )
        )
    return found


def discontinued(event_id: str, sku: str) -> ProductDiscontinued:
    return ProductDiscontinued(
        event_id=event_id,
        source="test",
        skus=[sku],
        model_name=f"Modelo {sku}",
        effective_date=date(2027, 3, 1),
    )


def emails(group: list[tuple[CustomerUpserted, OwnershipRecorded]]) -> list[str]:
    return [str(c.email) for c, _ in group]


def report(name: str, **numbers: Any) -> None:
    print(f"\n{name}: " + json.dumps(numbers, default=str))


def test_a_451_streak_holds_up_only_its_own_notice(rig_for: Callable[..., Rig]) -> None:
    blocked = people("blk", "SKU-A", 1)
    others = people("oth", "SKU-B", 10)
    x = emails(blocked)[0]
    rig = rig_for(refusals=(Refusal(x, 451, STREAK),))
    rig.stack.start_worker()
    rig.publish_directory(blocked + others)

    rig.publish(discontinued("disc-a", "SKU-A"))
    rig.wait(lambda: bool(rig.events("refused", x)), "the first 451 for the blocked notice")
    streak_start = rig.events("refused", x)[0]["at"]
    # Every other notice is published only now, behind the refused one.
    rig.publish(discontinued("disc-b", "SKU-B"))

    rig.wait(lambda: all(rig.saved_for(o) for o in emails(others)), "the other mails")
    others_done = max(rig.saved_for(o)[0] for o in emails(others)) - streak_start
    rig.wait(lambda: bool(rig.saved_for(x)), "the blocked mail after its streak", timeout=120)
    blocked_done = rig.saved_for(x)[0] - streak_start
    receipts = rig.receipts(len(others) + 1)
    time.sleep(2)  # time for a duplicate to show, were there one
    report(
        "451 streak",
        streak_s=STREAK,
        others_done_s=round(others_done, 2),
        blocked_done_s=round(blocked_done, 2),
        refusals=len(rig.events("refused", x)),
    )

    assert others_done < STREAK / 2, "the other notices waited for the refused one"
    assert blocked_done >= STREAK
    assert len(rig.saved_for(x)) == 1
    assert all(len(rig.saved_for(o)) == 1 for o in emails(others))
    assert len(rig.events("refused", x)) >= 2, "the refused notice was tried again"
    assert sorted(r["recipient"] for r in receipts) == sorted([x, *emails(others)])
    assert {r["status"] for r in receipts} == {"sent"}
    assert rig.dead_letters() == []


def test_a_lasting_4xx_fails_at_the_max_age_and_a_5xx_is_rejected_at_once(
    rig_for: Callable[..., Rig],
) -> None:
    lasting, unknown = people("tmp", "SKU-A", 1), people("bad", "SKU-A", 1)
    others = people("oth", "SKU-A", 6)
    x, y = emails(lasting)[0], emails(unknown)[0]
    rig = rig_for(refusals=(Refusal(x, 451), Refusal(y, 550)), smtp_retry_max_age=5)
    rig.stack.start_worker()
    rig.publish_directory(lasting + unknown + others)

    rig.publish(discontinued("disc-a", "SKU-A"))
    receipts = rig.receipts(len(others) + 2, timeout=60)
    by_recipient = {r["recipient"]: r for r in receipts}
    time.sleep(3)  # a failed or rejected notice must not be tried again
    refusals_x = rig.events("refused", x)
    failed_after = (
        datetime.fromisoformat(by_recipient[x]["sent_at"]).timestamp() - (refusals_x[0]["at"])
    )
    report(
        "4xx past max age",
        max_age_s=5,
        failed_after_s=round(failed_after, 2),
        attempts=len(refusals_x),
        parked_records=len(rig.parked()),
    )

    assert len(receipts) == len(others) + 2
    assert by_recipient[x]["status"] == "failed"
    assert by_recipient[x]["smtp_code"] == 451
    assert "Try again later" in by_recipient[x]["smtp_reply"]
    assert 5 <= failed_after < 10
    assert len(refusals_x) >= 3
    assert by_recipient[y]["status"] == "rejected"
    assert (by_recipient[y]["smtp_code"], len(rig.events("refused", y))) == (550, 1)
    assert {by_recipient[o]["status"] for o in emails(others)} == {"sent"}
    assert rig.saved_for(x) == []
    assert rig.saved_for(y) == []
    assert {p["notice"]["recipient"] for p in rig.parked()} == {x}
    assert rig.dead_letters() == []


def test_answers_lost_after_data_deliver_every_notice_with_few_duplicates(
    rig_for: Callable[..., Rig],
) -> None:
    drops = 3
    group = people("drp", "SKU-A", 12)
    rig = rig_for(drop_after_data=drops)
    rig.stack.start_worker()
    rig.publish_directory(group)

    rig.publish(discontinued("disc-a", "SKU-A"))
    rig.wait(lambda: all(rig.saved_for(a) for a in emails(group)), "every mail")
    receipts = rig.receipts(len(group))
    time.sleep(2)
    copies = {a: len(rig.saved_for(a)) + len(rig.events("dropped", a)) for a in emails(group)}
    duplicates = sum(copies.values()) - len(group)
    report("dropped answers", drops=drops, duplicates=duplicates, mails=sum(copies.values()))

    assert all(n >= 1 for n in copies.values())
    assert duplicates <= drops
    assert len(rig.events("dropped")) == drops
    assert sorted(r["recipient"] for r in receipts) == sorted(emails(group))
    assert {r["status"] for r in receipts} == {"sent"}
    assert rig.dead_letters() == []


def test_a_stop_during_an_smtp_outage_is_quick_and_loses_nothing(
    rig_for: Callable[..., Rig],
) -> None:
    group = people("out", "SKU-A", 5)
    rig = rig_for()
    worker = rig.stack.start_worker()
    rig.publish_directory(group)
    port = rig.server.port
    rig.server.stop()  # the outage

    rig.publish(discontinued("disc-a", "SKU-A"))
    rig.wait(lambda: "SMTP not usable" in worker.log_path.read_text(), "the outage to be seen")
    time.sleep(2)
    started = time.monotonic()
    code = rig.stack.worker.stop() if rig.stack.worker else None
    rig.stack.worker = None
    took = time.monotonic() - started
    report("stop during an outage", stop_s=round(took, 2), exit_code=code)
    assert code == 0
    assert took < 10

    rig.server = FaultySmtpProcess(rig.server.out_dir, port=port)
    rig.server.start()
    rig.stack.start_worker()
    rig.wait(lambda: all(rig.saved_for(a) for a in emails(group)), "every mail after the outage")
    receipts = rig.receipts(len(group))
    time.sleep(2)
    assert all(len(rig.saved_for(a)) == 1 for a in emails(group))
    assert sorted(r["recipient"] for r in receipts) == sorted(emails(group))
    assert rig.dead_letters() == []


def test_a_worker_joins_quickly_while_another_waits_out_an_smtp_outage(
    rig_for: Callable[..., Rig],
) -> None:
    group = people("out", "SKU-A", 8)
    # Up (a joining worker's NOOP check passes) but taking no mail: an outage to deliver.
    rig = rig_for(lose_after_data=1_000_000)
    first = rig.stack.start_worker()
    rig.publish_directory(group)
    port = rig.server.port

    rig.publish(discontinued("disc-a", "SKU-A"))
    # The server takes each message and hangs up: every try may have been delivered.
    rig.wait(
        lambda: "possibly delivered twice" in first.log_path.read_text(), "the outage to be seen"
    )
    second_log = rig.stack.tmp / "worker-2.log"
    settings = rig.settings.model_copy(update={"data_dir": rig.stack.tmp / "data-2"})
    joined = time.monotonic()
    second = WorkerProcess(settings, second_log).start()
    try:
        rig.wait(lambda: "Worker]: Ready" in second_log.read_text(), "the second worker")
        took = time.monotonic() - joined
        report("join during an outage", ready_s=round(took, 2))
        assert took < 20, "the rebalance waited for the notice held in the outage"

        rig.server.stop()
        rig.server = FaultySmtpProcess(rig.server.out_dir, port=port)  # taking mail again
        rig.server.start()
        rig.wait(lambda: all(rig.saved_for(a) for a in emails(group)), "every mail")
        receipts = rig.receipts(len(group))
        time.sleep(2)
    finally:
        second.stop()
    assert all(len(rig.saved_for(a)) == 1 for a in emails(group))
    assert sorted(r["recipient"] for r in receipts) == sorted(emails(group))
    assert rig.dead_letters() == []


def test_a_parked_notice_survives_a_stop_and_a_kill_and_is_sent_once(
    rig_for: Callable[..., Rig],
) -> None:
    streak = 25.0
    blocked = people("blk", "SKU-A", 1)
    x = emails(blocked)[0]
    rig = rig_for(refusals=(Refusal(x, 451, streak),))
    rig.stack.start_worker()
    rig.publish_directory(blocked)
    rig.publish(discontinued("disc-a", "SKU-A"))
    rig.wait(lambda: len(rig.events("refused", x)) >= 2, "the parked notice to be retried")

    assert rig.stack.worker is not None
    started = time.monotonic()
    code = rig.stack.worker.stop()
    took = time.monotonic() - started
    rig.stack.worker = None
    refused = len(rig.events("refused", x))
    rig.stack.start_worker()  # the parked notice is read again from notices-retry
    rig.wait(lambda: len(rig.events("refused", x)) > refused, "a retry after the restart")
    killed_at = time.time()
    assert rig.stack.worker is not None
    rig.stack.worker.kill()  # kill -9 while the notice is parked
    rig.stack.worker = None
    rig.stack.start_worker()
    rig.wait(lambda: bool(rig.saved_for(x)), "the parked mail after its streak", timeout=150)
    receipts = rig.receipts(1)
    time.sleep(3)
    report(
        "parked across restarts",
        stop_s=round(took, 2),
        exit_code=code,
        refusals=len(rig.events("refused", x)),
        sent_after_kill_s=round(rig.saved_for(x)[0] - killed_at, 2),
    )

    assert code == 0
    assert took < 10
    assert len(rig.saved_for(x)) == 1
    assert [(r["recipient"], r["status"]) for r in rig.receipts(2, timeout=2)] == [(x, "sent")]
    assert len(receipts) == 1
    assert rig.dead_letters() == []
