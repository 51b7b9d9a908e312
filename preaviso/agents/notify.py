"""Notify stage: an impact plus the customer's entry becomes a rendered, ready-to-send notice."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from preaviso.agents import ledger
from preaviso.agents.bulk import Batch, Handler
from preaviso.audience import DirectoryEntry
from preaviso.mail import build_message, make_message_id
from preaviso.render import Renderer
from preaviso.schemas.events import CustomerUpserted
from preaviso.schemas.records import Impact, Notice
from preaviso.settings import Settings
from preaviso.streams import topics as t
from preaviso.streams.app import Pipeline
from preaviso.streams.codecs import decode, encode


class UnknownCustomerError(LookupError):
    """An impact names a customer the directory does not hold (yet)."""


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


def stages(pipe: Pipeline) -> dict[t.TopicSpec, tuple[str, Handler]]:
    """notify, to be read in bulk (``agents/bulk.py``): a fan-out's impacts come in
    thousands, and each passed Faust's per-event hand-over before any rendering."""
    renderer = Renderer(company_name=pipe.settings.company_name)
    settings = pipe.settings

    def notify(record: Any, batch: Batch) -> None:
        impact = decode(Impact, record.value)
        key = impact.customer_id.encode()
        issued = batch.table("issued", record.partition)
        if ledger.contains(issued, key, impact.notice_id):
            return  # already issued: a redelivered or repeated impact (or one in this batch)
        raw = batch.table("customers", record.partition).get(key)
        if raw is None:
            raise UnknownCustomerError(
                f"customer {impact.customer_id} is not in the directory; publish its "
                "CustomerUpserted, then replay this record from the dead-letter topic"
            )
        customer = decode(DirectoryEntry, raw, trusted=True).customer
        notice = compose_notice(impact, customer, renderer, settings, datetime.now(UTC))
        batch.send(t.NOTICES, key, encode(notice))
        # Written to Kafka after the batch's notices, stored after that (bulk._finish).
        ledger.add(issued, key, impact.notice_id)

    return {t.IMPACTS: ("notify", notify)}
