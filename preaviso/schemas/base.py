"""Fields every Preaviso event carries, and the strict base model they share."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
)
from pydantic.networks import validate_email

SCHEMA_VERSION = 1


UNSAFE_IN_LINE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029\ud800-\udfff]"
)
"""What no single line of text may hold, wherever it goes: the one control-character rule.

C0 and C1 controls and DEL (CR/LF in a header is an injection), the Unicode line and
paragraph separators (some parsers split lines on them), bidirectional controls (they
can make a display name or subject read as something else) and lone surrogates.
Contracts refuse them in single-line fields; mail headers and subjects check again.
"""


def _no_control_chars(value: str) -> str:
    # Text from events ends up in mail headers and bodies, so single-line fields
    # refuse what a header must never carry.
    if UNSAFE_IN_LINE.search(value):
        raise ValueError(
            "must be a single line without control characters "
            "(CR, LF, TAB, bidirectional controls, ...)"
        )
    return value


Line = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_no_control_chars)]
"""A non-empty single line of text, safe to place in a header."""

Text = Annotated[str, Field(max_length=4000)]
"""Free text for mail bodies; may span lines, is escaped when rendered."""

TRUSTED = {"trusted": True}
"""Validation context for bytes Preaviso wrote itself from a record it had checked (a
re-keyed customer, a directory entry): the costly checks are not run again."""


def _email(value: str, info: ValidationInfo) -> str:
    if info.context is not None and info.context.get("trusted"):
        return value  # checked (and normalized) when it came in from upstream
    return validate_email(value)[1]  # pydantic's EmailStr check, normalized the same way


Email = Annotated[
    str,
    AfterValidator(_email),
    WithJsonSchema({"format": "email", "type": "string"}),
]
"""An email address (pydantic's ``EmailStr`` rules), checked once: not again when trusted."""

Identifier = Annotated[
    str,
    Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"),
]
"""Ids and SKUs: they become Kafka keys and table keys, so they stay plain ASCII."""


def _now() -> datetime:
    return datetime.now(UTC)


class Contract(BaseModel):
    """Strict, immutable model: unknown fields are errors, not silently dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Event(Contract):
    """Envelope fields shared by every event that crosses a topic."""

    event_id: Annotated[str, Field(min_length=1, max_length=100)] = Field(
        default_factory=lambda: str(uuid.uuid4()),
        description="Unique id of this event; publishers reuse it on retries.",
    )
    schema_version: Annotated[int, Field(ge=1, le=SCHEMA_VERSION)] = Field(
        default=SCHEMA_VERSION, description="Version of this contract the publisher wrote."
    )
    occurred_at: AwareDatetime = Field(
        default_factory=_now, description="When it happened upstream, with a time zone."
    )
    source: Line = Field(default="unknown", description="The publishing system, for audits.")
