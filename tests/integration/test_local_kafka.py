"""The project's own broker really works, and really goes away when stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from preaviso.devtools.kafka import LocalKafka
from preaviso.devtools.kafka_fetch import KafkaToolMissing, fetch_kafka, find_java

pytestmark = pytest.mark.integration


async def test_topic_produce_consume(kafka_bootstrap: str, topic_prefix: str) -> None:
    topic = f"{topic_prefix}roundtrip"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
        described = await admin.describe_topics([topic])
        assert len(described[0]["partitions"]) == 3
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, b"hello", key=b"k", partition=2)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"{topic_prefix}group",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        record = await consumer.getone()
    finally:
        await consumer.stop()
    assert (record.partition, record.offset) == (sent.partition, sent.offset)
    assert (record.key, record.value) == (b"k", b"hello")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_stop_ends_the_broker() -> None:
    try:
        libs = fetch_kafka()
        find_java()
    except KafkaToolMissing as exc:
        pytest.skip(str(exc))
    broker = LocalKafka(libs=libs)
    with broker:
        pid, port, controller_port = broker.pid, broker.port, broker.controller_port
        workdir = broker.workdir
        assert pid is not None
        assert workdir is not None
        assert broker.is_running()
        assert _port_open(port)
    assert not broker.is_running()
    assert not _pid_alive(pid)  # Popen.wait reaped it: no zombie either
    assert not _port_open(port)
    assert not _port_open(controller_port)
    assert not workdir.exists()
    broker.stop()  # idempotent


STARTER = """
import sys
from pathlib import Path
from preaviso.devtools.kafka import LocalKafka
broker = LocalKafka(base_dir=Path(sys.argv[1])).start()
print(broker.pid, broker.port, broker.workdir, flush=True)
import time
time.sleep(120)
"""


def _killed_starter(base_dir: Path) -> tuple[int, int, Path]:
    """A process that started a broker in ``base_dir``, then SIGKILLed: the broker's pid,
    its port and its run dir."""
    try:
        fetch_kafka()
        find_java()
    except KafkaToolMissing as exc:
        pytest.skip(str(exc))
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER, str(base_dir)], stdout=subprocess.PIPE, text=True
    )
    assert starter.stdout is not None
    pid, port, workdir = starter.stdout.readline().split()
    assert _port_open(int(port))
    starter.send_signal(signal.SIGKILL)  # no atexit, no stop(): only the kernel can tell it
    starter.wait()
    return int(pid), int(port), Path(workdir)


def test_a_broker_whose_starter_is_killed_outright_goes_away_too(tmp_path: Path) -> None:
    pid, port, _ = _killed_starter(tmp_path)

    deadline = time.monotonic() + 30  # its leader thread may show as gone before its port
    while (_running(pid) or _port_open(port)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(pid)
    assert not _port_open(port)


def test_the_run_dir_a_killed_starter_left_goes_when_the_next_broker_starts(
    tmp_path: Path,
) -> None:
    pid, port, left = _killed_starter(tmp_path)
    deadline = time.monotonic() + 30
    while (_running(pid) or _port_open(port)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (left / "server.log").exists()  # the JVM is gone, its logs are not

    with LocalKafka(base_dir=tmp_path) as broker:
        assert not left.exists()
        assert broker.workdir is not None
        assert broker.workdir.exists()


def _running(pid: int) -> bool:
    """Any of its threads alive (once orphaned, its reaping is not ours to do): a JVM's
    leader thread shows as a zombie while its other threads still hold its files."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False
    for task in tasks:
        try:
            state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            return True
    return False
