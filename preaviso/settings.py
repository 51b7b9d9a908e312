"""Every setting, read from ``PREAVISO_*`` environment variables (or a .env file)."""

from __future__ import annotations

import os
from enum import StrEnum
from importlib.util import find_spec
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SmtpTls(StrEnum):
    NONE = "none"
    STARTTLS = "starttls"
    TLS = "tls"


class EventLoop(StrEnum):
    AUTO = "auto"
    UVLOOP = "uvloop"
    ASYNCIO = "asyncio"


class KafkaSecurity(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class Settings(BaseSettings):
    """One object the worker, the CLI and the demo share; documented in the README."""

    model_config = SettingsConfigDict(env_prefix="PREAVISO_", env_file=".env", extra="ignore")

    # Kafka
    kafka_bootstrap: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, comma-separated."
    )
    kafka_security_protocol: KafkaSecurity = Field(
        KafkaSecurity.PLAINTEXT, description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    kafka_sasl_mechanism: str = Field(
        "SCRAM-SHA-512", description="SASL mechanism when SASL is used."
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password.")
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle to verify the brokers.")
    topic_prefix: str = Field(
        "preaviso.", description="Prefix of every topic name, so environments can share a cluster."
    )
    partitions: Annotated[int, Field(ge=1, le=1000)] = Field(
        4, description="Partitions of every co-partitioned topic."
    )
    replication_factor: Annotated[int, Field(ge=1)] = Field(
        1, description="Replication factor of created topics."
    )
    connect_timeout: Annotated[float, Field(gt=0)] = Field(
        10.0, description="Seconds to wait for Kafka or SMTP before reporting them unreachable."
    )

    kafka_session_timeout: Annotated[float, Field(ge=6, le=300)] = Field(
        10.0,
        description="Seconds without a heartbeat before a worker's partitions go to another.",
    )
    directory_batch: Annotated[int, Field(ge=1, le=100_000)] = Field(
        5000,
        description="Directory records taken per fetch, written and committed together.",
    )
    kafka_heartbeat_interval: Annotated[float, Field(gt=0, le=100)] = Field(
        3.0, description="Seconds between heartbeats; at most a third of the session timeout."
    )

    # Worker
    app_id: str = Field(
        "preaviso", description="Faust app id: the consumer group and the table changelog prefix."
    )
    data_dir: Path = Field(Path(".preaviso/data"), description="Worker state (RocksDB tables).")
    store: str = Field(
        "rocksdb://", description="Table store: rocksdb:// for workers, memory:// for tests."
    )
    event_loop: EventLoop = Field(
        EventLoop.AUTO,
        description="The worker's event loop: auto (uvloop when installed), uvloop or asyncio.",
    )
    compose_processes: Annotated[int, Field(ge=0, le=16)] = Field(
        default_factory=lambda: 1 if (os.cpu_count() or 1) >= 2 else 0,
        description="Child processes that render notices, beside the worker's own thread "
        "(0: render in the worker; default 1 where there are 2 or more cores).",
    )
    compose_nice: Annotated[int, Field(ge=0, le=19)] = Field(
        10,
        description="How much lower the composing processes' CPU priority is than the "
        "worker's (nice): they yield a busy core to the loop that sends the mails "
        "(0: the same priority).",
    )
    web_enabled: bool = Field(False, description="Serve the worker's web endpoints.")
    web_host: str = Field(
        "127.0.0.1", description="Address the web endpoints bind (loopback by default)."
    )
    web_port: int = Field(6066, description="Port of the web endpoints.")

    # Mail
    smtp_host: str = Field("127.0.0.1", description="SMTP server host.")
    smtp_port: int = Field(1025, description="SMTP server port.")
    smtp_tls: SmtpTls = Field(SmtpTls.NONE, description="none, starttls or tls (implicit).")
    smtp_verify_tls: bool = Field(True, description="Verify the SMTP server's certificate.")
    smtp_username: str | None = Field(None, description="SMTP AUTH user name.")
    smtp_password: SecretStr | None = Field(None, description="SMTP AUTH password.")
    smtp_connections: Annotated[int, Field(ge=1, le=64)] = Field(
        4, description="Pooled SMTP connections: the notices a worker sends at once."
    )
    smtp_timeout: Annotated[float, Field(gt=0)] = Field(
        30.0, description="Seconds for one SMTP command."
    )
    smtp_data_timeout: Annotated[float | None, Field(gt=0)] = Field(
        None,
        description="Seconds to wait for the server's answer once the whole message is "
        "sent; unset: PREAVISO_SMTP_TIMEOUT. A server that kept the mail and answers later "
        "gets it again; a rebalance waits for the answer (Faust allows it 60 s).",
    )
    smtp_unrecorded_max: Annotated[int | None, Field(ge=1, le=1024)] = Field(
        None,
        description="Mails answered by the SMTP server that may wait for their receipt "
        "and ledger entry at once; unset: six a connection, at most 24 (never fewer than "
        "the connections). More keeps the connections busy while Kafka writes; a crash "
        "may send each again.",
    )
    smtp_pipelining: bool = Field(
        True,
        description="Send MAIL, RCPT and DATA together when the server offers PIPELINING "
        "(RFC 2920), and the message with them as a BDAT chunk when it also offers "
        "CHUNKING (RFC 3030): one or two round trips a mail instead of four.",
    )
    smtp_retry_max_age: Annotated[float, Field(gt=0)] = Field(
        86400.0,
        description="Seconds a notice refused with 4xx is retried, from its first refusal; "
        "then it gets a failed receipt.",
    )
    mail_from: str = Field(
        "Preaviso <avisos@example.com>", description="From header of every notice."
    )
    message_id_domain: str = Field(
        "preaviso.example.com", description="Domain of the deterministic Message-IDs."
    )
    company_name: str = Field("Example Appliances", description="Company named in the notices.")

    @model_validator(mode="after")
    def _heartbeat_within_session(self) -> Settings:
        if self.kafka_heartbeat_interval * 3 > self.kafka_session_timeout:
            raise ValueError(
                f"PREAVISO_KAFKA_HEARTBEAT_INTERVAL ({self.kafka_heartbeat_interval:g}) must be "
                f"at most a third of PREAVISO_KAFKA_SESSION_TIMEOUT "
                f"({self.kafka_session_timeout:g}); lower the interval or raise the timeout"
            )
        return self

    @field_validator("mail_from")
    @classmethod
    def _mail_from_is_a_mailbox(cls, value: str) -> str:
        """Checked whenever settings are loaded, by what writes the From header (and the
        envelope's parser): a bad value would otherwise fail every notice."""
        from preaviso.mail.message import from_line  # not at the top: mail imports us

        try:
            from_line(value)
        except ValueError as exc:
            raise ValueError(f"{exc}; write it as Name <address@domain> or address@domain") from exc
        return value

    @field_validator("event_loop")
    @classmethod
    def _event_loop_installed(cls, value: EventLoop) -> EventLoop:
        if value is EventLoop.UVLOOP and find_spec("uvloop") is None:
            raise ValueError(
                "PREAVISO_EVENT_LOOP is uvloop, but uvloop is not installed here; "
                "install it (pip install uvloop), or set auto or asyncio"
            )
        return value

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"
