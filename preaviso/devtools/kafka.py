"""The project's own real Apache Kafka broker (KRaft, single node) for dev, demo and tests.

Why: tests and the demo need a *real* broker, not a mock, without Docker or a
tarball checked into git. ``kafka_fetch`` gets the broker jars (from Maven Central
into a per-user cache) and the Java runtime; each ``LocalKafka`` formats a
throw-away log dir, binds free loopback ports and runs ``kafka.Kafka`` in its own
process group.

CLI: ``python -m preaviso.devtools.kafka fetch`` or ``... run``.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import signal
import socket
import string
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from preaviso.devtools import leftovers, stop_on_sigterm
from preaviso.devtools.kafka_fetch import (
    KAFKA_VERSION,
    KafkaDevError,
    fetch_kafka,
    find_java,
    resource,
    tail,
)
from preaviso.devtools.kafka_probe import probe_metadata
from preaviso.devtools.lifeline import die_with_parent

# Dev machines have ~2 cores: a small heap and collector and a quick (C1-only) JIT start faster.
DEFAULT_JVM_OPTS = ("-Xms256m", "-Xmx768m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")
_BROKER_MAIN = "kafka.Kafka"
_STORAGE_TOOL = "kafka.tools.StorageTool"
_WORKDIR_PREFIX = "preaviso-kafka-"

log = logging.getLogger(__name__)


class KafkaStartError(KafkaDevError):
    """The broker did not format, start or become ready in time."""


# --------------------------------------------------------------------------- config


def free_ports(count: int = 2, host: str = "127.0.0.1") -> list[int]:
    """Distinct ports the OS says are free now (all sockets held until all are picked)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def new_cluster_id() -> str:
    """A Kafka-style Uuid string (url-safe base64, 22 chars) without a JVM round trip."""
    while True:
        raw = secrets.token_bytes(16)
        text = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        # Kafka reserves the all-zero and "metadata topic" ids and rejects a leading '-'.
        if not text.startswith("-") and int.from_bytes(raw) > 1:
            return text


def render_server_properties(
    *, port: int, controller_port: int, log_dir: Path, host: str = "127.0.0.1",
    extra: Mapping[str, str] | None = None,
) -> str:  # fmt: skip
    """Fill ``kafka-server.properties``; ``extra`` keys come last, so they win."""
    text = string.Template(resource("kafka-server.properties")).substitute(
        host=host, port=port, controller_port=controller_port, log_dir=log_dir
    )
    return text + "".join(f"{k}={v}\n" for k, v in (extra or {}).items())


# --------------------------------------------------------------------------- broker


class LocalKafka:
    """A throw-away single-node KRaft broker on loopback: ``with LocalKafka() as k: k.bootstrap``.

    ``class_sharing`` keeps a JVM class-data archive next to the jars (built when the first
    broker exits, validated before use); it cuts broker startup by about 40%.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        controller_port: int | None = None,
        keep: bool = False,
        startup_timeout: float = 60.0,
        base_dir: Path | None = None,
        libs: Path | None = None,
        jvm_opts: Sequence[str] = DEFAULT_JVM_OPTS,
        extra_config: Mapping[str, str] | None = None,
        class_sharing: bool = True,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = self.controller_port = 0
        self.keep, self.startup_timeout = keep, startup_timeout
        self.workdir: Path | None = None
        self.startup_seconds: float | None = None
        self._want = (port, controller_port)
        self._base_dir, self._libs, self._extra = base_dir, libs, dict(extra_config or {})
        self._jvm_opts, self._class_sharing = tuple(jvm_opts), class_sharing
        self._proc: subprocess.Popen[bytes] | None = None
        self._stdout: IO[bytes] | None = None
        self._dump: tuple[Path, Path, list[str]] | None = None  # (tmp, archive, check cmd)
        self._claim: leftovers.Claim | None = None

    @property
    def bootstrap(self) -> str:
        """``host:port`` for aiokafka/faust; only valid while started."""
        if self._proc is None:
            raise KafkaStartError("LocalKafka is not started")
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path | None:
        """The broker's own log (``server.log`` in the run dir)."""
        return self.workdir / "server.log" if self.workdir else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Format, launch and wait until the broker answers metadata requests."""
        if self._proc is not None:
            raise KafkaStartError("LocalKafka already started")
        libs = self._libs or fetch_kafka()
        java = find_java()
        began, self.startup_seconds = time.monotonic(), None
        atexit.register(self.stop)
        try:
            # A free port can be taken before the JVM binds it; retry only if we picked it.
            attempts = 1 if any(self._want) else 3
            for attempt in range(1, attempts + 1):
                if self._launch(java, libs):
                    break
                self._cleanup_proc()
                if attempt == attempts:
                    raise KafkaStartError(f"ports {self.port}/{self.controller_port} are taken")
                log.info("port clash starting Kafka, retrying with new ports")
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        log.info("Kafka %s up at %s in %.1fs", KAFKA_VERSION, self.bootstrap, self.startup_seconds)
        return self

    def _jvm(self, cmd: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            cmd, capture_output=True, text=True, check=False, timeout=120, cwd=self.workdir
        )

    def _launch(self, java: str, libs: Path) -> bool:
        """One start attempt; False means a port clash worth retrying."""
        wd = self.workdir = self.workdir or self._new_workdir()
        shutil.rmtree(wd / "data", ignore_errors=True)
        picked = free_ports(2, self.host)
        self.port, self.controller_port = self._want[0] or picked[0], self._want[1] or picked[1]
        props = wd / "server.properties"
        props.write_text(
            render_server_properties(
                port=self.port, controller_port=self.controller_port, log_dir=wd / "data",
                host=self.host, extra=self._extra,
            )
        )  # fmt: skip
        (wd / "log4j2.xml").write_text(resource("log4j2.xml"))
        base = [
            java, *self._jvm_opts, f"-Dlog4j2.configurationFile={wd / 'log4j2.xml'}",
            f"-Dpreaviso.kafka.log={wd / 'server.log'}", "-cp", f"{libs}{os.sep}*",
        ]  # fmt: skip
        archive = _class_archive(java, libs) if self._class_sharing else None
        share = [f"-XX:SharedArchiveFile={archive}"] if archive and archive.is_file() else []
        fmt_cmd = [_STORAGE_TOOL, "format", "-t", new_cluster_id(), "-c", str(props)]
        fmt = self._jvm([*base, *share, *fmt_cmd])
        if fmt.returncode != 0 and archive and share:  # was it the archive? then drop it
            shutil.rmtree(wd / "data", ignore_errors=True)
            retry = self._jvm([*base, *fmt_cmd])
            if retry.returncode == 0:
                archive.unlink(missing_ok=True)
                share, fmt = [], retry
        if fmt.returncode != 0:
            raise KafkaStartError(
                f"formatting the KRaft log dir failed (exit {fmt.returncode}):\n"
                f"{tail(fmt.stdout + fmt.stderr)}"
            )
        if archive and not share:  # no archive yet: let this broker write one when it exits
            tmp = archive.with_name(f"{archive.name}.{os.getpid()}-{id(self)}.tmp")
            share = [f"-XX:ArchiveClassesAtExit={tmp}"]
            self._dump = (tmp, archive, [*base, "-Xshare:on", f"-XX:SharedArchiveFile={tmp}"])
        self._stdout = (wd / "stdout.log").open("ab")
        self._proc = subprocess.Popen(
            [*base, *share, _BROKER_MAIN, str(props)], cwd=wd,
            stdin=subprocess.DEVNULL, stdout=self._stdout, stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: terminal Ctrl-C does not hit it
            preexec_fn=die_with_parent(),  # but it dies with this process
            pass_fds=() if self._claim is None or self._claim.fd is None else (self._claim.fd,),
        )  # fmt: skip
        return self._wait_ready()

    def _new_workdir(self) -> Path:
        """A run dir of its own; first, those of brokers whose starter was killed go."""
        parent = self._base_dir or Path(tempfile.gettempdir())
        for gone in leftovers.sweep(parent, _WORKDIR_PREFIX):
            log.info("deleted %s, left by a killed run", gone)
        wd = Path(tempfile.mkdtemp(prefix=_WORKDIR_PREFIX, dir=self._base_dir))
        if not self.keep:  # the JVM inherits the claim's lock: it holds as long as either
            self._claim = leftovers.Claim(wd)
        return wd

    def _wait_ready(self) -> bool:
        assert self._proc is not None
        assert self.workdir is not None
        log_path = self.workdir / "server.log"
        deadline = time.monotonic() + self.startup_timeout
        last_error = "no attempt yet"
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                stdout = _read(self.workdir / "stdout.log")
                if "Address already in use" in _read(log_path) + stdout:
                    return False
                raise KafkaStartError(
                    f"Kafka broker exited with code {code} during startup.\n"
                    f"{_log_report(log_path)}\n--- stdout/stderr ---\n{tail(stdout, 15)}"
                )
            try:
                if self.port in probe_metadata(self.host, self.port):
                    return True
                last_error = "metadata lists no broker yet"
            except (OSError, ValueError, struct.error) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.1)
        raise KafkaStartError(
            f"Kafka broker at {self.host}:{self.port} not ready after {self.startup_timeout:g}s "
            f"(last probe: {last_error}).\n{_log_report(log_path)}"
        )

    def _cleanup_proc(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group, give Kafka ``timeout`` s to shut down, then SIGKILL."""
        proc, self._proc = self._proc, None
        clean = True
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("Kafka pid %d ignored SIGTERM for %.0fs; killing", proc.pid, timeout)
                clean = False
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self._stdout is not None:
            self._stdout.close()
            self._stdout = None
        if self._dump is not None:
            tmp, archive, check = self._dump
            self._dump = None
            # A truncated archive crashes the JVM, so only a verified one is published.
            # Only a fully started broker has loaded the classes worth archiving.
            ok = clean and self.startup_seconds is not None and tmp.is_file()
            if ok and self._jvm([*check, "-version"]).returncode == 0:
                os.replace(tmp, archive)
            tmp.unlink(missing_ok=True)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the broker and delete its run dir (unless ``keep``); safe to call twice."""
        atexit.unregister(self.stop)
        self._cleanup_proc(timeout)
        if self.workdir is not None and not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        if self._claim is not None:  # kept after all (evidence of a failure): never swept
            self._claim.release(keep=self.keep)
            self._claim = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _class_archive(java: str, libs: Path) -> Path:
    """One archive per JDK build and jar set: the JVM only accepts a matching one."""
    real = Path(java).resolve()
    key = hashlib.sha256(f"{real}:{real.stat().st_mtime_ns}:{libs}".encode()).hexdigest()
    return libs.parent / f"classes-{key[:12]}.jsa"


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _log_report(path: Path) -> str:
    """ERROR lines (each with the exception below it) and the tail: the cause is rarely last."""
    lines = _read(path).splitlines()
    errors = [
        f"{line}\n    {lines[i + 1] if i + 1 < len(lines) else ''}"
        for i, line in enumerate(lines)
        if "] ERROR " in line or "] FATAL " in line
    ]
    return (
        f"--- {path}: first errors ---\n" + "\n".join(errors[:6] or ["(none)"])
        + "\n--- tail ---\n" + "\n".join(lines[-15:])
    )  # fmt: skip


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """``fetch`` downloads the jars; ``run`` serves a broker until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m preaviso.devtools.kafka",
        description="The project's own local Kafka broker.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="download the broker jars into the cache and exit")
    run = sub.add_parser("run", help="start a broker, print its bootstrap address, wait")
    run.add_argument("--port", type=int, default=None, help="broker port (default: free port)")
    run.add_argument("--controller-port", type=int, default=None)
    run.add_argument("--keep", action="store_true", help="keep the run dir (logs, data)")
    run.add_argument("--timeout", type=float, default=60.0, help="startup timeout in seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        if args.command == "fetch":
            print(fetch_kafka())
            return 0
        stop_on_sigterm()
        with LocalKafka(
            port=args.port, controller_port=args.controller_port, keep=args.keep,
            startup_timeout=args.timeout,
        ) as broker:  # fmt: skip
            print(broker.bootstrap, flush=True)
            log.info("run dir %s, pid %s; Ctrl-C to stop", broker.workdir, broker.pid)
            while broker.is_running():
                time.sleep(0.5)
            broker.keep = True  # keep the evidence
            log.error("broker exited unexpectedly; see %s", broker.log_path)
            return 1
    except KafkaDevError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        log.info("stopped")
        return 0


if __name__ == "__main__":
    sys.exit(main())
