"""Contracts Preaviso itself writes: impacts, notices, receipts and dead letters."""

from __future__ import annotations

import hashlib
import os
import uuid
from datetime import date
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, StringConstraints

from preaviso.schemas.base import Contract, Event, Identifier, Line, Text
from preaviso.schemas.events import Locale, PolicyKind

NOTICE_NAMESPACE = uuid.UUID("6f1d8a52-3c1e-4d57-9a43-7e1c2b9d0a11")

VALUE_PREVIEW_BYTES = 64 * 1024
"""How much of the original value a dead letter keeps: enough to see what was wrong."""
KEY_PREVIEW_BYTES = 4 * 1024
"""How much of the original key a dead letter keeps; real keys are ids, far shorter."""


def notice_id_for(event_id: str, customer_id: str) -> str:
    """Stable id of the notice one event owes one customer: the dedup and ledger key.

    ``uuid.uuid5(NOTICE_NAMESPACE, f"{event_id}\\x1f{customer_id}")``, formatted without
    building a ``UUID`` (1 µs against 3: a fan-out makes one per customer).
    """
    name = f"{event_id}\x1f{customer_id}".encode()
    digest = hashlib.sha1(NOTICE_NAMESPACE.bytes + name, usedforsecurity=False).digest()
    return _uuid_text(digest, 5)


def random_event_id() -> str:
    """A fresh ``uuid4`` string, as ``str(uuid.uuid4())`` (0.5 µs against 2)."""
    return _uuid_text(os.urandom(16), 4)


def _uuid_text(digest: bytes, version: int) -> str:
    """RFC 4122 text of the first 16 bytes of ``digest``, with its version and variant."""
    raw = bytearray(digest[:16])
    raw[6] = (raw[6] & 0x0F) | (version << 4)
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class ImpactKind(StrEnum):
    DISCONTINUATION = "discontinuation"
    POLICY_CHANGE = "policy_change"


class OwnedProduct(Contract):
    """What the customer owns that makes them affected."""

    sku: Identifier
    product_name: Line
    purchase_date: date


class Impact(Event):
    """One customer affected by one event, with the reason why."""

    type: Literal["Impact"] = "Impact"
    notice_id: str
    kind: ImpactKind
    customer_id: Identifier
    cause_event_id: str
    reason: Text = Field(description="Why this customer receives the notice, for the ledger.")
    effective_date: date
    # Discontinuation details
    model_name: Line | None = None
    products: list[OwnedProduct] = []
    last_order_date: date | None = None
    spare_parts_until: date | None = None
    replacement_offer: Text | None = None
    # Policy details
    policy_id: Identifier | None = None
    policy_kind: PolicyKind | None = None
    title: Line | None = None
    old_terms: Text | None = None
    new_terms: Text | None = None
    required_notice_days: int | None = None
    scope_region: Identifier | None = Field(
        default=None, description="The customer's region when the policy covers only some."
    )


class Notice(Event):
    """A rendered email, ready to send: the exact bytes are kept as proof."""

    type: Literal["Notice"] = "Notice"
    notice_id: str
    customer_id: Identifier
    cause_event_id: str
    recipient: str
    locale: Locale
    subject: Line
    message_id: str
    mime: Annotated[str, StringConstraints(strip_whitespace=False)] = Field(
        description="The full RFC 5322 message, CRLF line endings, ASCII: the exact bytes sent."
    )


class DeliveryStatus(StrEnum):
    """sent: the server took it; rejected: refused for good (5xx); failed: 4xx past the max age."""

    SENT = "sent"
    REJECTED = "rejected"
    FAILED = "failed"


class DeliveryReceipt(Event):
    """What the SMTP server answered for one notice: the proof of sending."""

    type: Literal["DeliveryReceipt"] = "DeliveryReceipt"
    notice_id: str
    customer_id: Identifier
    message_id: str
    recipient: str
    status: DeliveryStatus
    smtp_code: int
    smtp_reply: Text
    sent_at: AwareDatetime


class ParkedNotice(Contract):
    """A notice the SMTP server refused for now (4xx), waiting for its next attempt.

    deliver writes it to ``notices-retry`` instead of holding up the notices behind
    it; deliver-retry tries it again from ``not_before`` on, until it is sent,
    rejected, or older than ``PREAVISO_SMTP_RETRY_MAX_AGE`` (then ``failed``).
    """

    type: Literal["ParkedNotice"] = "ParkedNotice"
    notice: Notice
    first_attempt_at: AwareDatetime = Field(
        description="When the server first answered it (its first 4xx): the age counts from here."
    )
    attempts: Annotated[int, Field(ge=1)] = Field(description="Attempts made so far.")
    not_before: AwareDatetime = Field(description="The next attempt starts no earlier.")
    last_code: int = Field(description="The SMTP code of the last refusal (4xx).")
    last_reply: Text = Field(description="The server's text with that code.")


class DeadLetter(Contract):
    """A record a stage could not handle: where it is, a bounded copy of it, and why.

    The copy is bounded so a dead letter always fits on the topic (a whole record
    close to the broker's size limit, base64 in JSON, would not). ``topic``,
    ``partition`` and ``offset`` say where to re-read the whole original.
    """

    type: Literal["DeadLetter"] = "DeadLetter"
    stage: Line
    reason: Text
    topic: str
    partition: int
    offset: int
    key: str | None = Field(
        default=None,
        description="Original key, base64 (only its first bytes when key_truncated); "
        "absent when it had none.",
    )
    value: str = Field(
        description="Original value bytes, base64: all of them, or only the first "
        f"{VALUE_PREVIEW_BYTES} when value_truncated."
    )
    failed_at: AwareDatetime
    error_type: Annotated[str, Field(max_length=200)]
    key_size: int | None = Field(
        default=None, ge=0, description="Length of the original key in bytes; absent if none."
    )
    key_truncated: bool = Field(
        default=False, description=f"True when key holds only the first {KEY_PREVIEW_BYTES} bytes."
    )
    value_size: int | None = Field(
        default=None,
        ge=0,
        description="Length of the original value in bytes; absent only in letters written "
        "before this field existed, whose value is whole.",
    )
    value_truncated: bool = Field(
        default=False,
        description=f"True when value holds only the first {VALUE_PREVIEW_BYTES} bytes; "
        "re-read the whole record from topic, partition and offset.",
    )
