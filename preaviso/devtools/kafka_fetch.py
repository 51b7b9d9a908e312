"""Get the broker: its jars from Maven Central (once, into a per-user cache) and a Java runtime.

Why: the broker is not checked into git nor run from Docker. ``mvn`` downloads the
jars of one pinned Kafka version into a cache shared by every checkout; a marker
written after a complete copy makes the download safe to interrupt and repeat.
``LocalKafka`` (``devtools/kafka.py``) runs what this module gets.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import subprocess
import time
from importlib import resources
from pathlib import Path

KAFKA_VERSION = "4.1.1"
ENV_CACHE = "PREAVISO_KAFKA_CACHE"
_MARKER = ".complete"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

log = logging.getLogger(__name__)


class KafkaDevError(RuntimeError):
    """Base class so callers can catch every local-broker problem at once."""


class KafkaToolMissing(KafkaDevError):
    """``java`` or ``mvn`` is not installed; tests skip on this, not fail."""


class KafkaFetchError(KafkaDevError):
    """``mvn`` ran but could not download the broker jars."""


# --------------------------------------------------------------------------- fetch


def kafka_cache_dir(version: str = KAFKA_VERSION) -> Path:
    """Where the jars live: outside git, shared by every checkout of the project."""
    root = os.environ.get(ENV_CACHE) or str(Path.home() / ".cache" / "preaviso")
    return Path(root).expanduser() / f"kafka-{version}"


def find_java() -> str:
    """Prefer ``$JAVA_HOME/bin/java`` so a chosen JDK wins over whatever is on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise KafkaToolMissing(
            "java not found (need a JDK/JRE 17+ on PATH or JAVA_HOME) to run the local Kafka "
            "broker; e.g. `apt-get install openjdk-17-jre-headless`."
        )
    return found


def tail(text: str, lines: int = 40) -> str:
    """Last lines of a log, cleaned of colour codes, for error messages."""
    return "\n".join(_ANSI.sub("", text).rstrip().splitlines()[-lines:])


def _is_complete(libs: Path, version: str) -> bool:
    marker = libs / _MARKER
    return marker.is_file() and marker.read_text().strip() == version


def fetch_kafka(version: str = KAFKA_VERSION, cache_dir: Path | None = None) -> Path:
    """Download the broker jars once with ``mvn`` and return the ``libs`` dir.

    Idempotent: a marker is written only after a complete copy, so an
    interrupted download is simply redone on the next call.
    """
    base = cache_dir if cache_dir is not None else kafka_cache_dir(version)
    libs = base / "libs"
    if _is_complete(libs, version):
        return libs
    base.mkdir(parents=True, exist_ok=True)
    with (base / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test workers share one cache; closing unlocks
        if _is_complete(libs, version):  # another process finished it meanwhile
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaToolMissing(
                "mvn (Apache Maven) not found; it downloads the Kafka broker jars from Maven "
                "Central once. Install it (e.g. `apt-get install maven`) or point "
                f"{ENV_CACHE} at a cache that already holds kafka-{version}/libs."
            )
        find_java()  # mvn needs it too; fail with the clearer message
        pom = base / "pom.xml"
        pom.write_text(resource("pom.xml"))
        partial = base / "libs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        cmd = [
            mvn, "-B", "-q", "-Dstyle.color=never", "-f", str(pom),
            f"-Dkafka.version={version}", "dependency:copy-dependencies",
            f"-DoutputDirectory={partial}",
        ]  # fmt: skip
        log.info("fetching Apache Kafka %s jars into %s", version, libs)
        started = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=base)
        jars = sorted(partial.glob("*.jar")) if partial.is_dir() else []
        if proc.returncode != 0 or not any(j.name.startswith("kafka_2.13-") for j in jars):
            raise KafkaFetchError(
                f"mvn failed (exit {proc.returncode}) fetching Kafka {version} jars.\n"
                f"command: {' '.join(cmd)}\n--- mvn output (tail) ---\n"
                f"{tail(proc.stdout + proc.stderr)}\n---\n"
                "Check: network access to Maven Central (https://repo.maven.apache.org), "
                "proxy/mirror settings in ~/.m2/settings.xml, and that the version exists."
            )
        shutil.rmtree(libs, ignore_errors=True)
        partial.rename(libs)
        (libs / _MARKER).write_text(version + "\n")
        log.info("fetched %d jars in %.1fs", len(jars), time.monotonic() - started)
    return libs


def resource(name: str) -> str:
    """A data file of ``preaviso.devtools`` (the pom here; kafka.py's broker config and
    log4j2), wherever the package is installed."""
    return resources.files("preaviso.devtools").joinpath(name).read_text("utf-8")
