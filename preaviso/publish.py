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


def _json_error(position: int, exc: json.JSONDecodeError) -> LineError:
    return LineError(position, f"not valid JSON ({exc.msg} at column {exc.colno})")


def _items(text: str) -> tuple[list[tuple[int, Any]], list[LineError], str]:
    """(position, parsed JSON) pairs and syntax errors, from JSON Lines, an object or an array."""
    stripped = text.strip()
    if stripped.startswith("[") or (stripped.startswith("{") and "\n" in stripped):
        try:
            doc = json.loads(stripped)
        except json.JSONDecodeError as exc:
            if stripped.startswith("["):
                return [], [_json_error(exc.lineno, exc)], "line"
        else:
            if isinstance(doc, list):
                return list(enumerate(doc, 1)), [], "item"
            return [(text[: text.index("{")].count("\n") + 1, doc)], [], "line"
    pairs: list[tuple[int, Any]] = []
    errors: list[LineError] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            pairs.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            errors.append(_json_error(number, exc))
    return pairs, errors, "line"


def parse_events(text: str) -> tuple[list[UpstreamEvent], list[LineError]]:
    """Every event, or every error in the input: publishing is all or nothing."""
    items, errors, unit = _items(text)
    events: list[UpstreamEvent] = []
    for number, item in items:
        try:
            events.append(_adapter.validate_python(item))
        except ValidationError as exc:
            errors.append(LineError(number, explain(exc), unit))
    if not items and not errors:
        errors.append(LineError(0, "no events found: give JSON Lines, a JSON object or an array"))
    errors.sort(key=lambda e: e.line)
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
