"""Deliver stages: send notices over pooled SMTP connections, record a receipt for each.

deliver (topic ``notices``) tries each notice once. A temporary refusal (4xx) is
the one notice's trouble, so it must not hold up the notices behind it: deliver
parks the notice on ``notices-retry`` (with the time of its first attempt) and
moves on. deliver-retry (topic ``notices-retry``) waits until a parked notice is
due, tries it again, and parks it again, until it is sent (``sent`` receipt),
refused for good (5xx: ``rejected``) or older than ``PREAVISO_SMTP_RETRY_MAX_AGE``
(``failed``). Every attempt is preceded by a look at the ``delivered`` ledger, so
parking never sends a notice twice.

An unreachable server, a timeout, refused credentials or a refused sender (a 5xx to
EHLO or MAIL FROM: the configuration) are not one notice's trouble: both stages then
wait with the notice in hand (nothing acked) and try it again, for as long as it
takes, but let go of it when the worker stops.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import mode

from preaviso.agents import hold, ledger
from preaviso.agents.answers import RETRY_MAX_DELAY, after_refusal, receipt_for
from preaviso.agents.fence import Fence, stall_limit
from preaviso.agents.outbox import failure_name
from preaviso.agents.reader import read_stage
from preaviso.agents.receipts import Place, Recorder, RecorderClosed
from preaviso.agents.stage import Beside, EventHandler, Outbox, run_stage
from preaviso.mail import (
    SmtpAuthenticationError,
    SmtpPermanentError,
    SmtpSenderRefusedError,
    SmtpTemporaryError,
    SmtpTimeoutError,
    SmtpTransport,
    SmtpUnconfirmedError,
    SmtpUnreachableError,
    Transport,
    TransportError,
    sender_address,
)
from preaviso.mail.transport import sends_at_once
from preaviso.schemas.records import DeliveryReceipt, DeliveryStatus, Notice, ParkedNotice
from preaviso.settings import Settings
from preaviso.streams import topics as t
from preaviso.streams.app import Pipeline
from preaviso.streams.codecs import decode, encode

log = logging.getLogger("preaviso.deliver")

OUTAGE_MAX_DELAY = 30.0
"""Longest wait between two tries while the SMTP server cannot be used."""
RECORD_ON_STOP = 5.0
"""Seconds a stopping worker gives the receipts of mails already answered to be written."""

Pause = Callable[[float], Awaitable[bool]]
"""Sleep that many seconds; False if the worker stops (or rebalances) meanwhile."""


def backoff(attempt: int, cap: float = OUTAGE_MAX_DELAY) -> float:
    """Exponential backoff with full jitter, so retries from many notices do not align."""
    return random.uniform(0, min(cap, 0.5 * 2**attempt))


RECORDING_PER_CONNECTION = 6
"""Answered mails per connection that may wait for their receipt at once, by default.
Recording a group takes two Kafka round trips, 2-6 ms on a busy 2-core machine, the
time of several SMTP transactions. A wider window makes the groups larger, so fewer
produce requests a mail for the worker and the broker: with three a connection (stop
18 to 20) 0.70x the bare sender at 4 connections and 0.82x at 1, against 0.75x and
0.94x with six, 3-runs side by side (docs/benchmarks.md, stop 21)."""
RECORDING_CAP = 24
"""The default stops growing there (more connections get as many as they are): past
it the connections alone keep enough mails in the window."""


def unrecorded_window(settings: Settings) -> int:
    """``PREAVISO_SMTP_UNRECORDED_MAX``, or by default six a connection, at most 24, less
    the second mail overlapping connections carry, never fewer than the connections: the
    overlap does not widen a crash's bound."""
    if settings.smtp_unrecorded_max is not None:
        return settings.smtp_unrecorded_max
    connections = settings.smtp_connections
    overlap = sends_at_once(settings) - connections
    default = min(RECORDING_PER_CONNECTION * connections, RECORDING_CAP) - overlap
    return max(connections, default)


def resend_bound(settings: Settings) -> int:
    """Most mails one crash can send again: those in flight on the connections (two a
    connection when its server lets them overlap), and those answered whose ledger entry
    is not in Kafka yet (``receipts.Recorder``), as many as ``unrecorded_window``.
    deliver-retry's mails take their place in the same window."""
    return sends_at_once(settings) + unrecorded_window(settings)


class Interrupted(Exception):
    """The worker stops or rebalances while a notice waits for the SMTP server."""


async def _sleep(seconds: float) -> bool:
    await asyncio.sleep(seconds)
    return True


async def send_notice(
    transport: Transport, settings: Settings, notice: Notice, pause: Pause = _sleep
) -> DeliveryReceipt:
    """Try one notice: a ``sent`` receipt, or ``rejected`` for a 5xx; a 4xx is raised.

    ``SmtpTemporaryError`` (4xx) is for the caller to park. While the server
    cannot be used (unreachable, timing out, refusing the credentials or the sender) the same
    notice is tried again with backoff, for as long as it takes: the stage holds
    it unacked, so it is not lost. ``pause`` does the waiting; when it says the
    worker stops, ``Interrupted`` is raised. Cancellation is never caught.
    """
    sender = sender_address(settings.mail_from)
    attempt = unconfirmed = 0
    while True:
        try:
            reply = await transport.send(sender, [notice.recipient], notice.mime.encode("ascii"))
            return receipt_for(notice, DeliveryStatus.SENT, reply.code, reply.message)
        except SmtpPermanentError as exc:
            return receipt_for(notice, DeliveryStatus.REJECTED, exc.code, exc.reply)
        except SmtpTemporaryError:
            raise
        except SmtpUnconfirmedError as exc:
            # Never given up on (the server may have lost it); each try may be a duplicate.
            unconfirmed += 1
            log.warning(
                "notice %s possibly delivered twice (unconfirmed %d), retrying: %s",
                notice.notice_id,
                unconfirmed,
                exc,
            )
        except (
            SmtpUnreachableError,
            SmtpTimeoutError,
            SmtpAuthenticationError,
            SmtpSenderRefusedError,
        ) as exc:
            # The server, not this notice, is at fault: wait for it rather than give up.
            log.warning("SMTP not usable, retrying: %s", exc)
        except TransportError as exc:  # only a closed transport is left: the worker stops
            raise Interrupted(str(exc)) from exc
        attempt += 1
        if not await pause(backoff(min(attempt, 10))):
            raise Interrupted("the worker stops while the SMTP server cannot be used")


class OneAtATime:
    """Notice ids being sent right now, so deliver and deliver-retry never send one together.

    Both stages run in the same worker for a partition, and both look at the
    ledger first; this closes the gap between that look and the ledger write.
    (Two copies of one notice in flight only happen after a crash: the original
    re-read while its parked copy is retried.)
    """

    def __init__(self, pause: Pause) -> None:
        self._pause = pause
        self._busy: set[str] = set()

    @asynccontextmanager
    async def only(self, notice_id: str) -> AsyncIterator[None]:
        while notice_id in self._busy:
            if not await self._pause(hold.FLOW_POLL):
                raise Interrupted("the worker stops while the other stage sends this notice")
        self._busy.add(notice_id)
        try:
            yield
        finally:
            self._busy.discard(notice_id)


def register(pipe: Pipeline, transport: Transport | None = None) -> None:
    delivered = pipe.tables["delivered"]
    settings = pipe.settings
    app = pipe.app
    smtp: Transport = transport or SmtpTransport.from_settings(settings)

    async def pause(seconds: float) -> bool:
        return await hold.pause(app, seconds)

    sending = OneAtATime(pause)

    async def prove() -> bool | None:
        return await reader.prove()  # deliver's reader commits through the worker's group

    # A stall longer than a heartbeat interval may have cost the session (docs/reliability.md).
    fence = Fence(prove, stall=stall_limit(settings.kafka_heartbeat_interval))

    async def fenced_pause(seconds: float) -> bool:
        """``pause``, then the fence: a mail tried again after an outage goes only once
        the group confirmed the partitions, should the worker have stood still meanwhile."""
        return await pause(seconds) and await fence.cleared(pause)

    recorder = Recorder(
        app.producer._ensure_producer,
        pipe.topic_name(t.RECEIPTS),
        delivered,
        settings.partitions,
    )

    async def attempt(
        outbox: Outbox,
        event: Any,
        notice: Notice,
        first_attempt_at: datetime | None,
        attempts: int,
        place: Place,
        answered: Callable[[], None] = lambda: None,
    ) -> None:
        """Try the notice unless the ledger has it; then a receipt, or park it (again).

        ``first_attempt_at`` is None on the first attempt: its time is then that of
        the server's answer, so an outage waited out before it does not count
        against the notice's age (after a long outage, greylisting must not fail
        every notice at once).

        The receipt and the ledger entry are written as soon as the server has
        answered, not at the batch's flush, together with those of the other mails
        answered meanwhile (``receipts.Recorder``). ``answered`` is called once the
        server has answered: the connection takes the next mail while this one is
        recorded. A crash re-sends only the mails whose ledger entry Kafka did not
        hold: those in flight and those being recorded, which ``deliver`` bounds.
        """
        key, partition = notice.customer_id.encode(), event.message.partition
        async with sending.only(notice.notice_id):
            if ledger.contains(delivered, key, notice.notice_id, partition=partition):
                return  # sent or settled before (a restart re-read it): not twice
            if not outbox.claim(notice.notice_id, event=event):
                return  # sent a moment ago, its ledger entry not written yet
            if not fence.is_open() and not await fence.cleared(pause):
                raise Interrupted("the worker stood still; its partitions may be another's")
            try:
                receipt = await send_notice(smtp, settings, notice, fenced_pause)
            except SmtpTemporaryError as refusal:
                answered()
                now = datetime.now(UTC)
                first = first_attempt_at or now
                outcome = after_refusal(
                    notice,
                    refusal,
                    first_attempt_at=first,
                    attempts=attempts,
                    now=now,
                    max_age=settings.smtp_retry_max_age,
                )
                if isinstance(outcome, ParkedNotice):
                    log.info(
                        "notice %s refused %d on attempt %d; parked until %s",
                        notice.notice_id,
                        refusal.code,
                        attempts,
                        outcome.not_before.isoformat(timespec="seconds"),
                    )
                    # Same partition as the notice: co-partitioned with the ledger.
                    await outbox.send(t.NOTICES_RETRY, key, encode(outcome), partition, event=event)
                    return  # written before this record is released (the stage flushes)
                log.warning(
                    "notice %s refused %d on attempt %d, %.0fs after the first: failed",
                    notice.notice_id,
                    refusal.code,
                    attempts,
                    (outcome.sent_at - first).total_seconds(),
                )
                receipt = outcome
            answered()
            await record(partition, key, notice.notice_id, encode(receipt), place)

    async def record(
        partition: int, key: bytes, notice_id: str, receipt: bytes, place: Place
    ) -> None:
        """Record an answered mail until Kafka holds it: a failed write is tried again,
        never the mail (handled again, the stage would send it again, once per failure).
        The mail keeps its place in the unrecorded window meanwhile."""
        failures = 0
        while True:
            try:
                await recorder.record(
                    partition, key, notice_id, receipt, still_writing=place.keep_until
                )
                return
            except RecorderClosed:
                raise
            except Exception as exc:  # Kafka refused it, or timed out: the mail is sent
                failures += 1
                delay = backoff(min(failures, 10))
                log.warning(
                    "recording notice %s failed (%s); again in %.1fs, not sent again",
                    notice_id,
                    failure_name(exc),
                    delay,
                )
                if not await pause(delay):
                    stopping = "the worker stops while a sent mail waits to be recorded"
                    raise Interrupted(stopping) from exc

    slots = asyncio.Semaphore(sends_at_once(settings))
    bound = resend_bound(settings)
    unrecorded = asyncio.Semaphore(bound)

    def deliver(outbox: Outbox) -> EventHandler:
        """Up to ``sends_at_once`` notices in flight: one a connection, or two when its
        server lets mails overlap (``mail/smtp_client.py``).

        The loop goes on to the next notice while one is sent; a notice is released
        (and its offset may be committed) once it and every notice before it on its
        partition is done, so a slow one delays commits, never other sends. A
        connection takes its next notice while the last one's receipt is written,
        but at most ``resend_bound`` notices are sent or being sent without their
        ledger entry in Kafka: a crash sends no more than that again.
        """

        async def handle(event: Any) -> Beside:
            notice = decode(Notice, event.message.value)
            await unrecorded.acquire()
            try:
                await slots.acquire()
            except BaseException:  # cancelled while waiting for a connection (a stop)
                unrecorded.release()
                raise
            return in_flight(outbox, event, notice)

        return handle

    async def in_flight(outbox: Outbox, event: Any, notice: Notice) -> None:
        """One notice beside the loop; its connection is free again once the server answered."""
        holding = True
        place = Place(unrecorded)  # taken in ``handle``

        def answered() -> None:
            nonlocal holding
            if holding:
                holding = False
                slots.release()

        try:
            await attempt(outbox, event, notice, None, 1, place, answered)
        except (Interrupted, RecorderClosed):
            hold.give_back(event)
        finally:
            answered()
            place.give_back()

    def deliver_retry(outbox: Outbox) -> EventHandler:
        async def handle(event: Any) -> None:
            parked = decode(ParkedNotice, event.message.value)
            notice = parked.notice
            key, partition = notice.customer_id.encode(), event.message.partition
            if ledger.contains(delivered, key, notice.notice_id, partition=partition):
                return  # done meanwhile (a copy of it was sent): no need to wait
            wait = (parked.not_before - datetime.now(UTC)).total_seconds()
            stopping = "the worker stops while a parked notice waits"
            try:
                if not await pause(min(wait, RETRY_MAX_DELAY)):
                    raise Interrupted(stopping)
                await unrecorded.acquire()  # deliver's window counts this mail too
                place = Place(unrecorded)
                try:
                    if not hold.flowing(app):  # a stop or rebalance came while it waited
                        raise Interrupted(stopping)
                    await attempt(
                        outbox, event, notice, parked.first_attempt_at, parked.attempts + 1, place
                    )
                finally:
                    place.give_back()
            except (Interrupted, RecorderClosed):
                await hold.let_go(app, event)

        return handle

    # Read by a plain consumer: Faust's streams cost more than deliver's own work.
    reader = read_stage(pipe, t.NOTICES, "deliver", deliver)
    # One parked notice at a time: its wait holds the stage, so nothing else may be held.
    run_stage(pipe, t.NOTICES_RETRY, "deliver-retry", deliver_retry, batch_max=1)

    class SmtpPool(mode.Service):
        """Says how the worker sends; closes the pooled SMTP connections when it stops."""

        async def on_start(self) -> None:
            fence.start()
            log.info(
                "mails sent over %d SMTP connection(s), %d at once at most, %d answered at "
                "most awaiting their receipt: a crash re-sends at most %d",
                settings.smtp_connections,
                sends_at_once(settings),
                unrecorded_window(settings),
                bound,
            )

        async def on_stop(self) -> None:
            fence.close()
            await recorder.drain(RECORD_ON_STOP)
            recorder.close()
            await smtp.aclose()

    pipe.app.service(SmtpPool)
