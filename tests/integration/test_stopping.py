"""A stop is prompt whatever the worker is doing, and a stopped worker loses nothing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest

from preaviso.devtools import dataset
from preaviso.devtools.catcher import CatcherProcess
from preaviso.devtools.dataset import policy_for_everyone
from preaviso.devtools.faulty_smtp import FaultySmtpProcess
from preaviso.devtools.observe import MailBox
from preaviso.devtools.worker import WorkerProcess
from preaviso.settings import Settings
from preaviso.streams import topics as t
from preaviso.streams.lag import wait_idle
from tests import oracle
from tests.integration.helpers import cli, jsonl, wait_for

pytestmark = pytest.mark.integration

CUSTOMERS, OWNED = dataset.directory(30, seed=5)


def test_sigterm_ends_a_worker_stuck_on_an_smtp_outage_within_30_s_and_loses_nothing(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    # The server takes connections and hangs up after every DATA, saving nothing:
    # deliver waits for it, retrying, with a notice in hand.
    with FaultySmtpProcess(tmp_path / "outage", lose_after_data=1_000_000) as outage:
        settings = Settings(
            kafka_bootstrap=kafka_bootstrap,
            topic_prefix=topic_prefix,
            partitions=3,
            smtp_host=outage.host,
            smtp_port=outage.port,
            data_dir=tmp_path / "data",
            connect_timeout=5,
        )
        worker = WorkerProcess(settings, tmp_path / "worker.log").start()
        assert cli(settings, "publish", "-", stdin=jsonl([*CUSTOMERS, *OWNED])).returncode == 0
        loaded = [settings.topic(s.name) for s in t.DIRECTORY_TOPICS]
        asyncio.run(wait_idle(settings, loaded, within=90))
        change = policy_for_everyone("stop-during-outage")
        assert cli(settings, "publish", "-", stdin=jsonl([change])).returncode == 0
        wait_for(
            lambda: sum(1 for e in outage.log() if e["what"] == "lost") >= 3,
            timeout=60,
            what="deliver retrying against the outage",
            on_fail=worker.log_tail,
        )
        proc = worker.proc
        assert proc is not None

        stopping = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        took = time.monotonic() - stopping

    assert took < 30, f"SIGTERM took {took:.1f}s\n{worker.log_tail()}"

    with CatcherProcess(tmp_path / "mail") as catcher:
        healed = settings.model_copy(update={"smtp_host": catcher.host, "smtp_port": catcher.port})
        restarted = WorkerProcess(healed, tmp_path / "worker2.log").start()
        try:
            expected = oracle.expected_mails(
                [json.loads(c.model_dump_json()) for c in CUSTOMERS],
                [json.loads(o.model_dump_json()) for o in OWNED],
                json.loads(change.model_dump_json()),
                healed.message_id_domain,
            )
            box = MailBox(tmp_path / "mail")

            def all_arrived() -> bool:
                box.scan()
                return set(box.counts()) >= set(expected)

            wait_for(all_arrived, timeout=90, what="every notice", on_fail=restarted.log_tail)
            time.sleep(3)  # let a late duplicate show
            box.scan()
            counts = box.counts()
        finally:
            restarted.stop()

    assert set(counts) == set(expected)
    assert max(counts.values()) == 1


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux only)")
@pytest.mark.parametrize("settle", [0.0, 5.0], ids=["right-after-the-child-appears", "child-ready"])
def test_a_worker_killed_alone_leaves_no_composing_process_behind(
    kafka_bootstrap: str, topic_prefix: str, catcher: CatcherProcess, tmp_path: Path, settle: float
) -> None:
    """Only the worker's pid is killed (an OOM kill, say), not its process group: its
    child that composes notices sees the worker gone and exits by itself, also when
    the worker dies right after starting it (multiprocessing's resource tracker, a
    child of the worker too, must go as well)."""
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        smtp_host=catcher.host,
        smtp_port=catcher.port,
        data_dir=tmp_path / "data",
        compose_processes=1,
    )
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    assert worker.proc is not None
    pid = worker.proc.pid
    wait_for(
        lambda: bool(children(pid)) and "notices composed in 1 child" in worker.log_tail(),
        timeout=60,
        what="the worker started with its composing process",
        on_fail=worker.log_tail,
    )
    time.sleep(settle)
    child = children(pid)

    os.kill(pid, signal.SIGKILL)
    worker.proc.wait()

    wait_for(lambda: not any(alive(c) for c in child), timeout=15, what="the child exited")


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux ``/proc``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"  # a zombie has exited
