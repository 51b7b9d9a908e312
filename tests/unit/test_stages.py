"""What the notify and deliver stages do with one record, without a broker or a server."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime
from email import message_from_bytes, policy
from types import SimpleNamespace

import pytest

from preaviso.agents import deliver
from preaviso.agents.dead_letters import dead_letter_for
from preaviso.agents.deliver import send_notice
from preaviso.audience import discontinuation_impacts, owned_product
from preaviso.compose import compose_notice
from preaviso.devtools import dataset
from preaviso.mail import MemoryTransport, SmtpTemporaryError
from preaviso.render import Renderer
from preaviso.schemas.records import DeliveryStatus, Impact, Notice
from preaviso.settings import Settings
from preaviso.streams.codecs import DecodeError, decode, decode_expected, encode

SETTINGS = Settings(
    message_id_domain="notices.example.com", mail_from="Avisos <avisos@example.com>"
)
PEOPLE, OWNED = dataset.directory(40)
NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def a_notice() -> Notice:
    ownership = next(o for o in OWNED if o.sku == "DW400-W")
    customer = next(c for c in PEOPLE if c.customer_id == ownership.customer_id)
    record = next(
        discontinuation_impacts(
            dataset.dishwasher_discontinued(),
            "DW400-W",
            [(ownership.customer_id, owned_product(ownership))],
        )
    )
    impact = decode(Impact, record.value)
    return compose_notice(impact, customer, Renderer("Example Appliances"), SETTINGS, NOW)


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deliver, "backoff", lambda attempt: 0.0)


def test_a_notice_is_a_complete_mail_with_a_deterministic_message_id() -> None:
    notice = a_notice()
    again = a_notice()
    mail = message_from_bytes(notice.mime.encode("ascii"), policy=policy.default)

    assert notice.mime == again.mime
    assert notice.message_id == f"<{notice.notice_id}@notices.example.com>"
    assert mail["Message-ID"] == notice.message_id
    assert notice.recipient in str(mail["To"])
    assert str(mail["Subject"]) == notice.subject
    assert mail.get_body(("plain",)) is not None
    assert mail.get_body(("html",)) is not None


async def test_an_accepted_notice_gets_a_sent_receipt() -> None:
    transport = MemoryTransport()
    notice = a_notice()

    receipt = await send_notice(transport, SETTINGS, notice)

    assert receipt.status is DeliveryStatus.SENT
    assert receipt.smtp_code == 250
    assert receipt.message_id == notice.message_id
    assert transport.sent[0].recipients == (notice.recipient,)
    assert transport.sent[0].sender == "avisos@example.com"
    assert transport.sent[0].message == notice.mime.encode("ascii")


async def test_a_5xx_is_an_answer_kept_as_a_rejected_receipt() -> None:
    transport = MemoryTransport()
    notice = a_notice()
    transport.fail(notice.recipient, 550, "5.1.1 No such user")

    receipt = await send_notice(transport, SETTINGS, notice)

    assert receipt.status is DeliveryStatus.REJECTED
    assert (receipt.smtp_code, receipt.smtp_reply) == (550, "5.1.1 No such user")
    assert transport.sent == []


async def test_a_4xx_is_raised_at_once_for_the_stage_to_park_the_notice() -> None:
    transport = MemoryTransport()
    notice = a_notice()
    transport.fail(notice.recipient, 451, "4.3.0 Try later", times=1)

    with pytest.raises(SmtpTemporaryError) as refused:
        await send_notice(transport, SETTINGS, notice)

    assert (refused.value.code, refused.value.reply) == (451, "4.3.0 Try later")
    assert transport.sent == []  # not tried again here: the next try is deliver-retry's


async def test_an_unreachable_server_is_waited_for_not_given_up_on() -> None:
    transport = MemoryTransport()
    transport.unreachable = True
    sending = asyncio.ensure_future(send_notice(transport, SETTINGS, a_notice()))
    for _ in range(50):
        await asyncio.sleep(0)
    assert not sending.done()

    transport.unreachable = False
    receipt = await asyncio.wait_for(sending, 1)
    assert receipt.status is DeliveryStatus.SENT


def test_a_dead_letter_keeps_the_original_bytes_and_says_why() -> None:
    raw = b'{"type": "ProductDiscontinued"'
    event = SimpleNamespace(
        message=SimpleNamespace(key=b"k1", value=raw, topic="p.changes", partition=2, offset=41)
    )
    try:
        decode_expected(Notice, raw)
    except DecodeError as exc:
        letter = dead_letter_for(event, "audience-router", exc)

    assert base64.b64decode(letter.value) == raw
    assert base64.b64decode(letter.key or "") == b"k1"
    assert (letter.topic, letter.partition, letter.offset) == ("p.changes", 2, 41)
    assert letter.error_type == "DecodeError"
    assert "invalid event" in letter.reason
    assert decode(type(letter), encode(letter)) == letter


def test_a_record_of_the_wrong_type_for_its_topic_is_refused_by_name() -> None:
    from preaviso.schemas.events import CustomerUpserted

    with pytest.raises(DecodeError, match="expected a CustomerUpserted on this topic, got a"):
        decode_expected(CustomerUpserted, encode(OWNED[0]))
