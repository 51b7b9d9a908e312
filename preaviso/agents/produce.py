"""Many records written in few produce batches: aiokafka's batch API, for the bulk stages.

``producer.send`` costs ~10 µs of Python per record and a future each; a fetch of
the directory writes thousands. Here records are grouped per partition into
batches (``create_batch``/``send_batch``): one future per batch. Records without a
partition are placed as the producer would place them (murmur2 of the key, as the
Java client), so co-partitioning with the worker's other writes holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from itertools import islice
from typing import Any

from aiokafka.partitioner import DefaultPartitioner

from preaviso.agents.outbox import SendInterruptedError, backoff, failure_name, is_transient
from preaviso.streams.kafka import send_now

log = logging.getLogger("preaviso.produce")

Send = tuple[str, bytes | None, bytes | None, int | None]
"""topic, key, value (None: a tombstone), partition (None: by key)."""

_partitioner = DefaultPartitioner()


def partition_for(key: bytes | None, partitions: int) -> int:
    """The partition the producer's default partitioner picks (murmur2; random without key)."""
    every = list(range(partitions))
    return int(_partitioner(key, every, every))


async def write_all(
    producer: Any, sends: Sequence[Send], partitions: int
) -> dict[tuple[str, int], int]:
    """Write every record until Kafka holds it; the last offset written per partition.

    ``producer`` is an ``AIOKafkaProducer``. Within a partition the records keep
    their order: when a batch fails for a transient reason, it and every later
    batch of its partition go again. A refusal for good (too large) is raised.
    """
    queued: dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]] = {}
    for topic, key, value, partition in sends:
        where = partition if partition is not None else partition_for(key, partitions)
        queued.setdefault((topic, where), []).append((key, value))
    last: dict[tuple[str, int], int] = {}
    attempt = 0
    while queued:
        sent = await _submit(producer, queued)
        send_now(producer)
        results = [
            SendInterruptedError("the send was cancelled before Kafka answered")
            if isinstance(r, asyncio.CancelledError)  # the future's, not this task's
            else r
            for r in await asyncio.gather(*(f for _, _, f in sent), return_exceptions=True)
        ]
        again: dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]] = {}
        failure: BaseException | None = None
        for (tp, part, _), result in zip(sent, results, strict=True):
            if tp in again or isinstance(result, BaseException):
                again.setdefault(tp, []).extend(part)  # this batch and all after it
                failure = failure or (result if isinstance(result, BaseException) else None)
            else:
                last[tp] = result.offset + len(part) - 1
        queued = again
        if failure is None:
            continue
        if not is_transient(failure):
            raise failure
        attempt += 1
        delay = backoff(attempt)
        log.warning(
            "writing %d records failed (%s); retry %d in %.1fs",
            sum(len(v) for v in again.values()),
            failure_name(failure),
            attempt,
            delay,
        )
        await asyncio.sleep(delay)
    return last


CHUNK = 5000
"""Records ``write_chunked`` holds at a time: a fan-out to a million stays in bounded memory."""


async def write_chunked(producer: Any, sends: Iterable[Send], partitions: int) -> int:
    """``write_all`` over ``sends`` in chunks of ``CHUNK``, each written before the next is
    built; the number of records written."""
    written, it = 0, iter(sends)
    while chunk := list(islice(it, CHUNK)):
        await write_all(producer, chunk, partitions)
        written += len(chunk)
    return written


async def _submit(
    producer: Any, queued: dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]]
) -> list[tuple[tuple[str, int], list[tuple[bytes | None, bytes | None]], Any]]:
    """Each partition's records in as few batches as fit; (partition, its records, future).

    aiokafka raises some errors from ``send_batch`` itself (no metadata for the topic yet,
    no room in its buffer, the producer closed): the records not handed over then get a
    future holding that error, so ``write_all`` retries or raises them like any failure,
    and what was handed over before is not sent twice.
    """
    out: list[tuple[tuple[str, int], list[tuple[bytes | None, bytes | None]], Any]] = []
    refused: Exception | None = None
    for (topic, partition), records in queued.items():
        start = 0
        if refused is None:
            builder = producer.create_batch()
            try:
                for i, (key, value) in enumerate(records):
                    if builder.append(key=key, value=value, timestamp=None) is None:
                        future = await _send(producer, builder, topic, partition)
                        out.append(((topic, partition), records[start:i], future))
                        builder, start = producer.create_batch(), i
                        builder.append(key=key, value=value, timestamp=None)  # the first fits
                future = await _send(producer, builder, topic, partition)
            except Exception as exc:
                refused = exc
        if refused is not None:
            future = asyncio.get_running_loop().create_future()
            future.set_exception(refused)
        out.append(((topic, partition), records[start:], future))
    return out


async def _send(producer: Any, builder: Any, topic: str, partition: int) -> Any:
    builder.close()
    return await producer.send_batch(builder, topic, partition=partition)
