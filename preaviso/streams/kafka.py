"""Kafka client options and the reachability check shared by the worker, the CLI and tests."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from preaviso.settings import KafkaSecurity, Settings


class KafkaUnreachableError(ConnectionError):
    """No broker answered: says which address and what to check."""


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for SSL and SASL_SSL, verifying brokers against the configured CA."""
    if settings.kafka_security_protocol not in (KafkaSecurity.SSL, KafkaSecurity.SASL_SSL):
        return None
    cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    return ssl.create_default_context(cafile=cafile)


def client_options(settings: Settings) -> dict[str, Any]:
    """aiokafka keyword arguments for the configured security (TLS, SASL)."""
    opts: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol.value,
    }
    context = ssl_context(settings)
    if context is not None:
        opts["ssl_context"] = context
    if settings.kafka_security_protocol in (KafkaSecurity.SASL_PLAINTEXT, KafkaSecurity.SASL_SSL):
        opts["sasl_mechanism"] = settings.kafka_sasl_mechanism
        opts["sasl_plain_username"] = settings.kafka_sasl_username
        password = settings.kafka_sasl_password
        opts["sasl_plain_password"] = password.get_secret_value() if password else None
    return opts


def unreachable(settings: Settings, detail: str) -> KafkaUnreachableError:
    return KafkaUnreachableError(
        f"Kafka is not reachable at {settings.kafka_bootstrap} "
        f"(waited {settings.connect_timeout:g}s: {detail}). Check that the broker is running, "
        "that PREAVISO_KAFKA_BOOTSTRAP names its advertised listener, and the security settings."
    )


async def connect_admin(settings: Settings) -> AIOKafkaAdminClient:
    """An admin client that fails within ``connect_timeout`` instead of retrying forever."""
    admin = AIOKafkaAdminClient(
        **client_options(settings), request_timeout_ms=int(settings.connect_timeout * 1000)
    )
    try:
        await asyncio.wait_for(admin.start(), settings.connect_timeout)
    except Exception as exc:  # timeouts, refused connections, bad security settings
        await admin.close()
        raise unreachable(settings, f"{type(exc).__name__}: {exc}".rstrip(": ")) from exc
    return admin


async def describe_partitions(
    admin: AIOKafkaAdminClient, topics: list[str]
) -> dict[str, list[int]]:
    """Partition numbers of each of ``topics`` that exists; missing ones are left out."""
    described = await admin.describe_topics(topics)
    return {
        d["topic"]: sorted(p["partition"] for p in d["partitions"])
        for d in described
        if d["error_code"] == 0
    }


async def partition_ids(settings: Settings, topics: list[str]) -> dict[str, list[int]]:
    """Partition numbers of each existing topic, from the brokers' metadata."""
    admin = await connect_admin(settings)
    try:
        return await describe_partitions(admin, topics)
    finally:
        await admin.close()


def send_now(producer: Any) -> bool:
    """Ask an aiokafka producer to send what it holds now instead of lingering.

    Stages let the producer linger (``PRODUCER_LINGER``) so a batch of records goes
    out in few requests; once a stage flushes, nothing more is coming for that
    batch, and waiting out the linger would only add latency. This closes the open
    batches and wakes the sender, as aiokafka's own ``flush_for_commit`` does,
    without waiting. ``producer`` is an ``AIOKafkaProducer`` or Faust's wrapper of
    one. False (and no harm) if the producer is not started or its internals moved.
    """
    inner = getattr(producer, "_producer", producer)
    accumulator = getattr(inner, "_message_accumulator", None)
    batches = getattr(accumulator, "_batches", None)
    waiter = getattr(accumulator, "_waiter_future", None)
    if batches is None or waiter is None:
        return False
    for queue in batches.values():
        for batch in queue:
            batch._builder.close()
    if not waiter.done():
        waiter.set_result(None)
    return True
