"""The Faust app factory: one app per settings, with its topics, tables and agents."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import faust

from preaviso.settings import KafkaSecurity, Settings
from preaviso.streams import faust_fixes
from preaviso.streams import topics as t
from preaviso.streams.kafka import ssl_context

PRODUCER_LINGER = 0.005
"""Seconds the producer waits to fill a batch: at most this much latency per stage."""
PRODUCER_MAX_BATCH = 512 * 1024
"""Bytes per producer batch and partition (Kafka's request limit is 1 MB)."""


def broker_credentials(settings: Settings) -> Any:
    """Faust's form of the Kafka security settings (None for plaintext)."""
    proto = settings.kafka_security_protocol
    context = ssl_context(settings)
    if proto in (KafkaSecurity.SASL_PLAINTEXT, KafkaSecurity.SASL_SSL):
        password = settings.kafka_sasl_password
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=password.get_secret_value() if password else None,
            ssl_context=context,
            mechanism=settings.kafka_sasl_mechanism,
        )
    return context


@dataclass
class Pipeline:
    """What the agents share: the app, its settings, topics and tables."""

    settings: Settings
    app: Any
    topics: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, Any] = field(default_factory=dict)

    def topic_name(self, spec: t.TopicSpec) -> str:
        return self.settings.topic(spec.name)


def create_app(settings: Settings, *, register_agents: bool = True) -> Pipeline:
    """Build the worker app; agents are registered unless a test wants to pick its own."""
    faust_fixes.apply()
    app = faust.App(
        settings.topic(settings.app_id),
        broker=[f"kafka://{h.strip()}" for h in settings.kafka_bootstrap.split(",")],
        broker_credentials=broker_credentials(settings),
        store=settings.store,
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        web_enabled=settings.web_enabled,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        web_host=settings.web_host,
        key_serializer="raw",
        value_serializer="raw",
        producer_acks=-1,
        # Stages flush once per batch of records, so the producer may gather: fewer,
        # larger requests (a notice is ~6 KB; Faust's default batch is 16 KiB).
        producer_linger=PRODUCER_LINGER,
        producer_max_batch_size=PRODUCER_MAX_BATCH,
        broker_commit_interval=1.0,
        # A dead worker's partitions move on after the session timeout; SIGTERM leaves
        # the group at once (docs/reliability.md).
        broker_session_timeout=settings.kafka_session_timeout,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval,
        stream_wait_empty=True,
        # No standby tables: Faust clears queued standby changelog records whenever flow
        # resumes, so a standby can miss entries; actives recover from the changelog.
        table_standby_replicas=0,
    )
    pipe = Pipeline(settings=settings, app=app)
    for spec in t.ALL_TOPICS:
        pipe.topics[spec.name] = app.topic(
            settings.topic(spec.name),
            key_type=bytes,
            value_type=bytes,
            partitions=settings.partitions,
            internal=False,
        )
    # Keys and values are raw bytes (contracts are decoded by the stages). Writes go
    # to the partition of the current event, which the stage sets per record.
    for name in t.TABLES:
        pipe.tables[name] = app.Table(
            name,
            default=None,
            partitions=settings.partitions,
            key_type=bytes,
            value_type=bytes,
        )
    if register_agents:
        from preaviso.agents import register_all

        register_all(pipe)
    return pipe
