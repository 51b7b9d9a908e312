"""A record a stage cannot handle becomes a dead letter: where it is, a bounded copy, why."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from preaviso.compose import error_name
from preaviso.schemas.records import KEY_PREVIEW_BYTES, VALUE_PREVIEW_BYTES, DeadLetter
from preaviso.streams.codecs import encode

REASON_CHARS = 4000


def _preview(data: bytes, limit: int) -> tuple[str, bool]:
    return base64.b64encode(data[:limit]).decode(), len(data) > limit


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def dead_letter_for(event: Any, stage: str, exc: BaseException) -> DeadLetter:
    """Where the record is, a bounded copy of it and the reason: always small enough to write."""
    msg = event.message
    key = msg.key if isinstance(msg.key, bytes) else None
    value = msg.value if isinstance(msg.value, bytes) else b""
    key_text, key_truncated = _preview(key, KEY_PREVIEW_BYTES) if key is not None else (None, False)
    value_text, value_truncated = _preview(value, VALUE_PREVIEW_BYTES)
    return DeadLetter(
        stage=stage,
        reason=_bounded(str(exc), REASON_CHARS) or type(exc).__name__,
        error_type=error_name(exc)[:200],
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        key=key_text,
        key_size=len(key) if key is not None else None,
        key_truncated=key_truncated,
        value=value_text,
        value_size=len(value),
        value_truncated=value_truncated,
        failed_at=datetime.now(UTC),
    )


def dead_letter_record(event: Any, stage: str, exc: BaseException) -> tuple[bytes | None, bytes]:
    """A dead letter's key and value: the record's own key, unless too long to keep whole."""
    letter = dead_letter_for(event, stage, exc)
    return (event.message.key if not letter.key_truncated else None), encode(letter)
