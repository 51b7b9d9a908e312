"""`preaviso publish`: validate a whole file of events first, then send each to its topic."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from pydantic import TypeAdapter, ValidationError

from preaviso.schemas.events import (
    CustomerUpserted,
    OwnershipRecorded,
    PolicyChanged,
    ProductDiscontinued,
    UpstreamEvent,
)
from preaviso.settings import Settings
from preaviso.streams import topics as t
from preaviso.streams.codecs import encode, explain
from preaviso.streams.kafka import client_options, unreachable
from preaviso.streams.topics import ensure_topics

_adapter: TypeAdapter[UpstreamEvent] = TypeAdapter(UpstreamEvent)


@dataclass(frozen=True, slots=True)
class LineError:
    """One bad input: where it is (a line, or an item of a JSON array) and what is wrong."""

    line: int
    message: str
    unit: str = "line"

    def __str__(self) -> str:
        return f"{self.unit} {self.line}: {self.message}"


def _items(text: str) -> list[tuple[int, Any]] | LineError:
    """(position, parsed JSON) pairs from JSON Lines, one JSON object or a JSON array."""
    stripped = text.strip()
    if stripped.startswith("[") or (stripped.startswith("{") and "\n" in stripped):
        try:
            doc = json.loads(stripped)
        except json.JSONDecodeError as exc:
            if stripped.startswith("["):
                return LineError(exc.lineno, f"not valid JSON ({exc.msg} at column {exc.colno})")
        else:
            if isinstance(doc, list):
                return list(enumerate(doc, 1))
            return [(text[: text.index("{")].count("\n") + 1, doc)]
    pairs: list[tuple[int, Any]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            pairs.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            return LineError(number, f"not valid JSON ({exc.msg} at column {exc.colno})")
    return pairs


def parse_events(text: str) -> tuple[list[UpstreamEvent], list[LineError]]:
    """Every event or every error: publishing is all or nothing."""
    items = _items(text)
    if isinstance(items, LineError):
        return [], [items]
    unit = "item" if text.strip().startswith("[") else "line"
    events: list[UpstreamEvent] = []
    errors: list[LineError] = []
    for number, item in items:
        try:
            events.append(_adapter.validate_python(item))
        except ValidationError as exc:
            errors.append(LineError(number, explain(exc), unit))
    if not items:
        errors.append(LineError(0, "no events found: give JSON Lines, a JSON object or an array"))
    return events, errors


def route(event: UpstreamEvent) -> tuple[t.TopicSpec, bytes]:
    """The topic and key of an event, as docs/architecture.md documents them."""
    if isinstance(event, CustomerUpserted):
        return t.CUSTOMERS, event.customer_id.encode()
    if isinstance(event, OwnershipRecorded):
        return t.OWNERSHIPS, event.customer_id.encode()
    if isinstance(event, PolicyChanged):
        return t.CHANGES, event.policy_id.encode()
    if isinstance(event, ProductDiscontinued):
        return t.CHANGES, event.event_id.encode()
    raise TypeError(f"no topic for {type(event).__name__}")


async def publish(settings: Settings, events: Sequence[UpstreamEvent]) -> Counter[str]:
    """Send events in order with idempotent, fully acknowledged writes; count per topic."""
    await ensure_topics(settings)
    producer = AIOKafkaProducer(
        **client_options(settings),
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        request_timeout_ms=int(max(settings.connect_timeout, 30) * 1000),
    )
    try:
        await asyncio.wait_for(producer.start(), settings.connect_timeout)
    except Exception as exc:
        await producer.stop()
        raise unreachable(settings, type(exc).__name__) from exc
    counts: Counter[str] = Counter()
    try:
        futures = []
        for event in events:
            spec, key = route(event)
            futures.append(await producer.send(settings.topic(spec.name), encode(event), key=key))
            counts[settings.topic(spec.name)] += 1
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return counts
