"""deliver's own loop over a fake stream: a mail is committed only once it is recorded, and a
stop that cannot wait for its receipt gives it back instead (it is read and sent again)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from preaviso.agents import deliver
from preaviso.mail import MemoryTransport
from preaviso.schemas.records import Notice, ParkedNotice
from preaviso.settings import Settings
from preaviso.streams import keys, scan
from preaviso.streams.app import Pipeline
from preaviso.streams.codecs import decode, encode
from tests.unit.producers import GatedProducer
from tests.unit.stage_fakes import ACKED, record
from tests.unit.stores import Tables
from tests.unit.test_deliver_retry import NOTICE
from tests.unit.test_stage_batches import Stage

SETTINGS = Settings(topic_prefix="t.", smtp_connections=2, mail_from="Avisos <a@example.com>")


def a_notice(n: int) -> bytes:
    return encode(NOTICE.model_copy(update={"notice_id": f"n{n}", "customer_id": "C1"}))


class GroupAnswers:
    """deliver's reader as its fence sees it: each proof of membership waits for the test's
    answer (True accepted, False refused)."""

    def __init__(self) -> None:
        self.asked = 0
        self.answers: asyncio.Queue[bool | None] = asyncio.Queue()

    async def prove(self) -> bool | None:
        self.asked += 1
        return await self.answers.get()


class Deliver:
    """deliver as registered on a worker, its Kafka writes held until ``producer`` opens."""

    def __init__(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        settings: Settings = SETTINGS,
        store: str = "memory://",
    ) -> None:
        stages: dict[str, Any] = {}
        services: list[Any] = []

        self.group = GroupAnswers()

        def capture(p: Any, s: Any, name: str, f: Any, **_: Any) -> GroupAnswers:
            stages[name] = f
            return self.group  # deliver's reader, as its fence asks it

        monkeypatch.setattr(deliver, "run_stage", capture)
        monkeypatch.setattr(deliver, "read_stage", capture)
        monkeypatch.setattr(deliver, "RECORD_ON_STOP", 0.05)
        self.producer = GatedProducer(gated=settings.topic("receipts"))
        self.tables = Tables(store, tmp_path)
        self.table = self.tables.table("delivered")
        app = SimpleNamespace(
            producer=SimpleNamespace(_ensure_producer=lambda: self.producer),
            service=services.append,
            flow_control=SimpleNamespace(is_active=lambda: True),  # records flow
        )
        pipe = Pipeline(settings=settings, app=app, tables={"delivered": self.table})
        self.smtp = MemoryTransport()
        deliver.register(pipe, self.smtp)
        [self.pool] = services
        handlers: dict[int, Any] = {}

        async def handle(outbox: Any, event: Any) -> Any:
            found = handlers.setdefault(id(outbox), stages["deliver"](outbox))
            return await found(event)

        self._handle = handle
        self.stage = Stage(handle)

        async def handle_retry(outbox: Any, event: Any) -> Any:
            found = handlers.setdefault(id(outbox), stages["deliver-retry"](outbox))
            return await found(event)

        self.retry_stage = Stage(handle_retry)

    def next_run(self) -> Stage:
        """deliver's loop read again, as after a revoke whose drain ran out of time."""
        return Stage(self._handle)

    async def stop_worker(self) -> None:
        await self.pool.on_stop(None)  # SmtpPool's: the worker stops

    def recorded(self, notice_id: str) -> bool:
        return scan.read(self.table, 0, keys.key(b"C1", notice_id.encode())) is not None


@pytest.fixture
def worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Deliver:
    ACKED.clear()
    return Deliver(tmp_path, monkeypatch)


async def test_the_ledger_is_read_in_the_store_of_the_notices_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RocksDB keeps a store per partition: a notice read again on partition 1 is known by
    the entry there, and an entry for it in another partition's store is not its own."""
    ACKED.clear()
    worker = Deliver(tmp_path, monkeypatch, store="rocksdb://")
    worker.producer.opened.set()
    worker.tables.put(worker.table, 1, keys.key(b"C1", b"n1"), keys.MARK)
    worker.tables.put(worker.table, 0, keys.key(b"C1", b"n2"), keys.MARK)
    worker.stage.feed.put(record(0, a_notice(1), partition=1), record(1, a_notice(2), partition=1))
    worker.stage.start()
    await worker.stage.until(lambda: len(ACKED) == 2)
    await worker.stage.stop()

    assert len(worker.smtp.sent) == 1
    assert scan.read(worker.table, 1, keys.key(b"C1", b"n2")) == keys.MARK  # n2 went


async def test_a_mail_is_committed_once_its_receipt_and_entry_are_written(worker: Deliver) -> None:
    worker.stage.feed.put(record(0, a_notice(0)))
    worker.stage.start()
    await worker.stage.until(lambda: len(worker.smtp.sent) == 1)
    await asyncio.sleep(0.05)
    assert ACKED == []  # sent, not recorded: not committed

    worker.producer.opened.set()
    await worker.stage.until(lambda: ACKED == [(0, 0)])
    await worker.stage.stop()

    assert worker.recorded("n0")


async def test_a_stop_that_cannot_record_a_sent_mail_gives_it_back_uncommitted(
    worker: Deliver,
) -> None:
    worker.stage.feed.put(record(0, a_notice(0)), record(1, a_notice(1)))
    worker.stage.start()
    await worker.stage.until(lambda: len(worker.smtp.sent) == 2)

    await worker.stop_worker()  # Kafka never answers: the receipts cannot be written
    await worker.stage.until(lambda: worker.stage.loop.held == 0)
    await worker.stage.stop()

    assert ACKED == []  # both are read again after the restart, and sent again
    assert not worker.recorded("n0")
    assert not worker.recorded("n1")


@pytest.mark.parametrize(
    ("window", "sent_unrecorded"), [(None, 14), (7, 11)], ids=["default-window", "window-of-7"]
)
async def test_no_more_mails_go_out_unrecorded_than_a_crash_may_send_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, window: int | None, sent_unrecorded: int
) -> None:
    """The resend bound: 2 connections, two mails in flight on each, and the window (by
    default 6 a connection less that overlap) answered while Kafka holds their receipts
    back. Past that, deliver waits: a crash now re-sends at most 4 + the window mails."""
    ACKED.clear()
    settings = SETTINGS.model_copy(update={"smtp_unrecorded_max": window})
    worker = Deliver(tmp_path, monkeypatch, settings)
    worker.stage.feed.put(*(record(n, a_notice(n)) for n in range(20)))
    worker.stage.start()
    await worker.stage.until(lambda: len(worker.smtp.sent) == sent_unrecorded)
    await asyncio.sleep(0.1)
    assert len(worker.smtp.sent) == sent_unrecorded == deliver.resend_bound(settings)

    worker.producer.opened.set()
    await worker.stage.until(lambda: len(ACKED) == 20)
    await worker.stage.stop()

    assert len(worker.smtp.sent) == 20
    assert all(worker.recorded(f"n{n}") for n in range(20))


async def test_a_run_cut_off_while_its_mails_are_recorded_keeps_their_place_in_the_window(
    worker: Deliver,
) -> None:
    """A revoke whose drain runs out of time cancels the run while Kafka holds the receipts
    back. The mails it sent are still being recorded: until that write settles they are
    unrecorded, so the next run may not send any more, or a crash then would re-send
    more than ``resend_bound`` mails."""
    bound = deliver.resend_bound(SETTINGS)
    worker.stage.feed.put(*(record(n, a_notice(n)) for n in range(20)))
    worker.stage.start()
    await worker.stage.until(lambda: len(worker.smtp.sent) == bound)
    await worker.stage.stop()  # cut off: nothing acked, every record is read again

    again = worker.next_run()
    again.feed.put(*(record(n, a_notice(n)) for n in range(20, 40)))
    again.start()
    await asyncio.sleep(0.1)
    assert len(worker.smtp.sent) == bound  # still `bound` unrecorded: the new run waits

    worker.producer.opened.set()  # the first run's mails are recorded, then the new run's
    await again.until(lambda: len(ACKED) == 20)
    await again.stop()

    assert len(worker.smtp.sent) == bound + 20
    assert all(worker.recorded(f"n{n}") for n in [*range(bound), *range(20, 40)])


CONNECTIONS = (1, 2, 3, 4, 5, 8, 12, 16, 24, 32)


def test_the_resend_bound_is_seven_a_connection_within_24_more_and_twice_them() -> None:
    """Without pipelining: one mail in flight a connection, six answered ones each."""
    plain = [Settings(smtp_connections=c, smtp_pipelining=False) for c in CONNECTIONS]
    assert [deliver.resend_bound(s) for s in plain] == [7, 14, 21, 28, 29, 32, 36, 40, 48, 64]


def test_overlapping_mails_leave_the_bound_as_it_was() -> None:
    """Two mails in flight a connection up to 12 connections (the default), one answered
    one less each; past 12, one mail a connection as without pipelining."""
    bounds = [deliver.resend_bound(Settings(smtp_connections=c)) for c in CONNECTIONS]
    assert bounds == [7, 14, 21, 28, 29, 32, 36, 40, 48, 64]


def test_the_unrecorded_window_set_replaces_the_default_in_the_bound() -> None:
    windows = [Settings(smtp_connections=c, smtp_unrecorded_max=12) for c in (1, 4, 16)]
    assert [deliver.resend_bound(w) for w in windows] == [14, 20, 28]


async def test_a_mail_whose_recording_fails_is_recorded_again_never_sent_again(
    worker: Deliver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server took the mail; a failed write of its receipt or entry (here the store)
    is tried again until it works. Handled again, the notice would be mailed again."""
    monkeypatch.setattr(deliver, "backoff", lambda attempt: 0.0)
    failures = [OSError("no space left on device"), OSError("no space left on device")]
    store = scan.write

    def write(*args: Any) -> None:
        if failures:
            raise failures.pop(0)
        store(*args)

    monkeypatch.setattr(scan, "write", write)
    worker.producer.opened.set()
    worker.stage.feed.put(record(0, a_notice(0)))
    worker.stage.start()
    await worker.stage.until(lambda: ACKED == [(0, 0)])
    await worker.stage.stop()

    assert failures == []
    assert len(worker.smtp.sent) == 1
    assert worker.recorded("n0")


async def test_a_parked_notice_sent_again_takes_its_place_in_the_unrecorded_window(
    worker: Deliver,
) -> None:
    """deliver-retry's mail counts against the same bound as deliver's: with the window full
    (Kafka holding the receipts back), the parked notice waits, so a crash now still
    re-sends no more than ``resend_bound`` mails."""
    bound = deliver.resend_bound(SETTINGS)
    worker.stage.feed.put(*(record(n, a_notice(n)) for n in range(20)))
    worker.stage.start()
    await worker.stage.until(lambda: len(worker.smtp.sent) == bound)

    due = datetime.now(UTC) - timedelta(seconds=1)
    notice = decode(Notice, a_notice(99))
    parked = ParkedNotice(
        notice=notice, first_attempt_at=due, attempts=1, not_before=due, last_code=451,
        last_reply="try again later",
    )  # fmt: skip
    worker.retry_stage.feed.put(record(0, encode(parked)))
    worker.retry_stage.start()
    await asyncio.sleep(0.1)
    assert len(worker.smtp.sent) == bound  # the window is full: the parked notice waits

    worker.producer.opened.set()
    await worker.stage.until(lambda: worker.recorded("n99") and len(ACKED) == 21)
    await worker.stage.stop()
    await worker.retry_stage.stop()

    assert len(worker.smtp.sent) == 21
