"""A run dir goes once nobody holds its claim, and never before."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from preaviso.devtools.leftovers import OWNER_FILE, Claim, sweep

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="no flock on Windows")

CLAIM_AND_WAIT = """
import sys
from pathlib import Path
from preaviso.devtools.leftovers import Claim
Claim(Path(sys.argv[1]))
print("claimed", flush=True)
sys.stdin.read()  # until told to go
"""


def run_dir(parent: Path, name: str) -> Path:
    path = parent / name
    path.mkdir()
    (path / "server.log").write_text("segments and logs\n")
    return path


def claimed_elsewhere(directory: Path) -> subprocess.Popen[str]:
    """Another process (another pid namespace would do the same) holding ``directory``."""
    owner = subprocess.Popen(
        [sys.executable, "-c", CLAIM_AND_WAIT, str(directory)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert owner.stdout is not None
    assert owner.stdout.readline() == "claimed\n"
    return owner


def test_a_dir_whose_owner_exited_is_swept(tmp_path: Path) -> None:
    dead = run_dir(tmp_path, "preaviso-kafka-dead")
    owner = claimed_elsewhere(dead)
    owner.communicate("")  # it exits

    assert sweep(tmp_path, "preaviso-kafka-") == [dead]
    assert not dead.exists()


def test_a_dir_whose_owner_lives_is_kept_whatever_its_pid_says_here(tmp_path: Path) -> None:
    alive = run_dir(tmp_path, "preaviso-kafka-alive")
    owner = claimed_elsewhere(alive)
    (alive / OWNER_FILE).write_text("999999999\n")  # a pid from another namespace, or reused
    try:
        assert sweep(tmp_path, "preaviso-kafka-") == []
        assert (alive / "server.log").exists()
    finally:
        owner.communicate("")


def test_a_dir_this_process_holds_is_kept(tmp_path: Path) -> None:
    mine = run_dir(tmp_path, "preaviso-kafka-mine")
    claim = Claim(mine)

    assert sweep(tmp_path, "preaviso-kafka-") == []
    claim.release()
    assert sweep(tmp_path, "preaviso-kafka-") == [mine]


def test_a_dir_released_to_be_kept_is_never_swept(tmp_path: Path) -> None:
    evidence = run_dir(tmp_path, "preaviso-kafka-evidence")
    Claim(evidence).release(keep=True)

    assert sweep(tmp_path, "preaviso-kafka-") == []
    assert (evidence / "server.log").exists()


def test_a_dir_that_names_no_owner_is_never_touched(tmp_path: Path) -> None:
    kept = run_dir(tmp_path, "preaviso-kafka-kept")  # keep=True, or just made by mkdtemp

    assert sweep(tmp_path, "preaviso-kafka-") == []
    assert kept.exists()


def test_only_dirs_with_the_prefix_are_looked_at(tmp_path: Path) -> None:
    other = run_dir(tmp_path, "someone-else")
    Claim(other).release()

    assert sweep(tmp_path, "preaviso-kafka-") == []
    assert other.exists()
