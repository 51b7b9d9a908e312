"""A mail catcher: a real SMTP server, in its own process, that files each mail as .eml.

    python -m preaviso.devtools.catcher --host 127.0.0.1 --port 0 --out DIR --port-file F

Each accepted message is written byte for byte (as received, CRLF) to
``DIR/<UTC timestamp>-<counter>-<Message-ID>.eml`` before the server answers 250, so once
a send returns, its file is there. Files appear atomically (written under a hidden
temporary name, then renamed): a reader never sees half a mail. No fsync: this is a
development tool, built to keep up with thousands of mails a second.

Its own process, so the catcher's CPU does not come out of the sender's event loop, and
demos and tests exercise real SMTP over real sockets. ``CatcherProcess`` runs it for them.
"""

from __future__ import annotations

import argparse
import asyncio
import email.policy
import itertools
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from aiosmtpd.smtp import SMTP

from preaviso.devtools.lifeline import die_with_parent

__all__ = [
    "CatcherError",
    "CatcherProcess",
    "EmlWriter",
    "ehlo_lines",
    "main",
    "message_id_of",
    "serve",
]

DEFAULT_MAX_SIZE = 64 * 1024 * 1024
_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*<([^>\r\n]{1,200})>", re.IGNORECASE | re.MULTILINE)
_UNSAFE_NAME = re.compile(rb"[^A-Za-z0-9._@+-]")
_PORT_FILE = ".catcher.port"


def ehlo_lines(session: Any, hostname: str, responses: list[str], *, pipelining: bool) -> list[str]:
    """What an aiosmtpd ``handle_EHLO`` hook answers: aiosmtpd's lines, plus PIPELINING
    (RFC 2920) if offered, as real servers offer it.

    aiosmtpd reads commands one after another from its buffer, so it serves a pipelining
    client as it should; it just does not say so itself.
    """
    session.host_name = hostname  # what aiosmtpd does itself when there is no hook
    if pipelining:
        responses.insert(len(responses) - 1, "250-PIPELINING")
    return responses


class EmlWriter:
    """aiosmtpd handler: save each message under a sortable, readable file name."""

    def __init__(self, out_dir: Path, *, pipelining: bool = True) -> None:
        self.out_dir = out_dir
        self.pipelining = pipelining
        self._counter = itertools.count(1)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        return ehlo_lines(session, hostname, responses, pipelining=self.pipelining)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        name = self.save(envelope.original_content or b"")
        return f"250 2.0.0 Ok: saved as {name}"

    def save(self, content: bytes) -> str:
        """Write ``content`` atomically and return the file name.

        Synchronous on purpose: a small write without fsync costs less than a hop to a
        thread, and finishing it before the 250 is what makes "sent" mean "on disk".
        """
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        name = f"{stamp}-{next(self._counter):06d}-{_id_for_name(content)}.eml"
        tmp = self.out_dir / f".{name}.tmp"
        tmp.write_bytes(content)
        os.replace(tmp, self.out_dir / name)
        return name


def read_mails(out_dir: Path) -> list[EmailMessage]:
    """The mails saved in ``out_dir``, parsed with ``email.policy.default``, oldest first."""
    parser = BytesParser(policy=email.policy.default)
    return [parser.parsebytes(path.read_bytes()) for path in sorted(out_dir.glob("*.eml"))]


def message_id_of(content: bytes) -> bytes | None:
    """The Message-ID of a raw mail, without angle brackets, read from its header only."""
    headers_end = content.find(b"\r\n\r\n")
    match = _MESSAGE_ID.search(content, 0, headers_end if headers_end >= 0 else len(content))
    return match[1] if match else None


def _id_for_name(content: bytes) -> str:
    found = message_id_of(content)
    if found is None:
        return "no-message-id"
    return _UNSAFE_NAME.sub(b"_", found)[:80].decode("ascii")


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def serve(
    host: str,
    port: int,
    out_dir: Path,
    *,
    port_file: Path | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
    handler: EmlWriter | None = None,
) -> None:
    """Run the catcher (or another ``EmlWriter``, e.g. a faulty one) until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    handler = handler or EmlWriter(out_dir)

    def protocol() -> SMTP:
        return SMTP(
            handler,
            hostname="preaviso-catcher",  # else aiosmtpd resolves the FQDN per connection
            decode_data=False,
            enable_SMTPUTF8=True,
            data_size_limit=max_size,
            loop=loop,
        )

    server = await loop.create_server(protocol, host=host, port=port)
    actual_port: int = server.sockets[0].getsockname()[1]
    if port_file is not None:
        _write_atomically(port_file, f"{actual_port}\n")
    print(f"mail catcher listening on {host}:{actual_port}, saving to {out_dir}", flush=True)

    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def server_arguments(parser: argparse.ArgumentParser, default_port: int) -> None:
    """The options every mail server of the devtools takes: where to listen and save."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (an IP address)")
    parser.add_argument(
        "--port", type=int, default=default_port, help="port to bind; 0 picks a free one"
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for the .eml files")
    parser.add_argument("--port-file", type=Path, help="write the bound port here once listening")
    parser.add_argument(
        "--no-pipelining", dest="pipelining", action="store_false",
        help="do not offer PIPELINING (a client then sends one command at a time)",
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m preaviso.devtools.catcher",
        description="SMTP server that saves every received mail as an .eml file.",
    )
    server_arguments(parser, default_port=1025)
    parser.add_argument(
        "--max-size", type=int, default=DEFAULT_MAX_SIZE, help="largest message in bytes"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    handler = EmlWriter(args.out, pipelining=args.pipelining)
    try:
        asyncio.run(
            serve(
                args.host,
                args.port,
                args.out,
                port_file=args.port_file,
                max_size=args.max_size,
                handler=handler,
            )
        )
    except OSError as exc:
        print(f"mail catcher: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    return 0


# -- running it from tests and demos -----------------------------------------------------


class CatcherError(RuntimeError):
    """The catcher process did not start (its stderr is in the message)."""


class CatcherProcess:
    """Run the catcher as a child process; ``with CatcherProcess(dir) as c: c.port ...``."""

    module = "preaviso.devtools.catcher"
    """The server the child runs (a subclass names another)."""

    def __init__(
        self,
        out_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 15.0,
        pipelining: bool = True,
    ) -> None:
        self.out_dir = out_dir
        self.host = host
        self.port = port
        self.pipelining = pipelining
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    def start(self) -> tuple[str, int]:
        """Spawn the catcher and wait until it listens; returns ``(host, port)``."""
        if self._process is not None:
            raise CatcherError("the catcher is already running")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        port_file = self.out_dir / _PORT_FILE
        port_file.unlink(missing_ok=True)
        # The child imports this very source tree, wherever it is installed from.
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (root, env.get("PYTHONPATH"))))
        # A file, not a pipe: it can never fill up and block the child. Closed by stop().
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self._process = subprocess.Popen(
            self._command(port_file),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            env=env,
            preexec_fn=die_with_parent(),
        )
        deadline = time.monotonic() + self.startup_timeout
        while not port_file.exists():
            if self._process.poll() is not None:
                message = f"mail catcher exited with code {self._process.returncode}"
                raise CatcherError(f"{message}:\n{self._stop_and_read_stderr()}")
            if time.monotonic() > deadline:
                message = f"mail catcher did not listen within {self.startup_timeout:g}s"
                raise CatcherError(f"{message}:\n{self._stop_and_read_stderr()}")
            time.sleep(0.02)
        self.port = int(port_file.read_text())
        return self.host, self.port

    def _command(self, port_file: Path) -> list[str]:
        """The child's command line: ``module`` with the options every server takes."""
        return [
            sys.executable,
            "-m",
            self.module,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--out",
            str(self.out_dir),
            "--port-file",
            str(port_file),
            *([] if self.pipelining else ["--no-pipelining"]),
        ]

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 5 seconds; returns the exit code (0: clean stop)."""
        process, self._process = self._process, None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if process is None:
            return None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def files(self) -> list[Path]:
        """The saved mails, oldest first."""
        return sorted(self.out_dir.glob("*.eml"))

    def messages(self) -> list[EmailMessage]:
        """The saved mails parsed with ``email.policy.default``, oldest first."""
        return read_mails(self.out_dir)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _stop_and_read_stderr(self) -> str:
        stderr = self._stderr
        self._stderr = None
        self.stop()
        if stderr is None:
            return ""
        with stderr:
            stderr.seek(0)
            return stderr.read().decode(errors="replace").strip()


if __name__ == "__main__":
    sys.exit(main())
