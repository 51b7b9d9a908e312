"""Session-wide fixtures: one real Kafka broker per test run and per-test topic names."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from preaviso.devtools import stop_on_sigterm
from preaviso.devtools.kafka import LocalKafka
from preaviso.devtools.kafka_fetch import KafkaToolMissing, fetch_kafka

ENV_TEST_BOOTSTRAP = "PREAVISO_TEST_KAFKA_BOOTSTRAP"


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (a CI timeout, a ``kill``) acts as Ctrl-C: pytest ends the session and
    the fixtures stop the broker, mail servers and workers they started. By default
    SIGTERM ended pytest at once and they lived on (seen: a broker left running)."""
    stop_on_sigterm()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """An existing broker from the environment, else our own for the whole session."""
    existing = os.environ.get(ENV_TEST_BOOTSTRAP)
    if existing:
        yield existing
        return
    try:
        libs = fetch_kafka()
    except KafkaToolMissing as exc:
        pytest.skip(f"no local Kafka broker: {exc}")
    broker = LocalKafka(libs=libs).start()  # a failed start raises and stops itself
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def topic_prefix() -> str:
    """A fresh prefix like ``t-1a2b3c4d.`` so tests never share topics on the session broker."""
    return f"t-{uuid.uuid4().hex[:8]}."
