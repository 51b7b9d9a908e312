"""What the SMTP server's answer to a notice leads to: its receipt, or its next attempt.

Pure decisions, apart from the stages that act on them (``deliver``): a mail the
server took gets a ``sent`` receipt, a 5xx a ``rejected`` one; after a 4xx the
notice is parked until its next attempt, or, once it is older than the retry age,
gets a ``failed`` receipt.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from preaviso.mail import SmtpReplyError
from preaviso.schemas.records import DeliveryReceipt, DeliveryStatus, Notice, ParkedNotice

__all__ = [
    "REPLY_CHARS",
    "RETRY_FIRST_DELAY",
    "RETRY_MAX_DELAY",
    "after_refusal",
    "receipt_for",
    "retry_delay",
]

RETRY_FIRST_DELAY = 1.0
"""Wait after a notice's first 4xx; it doubles with every further 4xx."""
RETRY_MAX_DELAY = 60.0
"""Longest wait between two tries of a parked notice.

deliver-retry waits for parked notices in turn, so one due later holds up those
behind it for at most this long.
"""
REPLY_CHARS = 4000
"""Characters of the server's reply kept in a receipt or a parked notice."""


def retry_delay(attempts: int, rng: random.Random | None = None) -> float:
    """Seconds from the 4xx of attempt number ``attempts`` to the next attempt.

    1 s after the first, doubling up to ``RETRY_MAX_DELAY``; half of it fixed and
    half random ("equal jitter"), so parked notices do not come back all at once,
    and none comes back at once.
    """
    base = min(RETRY_MAX_DELAY, RETRY_FIRST_DELAY * 2.0 ** min(max(attempts, 1) - 1, 16))
    return base / 2 + (rng or random).uniform(0, base / 2)


def receipt_for(
    notice: Notice, status: DeliveryStatus, code: int, reply: str, at: datetime | None = None
) -> DeliveryReceipt:
    return DeliveryReceipt(
        notice_id=notice.notice_id,
        customer_id=notice.customer_id,
        message_id=notice.message_id,
        recipient=notice.recipient,
        status=status,
        smtp_code=code,
        smtp_reply=reply[:REPLY_CHARS],
        sent_at=at or datetime.now(UTC),
        source="preaviso",
    )


def after_refusal(
    notice: Notice,
    refusal: SmtpReplyError,
    *,
    first_attempt_at: datetime,
    attempts: int,
    now: datetime,
    max_age: float,
    rng: random.Random | None = None,
) -> ParkedNotice | DeliveryReceipt:
    """What follows a 4xx on attempt number ``attempts``: park the notice, or give up.

    The limit is the notice's age, counted from its first attempt, not a number of
    tries: once ``max_age`` seconds have passed, the last refusal is final and the
    notice gets a ``failed`` receipt. The next attempt is never due later than that
    moment, so the last one is made right at the limit.
    """
    if (now - first_attempt_at).total_seconds() >= max_age:
        return receipt_for(notice, DeliveryStatus.FAILED, refusal.code, refusal.reply, now)
    due = now + timedelta(seconds=retry_delay(attempts, rng))
    return ParkedNotice(
        notice=notice,
        first_attempt_at=first_attempt_at,
        attempts=attempts,
        not_before=min(due, first_attempt_at + timedelta(seconds=max_age)),
        last_code=refusal.code,
        last_reply=refusal.reply[:REPLY_CHARS],
    )
