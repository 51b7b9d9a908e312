"""Deliver stage: send notices over pooled SMTP connections, record a receipt for each."""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import UTC, datetime
from typing import Any

import mode

from preaviso.agents import ledger
from preaviso.agents.stage import EventHandler, Outbox, run_stage
from preaviso.mail import (
    SmtpAuthenticationError,
    SmtpPermanentError,
    SmtpTemporaryError,
    SmtpTimeoutError,
    SmtpTransport,
    SmtpUnreachableError,
    Transport,
)
from preaviso.schemas.records import DeliveryReceipt, DeliveryStatus, Notice
from preaviso.settings import Settings
from preaviso.streams import topics as t
from preaviso.streams.app import Pipeline
from preaviso.streams.codecs import decode, encode, sender_address

log = logging.getLogger("preaviso.deliver")

TEMPORARY_ATTEMPTS = 5


def backoff(attempt: int, cap: float = 30.0) -> float:
    """Exponential backoff with full jitter, so retries from many notices do not align."""
    return random.uniform(0, min(cap, 0.5 * 2**attempt))


def receipt_for(notice: Notice, status: DeliveryStatus, code: int, reply: str) -> DeliveryReceipt:
    return DeliveryReceipt(
        notice_id=notice.notice_id,
        customer_id=notice.customer_id,
        message_id=notice.message_id,
        recipient=notice.recipient,
        status=status,
        smtp_code=code,
        smtp_reply=reply[:4000],
        sent_at=datetime.now(UTC),
        source="preaviso",
    )


async def send_notice(transport: Transport, settings: Settings, notice: Notice) -> DeliveryReceipt:
    """Send one notice; wait out an unreachable server, give up on repeated 4xx, record 5xx.

    While the server is unreachable nothing is acked, so nothing is lost: the
    stage simply waits. A 5xx is an answer, kept as a ``rejected`` receipt.
    """
    sender = sender_address(settings.mail_from)
    attempt = 0
    temporary = 0
    while True:
        try:
            reply = await transport.send(sender, [notice.recipient], notice.mime.encode("ascii"))
            return receipt_for(notice, DeliveryStatus.SENT, reply.code, reply.message)
        except SmtpPermanentError as exc:
            return receipt_for(notice, DeliveryStatus.REJECTED, exc.code, exc.reply)
        except SmtpTemporaryError:
            temporary += 1
            if temporary >= TEMPORARY_ATTEMPTS:
                raise
        except (SmtpUnreachableError, SmtpTimeoutError, SmtpAuthenticationError) as exc:
            # The server, not this notice, is at fault: wait for it rather than give up.
            log.warning("SMTP not usable, retrying: %s", exc)
        attempt += 1
        await asyncio.sleep(backoff(min(attempt, 10)))


def register(pipe: Pipeline, transport: Transport | None = None) -> None:
    delivered = pipe.tables["delivered"]
    settings = pipe.settings
    smtp: Transport = transport or SmtpTransport.from_settings(settings)

    def deliver(outbox: Outbox) -> EventHandler:
        async def handle(event: Any) -> None:
            notice = decode(Notice, event.message.value)
            key = notice.customer_id.encode()
            if ledger.contains(delivered, key, notice.notice_id):
                return  # sent before a restart re-read it: do not send twice
            receipt = await send_notice(smtp, settings, notice)
            await outbox.send(t.RECEIPTS, key, encode(receipt))
            await outbox.flush()  # the receipt is the proof: hold it before the ledger
            ledger.add(delivered, key, notice.notice_id)

        return handle

    run_stage(pipe, t.NOTICES, "deliver", deliver)

    class SmtpPool(mode.Service):
        """Closes the pooled SMTP connections when the worker stops."""

        async def on_stop(self) -> None:
            await smtp.aclose()

    pipe.app.service(SmtpPool)
