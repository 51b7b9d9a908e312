"""A run dir goes once the process it names is gone, and never before."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from preaviso.devtools.leftovers import OWNER_FILE, claim, owner_alive, sweep

CLAIM_AND_EXIT = """
import sys
from pathlib import Path
from preaviso.devtools.leftovers import claim
claim(Path(sys.argv[1]))
"""


def run_dir(parent: Path, name: str) -> Path:
    path = parent / name
    path.mkdir()
    (path / "server.log").write_text("segments and logs\n")
    return path


def test_a_dir_whose_process_exited_is_swept(tmp_path: Path) -> None:
    dead = run_dir(tmp_path, "preaviso-kafka-dead")
    subprocess.run([sys.executable, "-c", CLAIM_AND_EXIT, str(dead)], check=True)

    assert not owner_alive(dead)
    assert sweep(tmp_path, "preaviso-kafka-") == [dead]
    assert not dead.exists()


def test_a_dir_whose_process_runs_is_kept(tmp_path: Path) -> None:
    mine = run_dir(tmp_path, "preaviso-kafka-mine")
    claim(mine)

    assert sweep(tmp_path, "preaviso-kafka-") == []
    assert (mine / "server.log").exists()


def test_a_dir_that_names_no_process_is_never_touched(tmp_path: Path) -> None:
    kept = run_dir(tmp_path, "preaviso-kafka-kept")  # keep=True, or made before owners
    garbled = run_dir(tmp_path, "preaviso-kafka-garbled")
    (garbled / OWNER_FILE).write_text("not a pid\n")

    assert sweep(tmp_path, "preaviso-kafka-") == []
    assert kept.exists()
    assert garbled.exists()


def test_a_reused_pid_is_not_taken_for_the_process_that_died(tmp_path: Path) -> None:
    reused = run_dir(tmp_path, "preaviso-kafka-reused")
    (reused / OWNER_FILE).write_text(f"{socket.gethostname()} {os.getpid()} 1\n")

    assert sweep(tmp_path, "preaviso-kafka-") == [reused]  # this pid, another start time


def test_a_dir_of_another_host_is_not_judged_by_its_pid(tmp_path: Path) -> None:
    elsewhere = run_dir(tmp_path, "preaviso-kafka-elsewhere")  # a container sharing /tmp
    subprocess.run([sys.executable, "-c", CLAIM_AND_EXIT, str(elsewhere)], check=True)
    owner = (elsewhere / OWNER_FILE).read_text().split()
    (elsewhere / OWNER_FILE).write_text(" ".join(["another-host", *owner[1:]]))

    assert sweep(tmp_path, "preaviso-kafka-") == []
    assert elsewhere.exists()


def test_only_dirs_with_the_prefix_are_looked_at(tmp_path: Path) -> None:
    other = run_dir(tmp_path, "someone-else")
    subprocess.run([sys.executable, "-c", CLAIM_AND_EXIT, str(other)], check=True)

    assert sweep(tmp_path, "preaviso-kafka-") == []
    assert other.exists()
