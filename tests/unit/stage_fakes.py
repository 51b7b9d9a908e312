"""Fakes of Kafka and Faust as the stage loop sees them, shared by the stage tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any

from faust.exceptions import ProducerSendError

SOURCE = "t.ownerships"
OUTPUT = "t.ownerships-by-sku"
LETTERS = "t.dead-letters"


def wrapped(cause: Exception) -> ProducerSendError:
    """What Faust raises from ``producer.send``: its own error, caused by aiokafka's."""
    try:
        raise ProducerSendError(f"Error while sending: {cause!r}") from cause
    except ProducerSendError as exc:
        return exc


class FakeProducer:
    """Kafka as the outbox sees it, with scripted faults per topic.

    ``refuse`` makes the next ``send`` calls raise; ``fail`` makes the futures of the
    next sends fail; ``slow`` settles a topic's futures only after that many seconds.
    Every outcome is logged in ``history``, next to the handler's calls.
    """

    def __init__(self, history: list[str]) -> None:
        self.history = history
        self.refuse: dict[str, list[Exception]] = {}
        self.fail: dict[str, list[BaseException]] = {}
        self.slow: dict[str, float] = {}
        self.futures: list[asyncio.Future[None]] = []
        self.written: list[tuple[str, bytes | None, bytes]] = []

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        partition: int | None,
        timestamp: float | None,
        headers: Any,
    ) -> asyncio.Future[None]:
        if self.refuse.get(topic):
            self.history.append(f"refused {topic}")
            raise self.refuse[topic].pop(0)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fault = self.fail[topic].pop(0) if self.fail.get(topic) else None

        def settle() -> None:
            if isinstance(fault, asyncio.CancelledError):
                self.history.append(f"failed {topic}")
                future.cancel()
            elif fault is not None:
                self.history.append(f"failed {topic}")
                future.set_exception(fault)
            else:
                self.history.append(f"wrote {topic}")
                self.written.append((topic, key, value))
                future.set_result(None)

        if topic in self.slow:
            asyncio.get_running_loop().call_later(self.slow[topic], settle)
        else:
            settle()
        self.futures.append(future)
        return future

    def on(self, topic: str) -> list[tuple[bytes | None, bytes]]:
        return [(key, value) for name, key, value in self.written if name == topic]


class FakeMessage(SimpleNamespace):
    """Faust's message refcount: the consumer may commit it only once it reaches 0.

    As in Faust, the last ack marks the message ``acked`` and puts its offset in
    the consumer's list (``acked_offsets``), unless it was already marked (let go).
    """

    refcount = 1
    acked = False

    def incref(self) -> None:
        self.refcount += 1


class FakeEvent(SimpleNamespace):
    acks = 0

    def ack(self) -> bool:
        self.acks += 1
        self.message.refcount -= 1
        if self.message.refcount == 0 and not self.message.acked:
            self.message.acked = True
            ACKED.append((self.message.partition, self.message.offset))
            return True
        return False


ACKED: list[tuple[int, int]] = []
"""(partition, offset) in the order the fake consumer saw them acked."""


def record(offset: int, value: bytes = b"{}", key: bytes | None = b"C1", partition: int = 0) -> Any:
    return FakeEvent(
        message=FakeMessage(key=key, value=value, topic=SOURCE, partition=partition, offset=offset)
    )


async def stream(*events: Any) -> AsyncIterator[Any]:
    for event in events:
        yield event


def recovery_after(assigned: set[Any], resumed: set[Any], log: list[str], **loaders: Any) -> Any:
    """Faust's table recovery as ``faust_fixes._seek_then_resume`` sees it, over ``assigned``:
    the partitions Faust resumes go into ``resumed``, its flow resuming into ``log``;
    ``loaders`` are set on the app."""

    async def done(*_: Any, **__: Any) -> None:
        return None

    app = SimpleNamespace(
        **loaders,
        consumer=SimpleNamespace(
            assignment=lambda: assigned,
            perform_seek=done,
            resume_partitions=resumed.update,
            resume_flow=lambda: log.append("resume_flow"),
        ),
        conf=SimpleNamespace(broker_request_timeout=5),
        flow_control=SimpleNamespace(resume=lambda: None),
        _fetcher=SimpleNamespace(maybe_start=done),
    )
    return SimpleNamespace(
        app=app,
        log=SimpleNamespace(info=lambda *a: None),
        completed=SimpleNamespace(set=lambda: None),
        _is_changelog_tp=lambda tp: False,
        _wait=lambda coro, timeout: coro,
    )


def faust_consumer(
    assignment: Callable[[], set[Any]],
    commit: Callable[[Any], Awaitable[bool]],
    committed: dict[Any, int] | None = None,
) -> Any:
    """Faust's consumer as ``streams/group.py`` and the loaders use it: its assignment, and
    its thread, where the group's committed offsets are asked and commits made."""
    stored = committed if committed is not None else {}

    async def committed_offset(tp: Any) -> int | None:
        return stored.get(tp)

    async def call_thread(fun: Callable[[], Awaitable[Any]]) -> Any:
        return await fun()

    thread = SimpleNamespace(
        call_thread=call_thread,
        assignment=assignment,
        _commit=commit,
        _ensure_consumer=lambda: SimpleNamespace(committed=committed_offset),
    )
    return SimpleNamespace(assignment=assignment, _commit=commit, _thread=thread)
