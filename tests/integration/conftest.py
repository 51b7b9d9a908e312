"""A real stack per test: the session's Kafka broker, a mail catcher and a worker process."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from preaviso.devtools.catcher import CatcherProcess
from preaviso.devtools.observe import SinkBox
from preaviso.devtools.rig import Rig
from preaviso.devtools.sink import SinkProcess
from preaviso.devtools.worker import WorkerProcess
from preaviso.settings import Settings


@dataclass
class Stack:
    settings: Settings
    mail_dir: Path
    tmp: Path
    worker: WorkerProcess | None = None

    def start_worker(self, data_dir: Path | None = None) -> WorkerProcess:
        if data_dir is not None:
            self.settings = self.settings.model_copy(update={"data_dir": data_dir})
        self.worker = WorkerProcess(self.settings, self.tmp / "worker.log").start()
        return self.worker

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None


@pytest.fixture
def catcher(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CatcherProcess]:
    """The mail catcher; it offers PIPELINING unless a test passes False (indirect)."""
    pipelining: bool = getattr(request, "param", True)
    with CatcherProcess(tmp_path / "mail", pipelining=pipelining) as proc:
        yield proc


@pytest.fixture
def stack(
    kafka_bootstrap: str, topic_prefix: str, catcher: CatcherProcess, tmp_path: Path
) -> Iterator[Stack]:
    host, port = catcher.host, catcher.port
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        partitions=3,
        smtp_host=host,
        smtp_port=port,
        data_dir=tmp_path / "data",
        connect_timeout=5,
    )
    s = Stack(settings=settings, mail_dir=tmp_path / "mail", tmp=tmp_path)
    try:
        yield s
    finally:
        s.stop_worker()


def rig_settings(
    kafka_bootstrap: str, topic_prefix: str, smtp: CatcherProcess, tmp: Path
) -> Settings:
    """Fault tests' workers: 4 partitions, the session's broker, the given SMTP server."""
    return Settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        partitions=4,
        smtp_host=smtp.host,
        smtp_port=smtp.port,
        data_dir=tmp / "data",
        connect_timeout=5,
    )


@pytest.fixture
def rig(
    kafka_bootstrap: str, topic_prefix: str, catcher: CatcherProcess, tmp_path: Path
) -> Iterator[Rig]:
    """Named worker processes with 4 partitions, for fault tests."""
    settings = rig_settings(kafka_bootstrap, topic_prefix, catcher, tmp_path)
    rig = Rig(settings, tmp_path, catcher.out_dir)
    try:
        yield rig
    finally:
        rig.close()


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[SinkProcess]:
    """The SMTP sink (``devtools/sink.py``): unlike the catcher it offers CHUNKING, so the
    worker's connections carry two mails at once, as with Postfix 3.4+ and the big relays."""
    with SinkProcess(tmp_path / "sink") as process:
        yield process


@pytest.fixture
def sink_rig(
    kafka_bootstrap: str, topic_prefix: str, sink: SinkProcess, tmp_path: Path
) -> Iterator[Rig]:
    """``rig``, against the sink; ``rig.mail.control`` asks it."""
    settings = rig_settings(kafka_bootstrap, topic_prefix, sink, tmp_path)
    control = sink.control()
    rig = Rig(settings, tmp_path, SinkBox(control))
    try:
        yield rig
    finally:
        rig.close()
        control.close()


@pytest.fixture
def seed() -> int:
    """Where the faults strike; printed, and set with PREAVISO_CHAOS_SEED to replay a run."""
    value = int(os.environ.get("PREAVISO_CHAOS_SEED") or random.SystemRandom().randrange(10**6))
    print(f"seed {value}: rerun with PREAVISO_CHAOS_SEED={value}")
    return value
