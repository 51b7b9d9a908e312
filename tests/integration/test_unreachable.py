"""A worker or CLI pointed at nothing says so within seconds, naming the address."""

from __future__ import annotations

import time

import pytest

from preaviso.devtools.kafka import free_ports
from preaviso.settings import Settings
from tests.integration.helpers import cli

pytestmark = pytest.mark.integration

EVENT = (
    '{"type": "CustomerUpserted", "customer_id": "C1", "email": "a@example.com",'
    ' "name": "Ana", "region": "ES-MD"}'
)


def closed_port() -> int:
    return free_ports(1)[0]


def test_the_worker_names_an_unreachable_broker_and_exits(tmp_path: object) -> None:
    port = closed_port()
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{port}", connect_timeout=3)
    started = time.monotonic()

    result = cli(settings, "worker", timeout=60)

    assert result.returncode == 1
    assert time.monotonic() - started < 30
    assert f"Kafka is not reachable at 127.0.0.1:{port}" in result.stderr
    assert "PREAVISO_KAFKA_BOOTSTRAP" in result.stderr


def test_the_worker_names_an_unreachable_smtp_server_and_exits(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    port = closed_port()
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        smtp_port=port,
        connect_timeout=3,
    )
    started = time.monotonic()

    result = cli(settings, "worker", timeout=60)

    assert result.returncode == 1
    assert time.monotonic() - started < 30
    assert f"cannot reach SMTP server 127.0.0.1:{port}" in result.stderr
    assert "PREAVISO_SMTP_HOST" in result.stderr


def test_publish_names_an_unreachable_broker_and_exits() -> None:
    port = closed_port()
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{port}", connect_timeout=3)
    started = time.monotonic()

    result = cli(settings, "publish", "-", stdin=EVENT, timeout=60)

    assert result.returncode == 1
    assert time.monotonic() - started < 30
    assert f"Kafka is not reachable at 127.0.0.1:{port}" in result.stderr


@pytest.mark.parametrize("field", ["partitions", "directory_batch"])
def test_a_bad_setting_is_reported_by_its_variable_name(field: str) -> None:
    bad = Settings().model_copy(update={field: 0})

    result = cli(bad, "publish", "-", stdin=EVENT, timeout=60)

    said = " ".join(result.stderr.split())  # the console wraps long lines
    assert result.returncode == 2
    assert f"setting PREAVISO_{field.upper()}" in said
    assert "greater than or equal to 1" in said
