"""`preaviso publish`: check every event of an input first, then send each to its topic.

JSON Lines are read twice, a line at a time (check, then send), and never held in
memory, so a file of millions of events publishes in flat memory. A JSON array or a
single pretty-printed object is loaded whole: such inputs are small.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from aiokafka import AIOKafkaProducer
from pydantic import TypeAdapter, ValidationError

from preaviso.schemas.events import UpstreamEvent
from preaviso.settings import Settings
from preaviso.streams import topics as t
from preaviso.streams.codecs import encode, explain
from preaviso.streams.kafka import client_options, unreachable
from preaviso.streams.topics import ensure_topics

MAX_REPORTED = 100
"""Errors kept for the report; the rest are only counted."""
WHOLE_DOCUMENT_LIMIT = 64 * 1024 * 1024
"""A file starting with an incomplete object is tried as one pretty-printed object only
up to this size; a bigger one is JSON Lines with a bad first line."""
SEND_WINDOW = 10_000
"""Sends in flight before waiting for the acknowledgements of the window before."""
LINGER_MS = 10
MAX_BATCH_BYTES = 512 * 1024

_adapter: TypeAdapter[UpstreamEvent] = TypeAdapter(UpstreamEvent)
Advance = Callable[[float], None]
Record = tuple[t.TopicSpec, bytes, bytes]
"""An event ready to send: its topic, key and value."""

ROUTES: dict[str, tuple[t.TopicSpec, str]] = {
    "CustomerUpserted": (t.CUSTOMERS, "customer_id"),
    "OwnershipRecorded": (t.OWNERSHIPS, "customer_id"),
    "PolicyChanged": (t.CHANGES, "policy_id"),
    "ProductDiscontinued": (t.CHANGES, "event_id"),
}
"""Topic and key field of each event type, as docs/architecture.md documents them."""


class InputChangedError(RuntimeError):
    """The input changed between the check and the send: what was checked is not what is sent."""


@dataclass(frozen=True, slots=True)
class LineError:
    """One bad input: where it is (a line, or an item of a JSON array) and what is wrong."""

    line: int
    message: str
    unit: str = "line"

    def __str__(self) -> str:
        return f"{self.unit} {self.line}: {self.message}"


def _syntax_error(position: int, exc: ValueError) -> LineError:
    if isinstance(exc, json.JSONDecodeError):
        return LineError(position, f"not valid JSON ({exc.msg} at column {exc.colno})")
    return LineError(position, f"not valid UTF-8 ({exc})")


class Events:
    """The items of an input, in order, readable twice: JSON lines as bytes, or parsed items."""

    def __init__(self, opener: Callable[[], BinaryIO], stamp: Callable[[], object]) -> None:
        self._open = opener
        self._stamp = stamp
        self._checked_stamp = stamp()
        self.unit = "line"
        self.syntax_error: LineError | None = None
        self._document: list[tuple[int, Any]] | None = None
        self._load_document()

    @classmethod
    def from_path(cls, path: Path) -> Events:
        def stamp() -> object:
            st = path.stat()
            return st.st_size, st.st_mtime_ns, st.st_ino

        return cls(lambda: path.open("rb"), stamp)

    @classmethod
    def from_text(cls, text: str) -> Events:
        data = text.encode()
        return cls(lambda: io.BytesIO(data), lambda: None)

    def _load_document(self) -> None:
        """Load a JSON array, or one object spread over lines; leave JSON Lines to stream."""
        with self._open() as f:
            number, head = next(((n, r.strip()) for n, r in enumerate(f, 1) if r.strip()), (0, b""))
            array = head.startswith(b"[")
            if not array and not (head.startswith(b"{") and not _is_json(head)):
                return
            if not array and f.seek(0, os.SEEK_END) > WHOLE_DOCUMENT_LIMIT:
                return
            f.seek(0)
            data = f.read()
        try:
            doc = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            if array:
                self._document = []
                self.syntax_error = _syntax_error(getattr(exc, "lineno", 1), exc)
            return  # not one object: JSON Lines whose first line is broken
        if isinstance(doc, list):
            self.unit, self._document = "item", list(enumerate(doc, 1))
        else:
            self._document = [(number, doc)]

    def items(self) -> Iterator[tuple[int, Any]]:
        """(line or item number, JSON line as bytes or parsed item), skipping blank lines."""
        if self._stamp() != self._checked_stamp:
            raise InputChangedError("the input changed after it was checked; publish it again")
        if self._document is not None:
            yield from self._document
            return
        with self._open() as f:
            for number, raw in enumerate(f, 1):
                if raw.strip():
                    yield number, raw


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


def _validate(value: Any) -> UpstreamEvent:
    """The event in a JSON line (bytes) or a parsed item; bad JSON raises json's own error."""
    if not isinstance(value, bytes):
        return _adapter.validate_python(value)
    try:
        return _adapter.validate_json(value)
    except ValidationError as exc:
        if exc.errors()[0]["type"] != "json_invalid":
            raise
    return _adapter.validate_python(json.loads(value))  # raises with json's clearer message


@dataclass(slots=True)
class Checked:
    """The outcome of the first pass: how many events, which errors, which lines are canonical."""

    unit: str = "line"
    events: int = 0
    invalid: int = 0
    errors: list[LineError] = field(default_factory=list)
    limit: int | None = MAX_REPORTED
    canonical: bytearray = field(default_factory=bytearray)
    """One bit per item: set when its bytes are exactly what `encode` writes for it."""

    def fail(self, error: LineError) -> None:
        self.invalid += 1
        if self.limit is None or len(self.errors) < self.limit:
            self.errors.append(error)

    def mark_canonical(self, ordinal: int) -> None:
        if ordinal >> 3 >= len(self.canonical):
            self.canonical.extend(bytes(4096))
        self.canonical[ordinal >> 3] |= 1 << (ordinal & 7)

    def is_canonical(self, ordinal: int) -> bool:
        return ordinal >> 3 < len(self.canonical) and bool(
            self.canonical[ordinal >> 3] & 1 << (ordinal & 7)
        )


def check(
    events: Events, limit: int | None = MAX_REPORTED, on_progress: Advance | None = None
) -> Checked:
    """Validate every event, keeping the first ``limit`` errors and counting all of them."""
    result = Checked(unit=events.unit, limit=limit)
    if events.syntax_error:
        result.fail(events.syntax_error)
        return result
    done = 0
    for ordinal, (position, value) in enumerate(events.items()):
        try:
            event = _validate(value)
        except ValidationError as exc:
            result.fail(LineError(position, explain(exc), events.unit))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            result.fail(_syntax_error(position, exc))
        else:
            result.events += 1
            if isinstance(value, bytes) and encode(event) == value.strip():
                result.mark_canonical(ordinal)
        if on_progress and isinstance(value, bytes):
            done += len(value)
            if ordinal % 4096 == 0:
                on_progress(done)
                done = 0
    if on_progress:
        on_progress(done)
    if not result.events and not result.invalid:
        result.fail(LineError(0, "no events found: give JSON Lines, a JSON object or an array"))
    return result


def parse_events(text: str) -> tuple[list[UpstreamEvent], list[LineError]]:
    """Every event, or every error in the input: publishing is all or nothing."""
    events = Events.from_text(text)
    checked = check(events, limit=None)
    if checked.invalid:
        return [], checked.errors
    return [_validate(value) for _, value in events.items()], []


def route(event: UpstreamEvent) -> tuple[t.TopicSpec, bytes]:
    """The topic and key of an event."""
    if event.type not in ROUTES:
        raise TypeError(f"no topic for {type(event).__name__}")
    spec, key = ROUTES[event.type]
    return spec, str(getattr(event, key)).encode()


def records(events: Events, checked: Checked) -> Iterator[Record]:
    """The second pass: each event re-read; a canonical line is sent as it is, not re-encoded."""
    for ordinal, (_, value) in enumerate(events.items()):
        if checked.is_canonical(ordinal):
            line = value.strip()
            doc = json.loads(line)
            spec, key = ROUTES[doc["type"]]
            yield spec, str(doc[key]).encode(), line
        else:
            event = _validate(value)
            yield (*route(event), encode(event))


@contextmanager
def spooled(stream: BinaryIO) -> Iterator[Path]:
    """Standard input copied to a temporary file, so it can be read twice; removed after."""
    with tempfile.NamedTemporaryFile(prefix="preaviso-publish-", suffix=".jsonl") as spool:
        shutil.copyfileobj(stream, spool, 1024 * 1024)
        spool.flush()
        yield Path(spool.name)


async def _settle(futures: list[asyncio.Future[Any]], on_sent: Advance | None) -> None:
    await asyncio.gather(*futures)
    if on_sent and futures:
        on_sent(len(futures))


async def send(
    settings: Settings, records: Iterable[Record], on_sent: Advance | None = None
) -> Counter[str]:
    """Send records in order with idempotent, fully acknowledged writes; count per topic.

    At most two windows of sends are in flight: the acknowledgements of one are
    awaited while the next is batched, so memory stays flat however many records.
    """
    await ensure_topics(settings)
    producer = AIOKafkaProducer(
        **client_options(settings),
        acks="all",
        enable_idempotence=True,
        linger_ms=LINGER_MS,
        max_batch_size=MAX_BATCH_BYTES,
        request_timeout_ms=int(max(settings.connect_timeout, 30) * 1000),
    )
    try:
        await asyncio.wait_for(producer.start(), settings.connect_timeout)
    except Exception as exc:
        await producer.stop()
        raise unreachable(settings, type(exc).__name__) from exc
    counts: Counter[str] = Counter()
    names = {spec.name: settings.topic(spec.name) for spec in t.UPSTREAM_TOPICS}
    previous: list[asyncio.Future[Any]] = []
    window: list[asyncio.Future[Any]] = []
    try:
        for spec, key, value in records:
            topic = names[spec.name]
            window.append(await producer.send(topic, value, key=key))
            counts[topic] += 1
            if len(window) >= SEND_WINDOW:
                await _settle(previous, on_sent)
                previous, window = window, []
        await _settle(previous, on_sent)
        await _settle(window, on_sent)
    finally:
        await producer.stop()
    return counts


async def publish(
    settings: Settings, events: Iterable[UpstreamEvent], on_sent: Advance | None = None
) -> Counter[str]:
    """Send events held in memory (the demo, the tests) exactly as a file's events are sent."""
    return await send(settings, ((*route(e), encode(e)) for e in events), on_sent)
