"""An SMTP server that misbehaves on purpose, in its own process, for the fault tests.

    python -m preaviso.devtools.faulty_smtp --out DIR --port-file F \\
        [--refuse ADDRESS:CODE[:SECONDS]]... [--drop-after-data N] [--lose-after-data N]
        [--refuse-sender SECONDS]

It is the mail catcher (``catcher.py``: every accepted mail saved as an .eml file
before the 250), plus chosen faults:

- ``--refuse ADDRESS:CODE`` answers ``RCPT TO:<ADDRESS>`` with CODE, e.g. 451 (try
  later) or 550 (no such user). With ``:SECONDS`` it refuses only for that long,
  counted from the first time it refused ADDRESS, and accepts it afterwards: a 4xx
  streak.
- ``--drop-after-data N``: for the first N messages, save the message and then
  close the connection instead of answering. The sender cannot tell that the mail
  arrived, so it sends it again: the duplicate a lost answer causes.
- ``--lose-after-data N``: for the first N messages, close the connection without
  saving the message: to the sender, a server that is up but cannot take mail.
- ``--refuse-sender SECONDS``: answer every ``MAIL FROM`` with 550 for SECONDS from the
  first one: a relay that does not yet allow this sender (a configuration error).

Each refusal, drop, loss and saved mail is appended to ``DIR/faults.jsonl`` as one JSON
object with its time (``at``, seconds since the epoch), so tests can measure when
things happened. ``FaultySmtpProcess`` runs it like ``CatcherProcess``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from preaviso.devtools.catcher import (
    DEFAULT_MAX_SIZE,
    CatcherProcess,
    EmlWriter,
    serve,
    server_arguments,
)

__all__ = ["FaultySmtpProcess", "FaultyWriter", "Refusal", "main", "read_log"]

LOG_NAME = "faults.jsonl"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Refuse ``address`` with ``code``; only for ``seconds`` after the first refusal if set."""

    address: str
    code: int
    seconds: float | None = None

    @classmethod
    def parse(cls, spec: str) -> Refusal:
        """``ADDRESS:CODE`` or ``ADDRESS:CODE:SECONDS``."""
        parts = spec.rsplit(":", 2) if spec.count(":") >= 2 else spec.rsplit(":", 1)
        if len(parts) < 2:
            raise ValueError(f"expected ADDRESS:CODE[:SECONDS], got {spec!r}")
        code = int(parts[1])
        if not 400 <= code < 600:
            raise ValueError(f"a refusal needs a 4xx or 5xx code, not {code}")
        return cls(parts[0].lower(), code, float(parts[2]) if len(parts) == 3 else None)

    def spec(self) -> str:
        tail = f":{self.seconds:g}" if self.seconds is not None else ""
        return f"{self.address}:{self.code}{tail}"


_REPLY = {4: "4.7.1 Try again later (faulty_smtp)", 5: "5.1.1 No such user (faulty_smtp)"}


class FaultyWriter(EmlWriter):
    """The catcher's handler with refusals per recipient and dropped answers after DATA."""

    def __init__(
        self,
        out_dir: Path,
        refusals: Sequence[Refusal] = (),
        drop_after_data: int = 0,
        lose_after_data: int = 0,
        *,
        refuse_sender: float = 0.0,
        pipelining: bool = True,
    ) -> None:
        super().__init__(out_dir, pipelining=pipelining)
        self.refuse_sender = refuse_sender
        self._sender_first_refused: float | None = None
        self.refusals = {r.address: r for r in refusals}
        self.drops_left = drop_after_data
        self.losses_left = lose_after_data
        self._first_refused: dict[str, float] = {}
        self._log = out_dir / LOG_NAME

    def note(self, what: str, **fields: Any) -> None:
        with self._log.open("a") as log:
            log.write(json.dumps({"at": time.time(), "what": what, **fields}) + "\n")

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        if self.refuse_sender:
            now = time.monotonic()
            first = self._sender_first_refused = self._sender_first_refused or now
            if now - first < self.refuse_sender:
                self.note("sender refused", sender=address)
                return "550 5.7.1 Sender not allowed to relay here"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        refusal = self.refusals.get(address.lower())
        if refusal is not None:
            now = time.monotonic()
            first = self._first_refused.setdefault(refusal.address, now)
            if refusal.seconds is None or now - first < refusal.seconds:
                self.note("refused", recipient=address, code=refusal.code)
                return f"{refusal.code} {_REPLY[refusal.code // 100]}"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        recipients = [str(r) for r in envelope.rcpt_tos]
        if self.losses_left > 0:
            self.losses_left -= 1
            self.note("lost", recipients=recipients)
            await self._hang_up(server)
        name = self.save(envelope.original_content or b"")
        if self.drops_left > 0:
            self.drops_left -= 1
            self.note("dropped", recipients=recipients, file=name)
            await self._hang_up(server)
        self.note("saved", recipients=recipients, file=name)
        return f"250 2.0.0 Ok: saved as {name}"

    @staticmethod
    async def _hang_up(server: Any) -> None:
        """Close the connection without an answer; aiosmtpd then cancels this handler."""
        server.transport.close()
        await asyncio.Event().wait()


def read_log(out_dir: Path) -> list[dict[str, Any]]:
    """The server's log: one dict per refusal, drop, loss or saved mail, oldest first."""
    path = out_dir / LOG_NAME
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m preaviso.devtools.faulty_smtp",
        description="The mail catcher, refusing chosen recipients and dropping chosen answers.",
    )
    server_arguments(parser, default_port=0)
    parser.add_argument(
        "--refuse",
        type=Refusal.parse,
        action="append",
        default=[],
        metavar="ADDRESS:CODE[:SECONDS]",
        help="refuse RCPT TO for ADDRESS with CODE (for SECONDS after the first refusal)",
    )
    parser.add_argument(
        "--drop-after-data",
        type=int,
        default=0,
        metavar="N",
        help="for the first N messages, save them and close the connection without answering",
    )
    parser.add_argument(
        "--lose-after-data",
        type=int,
        default=0,
        metavar="N",
        help="for the first N messages, close the connection without saving or answering",
    )
    parser.add_argument(
        "--refuse-sender",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="answer MAIL FROM with 550 for SECONDS from the first one",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    handler = FaultyWriter(
        args.out, args.refuse, args.drop_after_data, args.lose_after_data,
        refuse_sender=args.refuse_sender, pipelining=args.pipelining,
    )  # fmt: skip
    try:
        asyncio.run(
            serve(
                args.host,
                args.port,
                args.out,
                port_file=args.port_file,
                max_size=DEFAULT_MAX_SIZE,
                handler=handler,
            )
        )
    except OSError as exc:
        print(f"faulty smtp: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    return 0


class FaultySmtpProcess(CatcherProcess):
    """Run the faulty server as a child process, started and stopped as the catcher is."""

    module = "preaviso.devtools.faulty_smtp"

    def __init__(
        self,
        out_dir: Path,
        *,
        refusals: Sequence[Refusal] = (),
        drop_after_data: int = 0,
        lose_after_data: int = 0,
        refuse_sender: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        pipelining: bool = True,
    ) -> None:
        super().__init__(out_dir, host=host, port=port, pipelining=pipelining)
        self.refusals = tuple(refusals)
        self.drop_after_data = drop_after_data
        self.lose_after_data = lose_after_data
        self.refuse_sender = refuse_sender

    def _command(self, port_file: Path) -> list[str]:
        command = super()._command(port_file)
        for refusal in self.refusals:
            command += ["--refuse", refusal.spec()]
        command += ["--drop-after-data", str(self.drop_after_data)]
        command += ["--refuse-sender", str(self.refuse_sender)]
        return [*command, "--lose-after-data", str(self.lose_after_data)]

    def log(self) -> list[dict[str, Any]]:
        """Every refusal, drop, loss and saved mail so far, oldest first."""
        return read_log(self.out_dir)


if __name__ == "__main__":
    sys.exit(main())
