"""Parking a refused notice, without a broker: retry schedule, age limit, receipts, waits."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from mode.utils.queues import FlowControlEvent

from preaviso.agents import deliver, hold
from preaviso.agents.answers import RETRY_MAX_DELAY, after_refusal, retry_delay
from preaviso.agents.deliver import Interrupted, OneAtATime, send_notice
from preaviso.mail import (
    MemoryTransport,
    SmtpReplyError,
    SmtpSenderRefusedError,
    SmtpUnconfirmedError,
)
from preaviso.schemas.records import DeliveryReceipt, DeliveryStatus, Notice, ParkedNotice
from preaviso.settings import Settings
from preaviso.streams.codecs import decode, encode

SETTINGS = Settings(mail_from="Avisos <avisos@example.com>")
NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
DAY = 86400.0
REFUSED = SmtpReplyError.from_reply(451, "4.7.1 Greylisted, try later", command="RCPT")


NOTICE = Notice(
    event_id="notice-1",
    notice_id="8d7f1e52-4f0a-5b7e-9c1d-0a2b3c4d5e6f",
    customer_id="C-1001",
    cause_event_id="disc-1",
    recipient="ana@example.com",
    locale="es",
    subject="Su WM-800 deja de fabricarse",
    message_id="<8d7f1e52@preaviso.example.com>",
    mime="Subject: Su WM-800\r\n\r\nHola Ana\r\n",
)


def refusal_after(first: datetime, attempts: int, now: datetime, max_age: float = DAY) -> object:
    return after_refusal(
        NOTICE,
        REFUSED,
        first_attempt_at=first,
        attempts=attempts,
        now=now,
        max_age=max_age,
        rng=random.Random(7),
    )


# --- The retry schedule ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempts", "low", "high"),
    [(1, 0.5, 1), (2, 1, 2), (3, 2, 4), (6, 16, 32), (7, 30, 60), (50, 30, 60)],
)
def test_the_wait_after_a_4xx_doubles_from_one_second_to_a_minute(
    attempts: int, low: float, high: float
) -> None:
    rng = random.Random(attempts)
    delays = [retry_delay(attempts, rng) for _ in range(200)]
    assert low <= min(delays)
    assert max(delays) <= high
    assert max(delays) - min(delays) > (high - low) / 4, "jittered, not fixed"


def test_the_wait_never_exceeds_the_cap_so_parked_notices_queue_briefly() -> None:
    assert max(retry_delay(n) for n in range(1, 10_000, 7)) <= RETRY_MAX_DELAY


# --- After a 4xx: park again, or fail at the age limit ----------------------------------


def test_a_young_notice_is_parked_with_its_first_attempt_and_the_refusal() -> None:
    first = NOW - timedelta(seconds=30)
    parked = refusal_after(first, attempts=3, now=NOW)

    assert isinstance(parked, ParkedNotice)
    assert parked.notice == NOTICE
    assert parked.first_attempt_at == first
    assert parked.attempts == 3
    assert NOW + timedelta(seconds=2) <= parked.not_before <= NOW + timedelta(seconds=4)
    assert (parked.last_code, parked.last_reply) == (451, "4.7.1 Greylisted, try later")
    assert decode(ParkedNotice, encode(parked)) == parked


def test_the_limit_is_the_age_not_the_number_of_tries() -> None:
    many_tries = refusal_after(NOW - timedelta(minutes=5), attempts=5000, now=NOW)
    one_old_try = refusal_after(NOW - timedelta(seconds=DAY), attempts=1, now=NOW)

    assert isinstance(many_tries, ParkedNotice)
    assert isinstance(one_old_try, DeliveryReceipt)


def test_past_the_max_age_the_last_refusal_is_final_a_failed_receipt() -> None:
    receipt = refusal_after(NOW - timedelta(seconds=5), attempts=4, now=NOW, max_age=5)

    assert isinstance(receipt, DeliveryReceipt)
    assert receipt.status is DeliveryStatus.FAILED
    assert (receipt.smtp_code, receipt.smtp_reply) == (451, "4.7.1 Greylisted, try later")
    assert receipt.sent_at == NOW
    assert (receipt.notice_id, receipt.recipient) == (NOTICE.notice_id, "ana@example.com")
    assert decode(DeliveryReceipt, encode(receipt)).status is DeliveryStatus.FAILED


def test_the_last_try_is_due_right_at_the_max_age_not_after_it() -> None:
    first = NOW - timedelta(seconds=4)
    parked = refusal_after(first, attempts=9, now=NOW, max_age=5)  # a wait of 30 s or more

    assert isinstance(parked, ParkedNotice)
    assert parked.not_before == first + timedelta(seconds=5)
    assert isinstance(refusal_after(first, 10, parked.not_before, max_age=5), DeliveryReceipt)


def test_the_max_age_setting_must_be_positive_and_defaults_to_a_day() -> None:
    assert Settings().smtp_retry_max_age == DAY
    with pytest.raises(ValueError, match="greater than 0"):
        Settings(smtp_retry_max_age=0)


# --- Waiting out an outage: interruptible, never swallowing cancellation -----------------


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deliver, "backoff", lambda attempt: 0.0)


async def test_an_outage_is_waited_for_until_the_worker_stops() -> None:
    transport = MemoryTransport()
    transport.unreachable = True
    pauses: list[float] = []

    async def pause(seconds: float) -> bool:
        pauses.append(seconds)
        return len(pauses) < 3  # the third wait sees the worker stopping

    with pytest.raises(Interrupted):
        await send_notice(transport, SETTINGS, NOTICE, pause)
    assert len(pauses) == 3
    assert transport.sent == []


async def test_a_refused_sender_is_waited_for_like_an_outage_not_settled_as_rejected() -> None:
    """Every notice would get the same 5xx to MAIL FROM: rejecting them all would tell no
    customer. deliver waits for the configuration to be fixed, the notice in hand."""

    class RefusesTheSender(MemoryTransport):
        async def send(self, sender: str, recipients: Sequence[str], message: bytes) -> Any:
            raise SmtpSenderRefusedError(550, "5.7.1 Relaying denied", command="MAIL")

    pauses: list[float] = []

    async def pause(seconds: float) -> bool:
        pauses.append(seconds)
        return len(pauses) < 3

    with pytest.raises(Interrupted):
        await send_notice(RefusesTheSender(), SETTINGS, NOTICE, pause)
    assert len(pauses) == 3


async def test_an_unconfirmed_send_is_tried_again_and_each_possible_duplicate_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server got the message and its answer was lost: it may have lost the message
    too, so it is sent again (never given up on), and the log counts the copies that may
    have reached the customer."""
    lost: list[bytes] = []

    class LosesTheAnswerTwice(MemoryTransport):
        async def send(self, sender: str, recipients: Sequence[str], message: bytes) -> Any:
            if len(lost) < 2:
                lost.append(message)
                raise SmtpUnconfirmedError("the connection closed after the message")
            return await super().send(sender, recipients, message)

    transport = LosesTheAnswerTwice()
    with caplog.at_level(logging.WARNING, logger="preaviso.deliver"):
        receipt = await send_notice(transport, SETTINGS, NOTICE)

    assert receipt.status is DeliveryStatus.SENT
    assert len(lost) == 2
    assert len(transport.sent) == 1
    counted = [
        r.getMessage() for r in caplog.records if "possibly delivered twice" in r.getMessage()
    ]
    assert [("unconfirmed 1" in m, "unconfirmed 2" in m) for m in counted] == [
        (True, False),
        (False, True),
    ]
    assert all(NOTICE.recipient not in m for m in counted)  # no PII in logs


async def test_cancelling_the_outage_wait_cancels_the_send() -> None:
    transport = MemoryTransport()
    transport.unreachable = True
    sending = asyncio.ensure_future(send_notice(transport, SETTINGS, NOTICE))
    for _ in range(20):
        await asyncio.sleep(0)

    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending
    assert sending.cancelled()


async def test_a_closed_transport_means_the_worker_stops_not_a_bad_notice() -> None:
    transport = MemoryTransport()
    await transport.aclose()

    with pytest.raises(Interrupted):
        await send_notice(transport, SETTINGS, NOTICE)


async def test_one_notice_is_never_sent_by_both_stages_at_once() -> None:
    async def pause(seconds: float) -> bool:
        await asyncio.sleep(0)
        return True

    guard = OneAtATime(pause)
    order: list[str] = []

    async def send(who: str) -> None:
        async with guard.only("n-1"):
            order.append(f"{who} in")
            await asyncio.sleep(0.01)
            order.append(f"{who} out")

    await asyncio.gather(send("deliver"), send("deliver-retry"))
    assert order == ["deliver in", "deliver out", "deliver-retry in", "deliver-retry out"]


async def test_waiting_for_the_other_stage_ends_when_the_worker_stops() -> None:
    calls = 0

    async def pause(seconds: float) -> bool:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        return calls < 3

    guard = OneAtATime(pause)
    async with guard.only("n-1"):
        with pytest.raises(Interrupted):
            async with guard.only("n-1"):
                pass


# --- hold: waits that end when Faust suspends the flow ------------------------------------


def an_app(flowing: bool = True) -> SimpleNamespace:
    flow = FlowControlEvent(initially_suspended=not flowing)
    return SimpleNamespace(flow_control=flow)


async def test_pause_sleeps_the_whole_time_while_records_flow() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await hold.pause(an_app(), 0.3) is True
    assert loop.time() - started >= 0.3


async def test_pause_ends_early_when_the_flow_is_suspended() -> None:
    app = an_app()
    loop = asyncio.get_running_loop()
    loop.call_later(0.1, app.flow_control.suspend)
    started = loop.time()

    assert await hold.pause(app, 60) is False
    assert loop.time() - started < 0.1 + 2 * hold.FLOW_POLL


async def test_let_go_releases_the_record_then_waits_for_the_flow() -> None:
    app = an_app(flowing=False)
    event = SimpleNamespace(message=SimpleNamespace(acked=False))
    letting_go = asyncio.ensure_future(hold.let_go(app, event))
    await asyncio.sleep(0.05)

    assert event.message.acked is True  # Faust no longer waits for it ...
    assert not letting_go.done()  # ... and the stage takes nothing until the flow resumes
    app.flow_control.resume()
    await asyncio.wait_for(letting_go, 1)


async def test_let_go_during_a_stop_ends_by_cancellation() -> None:
    app = an_app(flowing=False)
    event = SimpleNamespace(message=SimpleNamespace(acked=False))
    letting_go = asyncio.ensure_future(hold.let_go(app, event))
    await asyncio.sleep(0.05)

    letting_go.cancel()
    with pytest.raises(asyncio.CancelledError):
        await letting_go
