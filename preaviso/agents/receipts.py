"""Receipts and ``delivered`` entries of the mails answered meanwhile, written together.

Once the server has answered, a mail needs two writes, in this order: its receipt
(the proof), then its ledger entry (so it is never sent again). Each used to be a
Kafka round trip of its own, ~0.4 ms apiece while the connection waited, more than
the SMTP transaction itself. The recorder writes, for every mail answered while the
previous group was being written, all the receipts in one go, then all the ledger
entries, then stores the entries; only then is each mail's ``record`` done.

A mail's record is never skipped: a write that fails for a transient reason goes
again (``produce.write_all``), and an entry is stored only once its changelog
record is in Kafka. What a crash loses is at most the mails answered but not yet
recorded, which deliver bounds (``deliver.resend_bound``). A stop that cannot wait
for them fails their ``record`` with ``RecorderClosed``: deliver gives those notices
back uncommitted, to be read (and, the ledger not knowing them, sent) again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from preaviso.agents.bulk import TableWrites, write_entries
from preaviso.agents.produce import Send, write_all
from preaviso.streams import keys

NOT_RECORDED = "the worker stops: this mail is not recorded"


class RecorderClosed(Exception):
    """The worker stops before this mail's receipt and ledger entry were written."""


class Place:
    """One mail's place in the unrecorded window, given back once.

    deliver takes it before the mail is sent and gives it back once the mail is recorded
    or given up. A run cut off while the recorder still writes the mail (a revoke whose
    drain ran out of time) leaves the place taken until that write settles: the mail is
    unrecorded until then, and a run started meanwhile must count it, or a crash could
    re-send more than ``deliver.resend_bound`` mails.
    """

    __slots__ = ("_held", "_window")

    def __init__(self, window: asyncio.Semaphore) -> None:
        self._window = window
        self._held = True

    def give_back(self) -> None:
        if self._held:
            self._held = False
            self._window.release()

    def keep_until(self, written: asyncio.Future[None]) -> None:
        """Given back only once ``written`` settles (recorded, failed, or the worker stops)."""
        if self._held:
            self._held = False
            written.add_done_callback(lambda _: self._window.release())


@dataclass(frozen=True, slots=True)
class _Answered:
    partition: int  # the notice's, which the ledger is co-partitioned with
    customer_key: bytes
    notice_id: str
    receipt: bytes
    done: asyncio.Future[None]


class Recorder:
    """Writes receipts to ``receipts_topic`` and their entries to the ``delivered`` table."""

    def __init__(
        self, producer: Callable[[], Any], receipts_topic: str, table: Any, partitions: int
    ) -> None:
        self._producer = producer  # the AIOKafkaProducer, once started
        self._topic = receipts_topic
        self._table = table
        self._partitions = partitions
        self._waiting: list[_Answered] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def record(
        self,
        partition: int,
        customer_key: bytes,
        notice_id: str,
        receipt: bytes,
        *,
        still_writing: Callable[[asyncio.Future[None]], None] = lambda written: None,
    ) -> None:
        """Return once the receipt and then the ledger entry are in Kafka, and the entry
        stored; ``RecorderClosed`` if the worker stops first.

        A waiter cancelled (its run cut off) leaves the write be, its group's and its own:
        ``still_writing`` then gets the future that settles once the mail is recorded or
        given up, so the mail can stay counted as unrecorded until then."""
        if self._closed:
            raise RecorderClosed(NOT_RECORDED)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Answered(partition, customer_key, notice_id, receipt, done))
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            if not done.done():
                still_writing(done)
            raise

    async def drain(self, seconds: float) -> None:
        """Give the mails answered so far ``seconds`` to be recorded (a graceful stop):
        each one recorded now is one not sent again after the restart."""
        if self._task is not None and not self._task.done():
            await asyncio.wait({self._task}, timeout=seconds)

    def close(self) -> None:
        """Stop writing for good (the worker stops): every mail not recorded yet, and any
        mail answered from now on, gets ``RecorderClosed``."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        self._fail(self._waiting, RecorderClosed(NOT_RECORDED))
        self._waiting = []

    @staticmethod
    def _fail(group: list[_Answered], exc: BaseException) -> None:
        for answered in group:
            if not answered.done.done():
                answered.done.set_exception(exc)

    async def _run(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting, []
            try:
                await self._write(group)
            except asyncio.CancelledError:  # close(): never a waiter's cancellation
                self._fail(group, RecorderClosed(NOT_RECORDED))
                raise
            except Exception as exc:  # refused for good (write_all retries the rest)
                self._fail(group, exc)
                continue
            for answered in group:
                if not answered.done.done():
                    answered.done.set_result(None)

    async def _write(self, group: list[_Answered]) -> None:
        producer = self._producer()
        receipts: list[Send] = [(self._topic, a.customer_key, a.receipt, None) for a in group]
        await write_all(producer, receipts, self._partitions)
        # The receipt is the proof: the ledger says "done" only once Kafka holds it.
        marks: dict[int, TableWrites] = {}
        for a in group:
            writes = marks.setdefault(a.partition, TableWrites(self._table, a.partition))
            writes[keys.key(a.customer_key, a.notice_id.encode())] = keys.MARK
        await write_entries(producer, marks.values(), self._partitions)
