"""Run `preaviso worker` as a real subprocess, for the demo and the integration tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from preaviso.devtools.lifeline import die_with_parent
from preaviso.settings import Settings


def settings_env(settings: Settings) -> dict[str, str]:
    """The PREAVISO_* variables that reproduce ``settings`` in a child process."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump(mode="json").items():
        if value is None:
            continue
        secret = getattr(settings, name)
        if hasattr(secret, "get_secret_value"):
            value = secret.get_secret_value()
        env[f"PREAVISO_{name.upper()}"] = (
            str(value).lower() if isinstance(value, bool) else str(value)
        )
    return env


class WorkerProcess:
    """A worker in its own process group, its output in a log file."""

    def __init__(
        self,
        settings: Settings,
        log_path: Path,
        loglevel: str = "info",
        *,
        faust_fix: bool = True,
    ) -> None:
        self.settings = settings
        self.log_path = log_path
        self.loglevel = loglevel
        # False runs Faust's own recovery order, to reproduce the upstream bug.
        self.module = "preaviso" if faust_fix else "preaviso.devtools.faust_unfixed"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREAVISO_")}
        env.update(settings_env(self.settings))
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, "worker", "--loglevel", self.loglevel],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 30.0) -> int | None:
        """Ask the worker to stop (SIGTERM: it commits and closes), then insist."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        return proc.returncode

    def freeze(self, seconds: float) -> None:
        """Pause the worker's process group (SIGSTOP) for ``seconds``, then let it go on
        (SIGCONT): a frozen container, or a worker held in a debugger."""
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError("the worker is not running")
        os.killpg(self.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGCONT)

    def kill(self) -> int | None:
        """Crash the worker: SIGKILL to its process group, no chance to commit or close."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return proc.returncode

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
