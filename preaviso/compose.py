"""An impact and its customer's directory entry become the notice: the pure step of notify.

It runs in the worker or in a child process (``agents/composer.py``), so its inputs and
output are the records' bytes, and a failure comes back as data, not as an exception
that might not survive the trip.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple

from preaviso.audience import DirectoryEntry
from preaviso.mail import build_message, make_message_id
from preaviso.render import Renderer
from preaviso.schemas.events import CustomerUpserted
from preaviso.schemas.records import Impact, Notice
from preaviso.settings import Settings
from preaviso.streams.codecs import decode, encode


def compose_notice(
    impact: Impact,
    customer: CustomerUpserted,
    renderer: Renderer,
    settings: Settings,
    now: datetime,
) -> Notice:
    """Render and assemble the exact bytes to send; pure, so the proof is reproducible."""
    rendered = renderer.render(impact, customer, today=now.date())
    message_id = make_message_id(impact.notice_id, settings.message_id_domain)
    mime = build_message(
        sender=settings.mail_from,
        recipient_name=customer.name,
        recipient_email=str(customer.email),
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        message_id=message_id,
        date=now,
    )
    return Notice(
        notice_id=impact.notice_id,
        customer_id=customer.customer_id,
        cause_event_id=impact.cause_event_id,
        source="preaviso",
        recipient=str(customer.email),
        locale=customer.locale,
        subject=rendered.subject,
        message_id=message_id,
        mime=mime.decode("ascii"),
    )


class Job(NamedTuple):
    """One notice to compose: the impact record's value and its customer's stored entry."""

    impact: bytes
    entry: bytes


class Composed(NamedTuple):
    """The encoded notice, or why there is none (the exception's type name and text)."""

    notice: bytes | None
    error_type: str = ""
    reason: str = ""


class ComposeError(Exception):
    """Composing a notice failed; ``error_type`` names the exception it raised (perhaps
    in another process), so its dead letter says what a failure in the worker would."""

    def __init__(self, result: Composed) -> None:
        super().__init__(result.reason or result.error_type)
        self.error_type = result.error_type


def error_name(exc: BaseException) -> str:
    """The exception's type name; for a ``ComposeError``, the one raised in composing."""
    return exc.error_type if isinstance(exc, ComposeError) else type(exc).__name__


def compose_encoded(job: Job, renderer: Renderer, settings: Settings) -> Composed:
    """``compose_notice`` from and to bytes; any failure is the record's, returned as data."""
    try:
        impact = decode(Impact, job.impact)
        customer = decode(DirectoryEntry, job.entry, trusted=True).customer
        notice = compose_notice(impact, customer, renderer, settings, datetime.now(UTC))
        return Composed(encode(notice))
    except Exception as exc:  # the record is at fault: notify dead-letters it
        return Composed(None, type(exc).__name__, str(exc))
