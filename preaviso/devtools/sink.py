"""A fast SMTP sink for benchmarks: answers 250, keeps nothing but counts per Message-ID.

    python -m preaviso.devtools.sink --port 0 --out DIR --port-file F

Why not the catcher: the catcher (aiosmtpd) parses every command and writes each mail
to disk, so at a few thousand mails a second it, not the sender, is what a benchmark
measures. The sink speaks plain SMTP (no TLS, no AUTH): EHLO/HELO, MAIL, RCPT, DATA
with a dot-terminated body, RSET, NOOP, QUIT, and answers 250 to anything else. It
offers PIPELINING (RFC 2920) and CHUNKING (BDAT, RFC 3030), as Postfix and the big
relays do, and answers the commands that came in one read with one write
(``--no-pipelining``: neither is offered).
For each accepted mail it records the Message-ID, how often it came and when it first
came (wall clock), so a benchmark proves that nothing was lost or doubled and times a
delivery from its first to its last mail.

Its own process, so the sink's CPU does not come out of the sender's. The counts are
read on a control port (``CONTROL_FILE`` in DIR names it), one JSON line per command:
``STATS``, ``IDS``, ``RESET``, ``WAIT <message-id> <seconds>``. ``SinkProcess`` runs
it and ``SinkControl`` asks it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from preaviso import loops
from preaviso.devtools.catcher import CatcherProcess, message_id_of, server_arguments
from preaviso.settings import Settings

__all__ = ["CONTROL_FILE", "SinkControl", "SinkProcess", "Tally", "main"]

CONTROL_FILE = ".sink.control"
_GREETING = b"220 preaviso-sink ESMTP\r\n"
_EHLO = b"250-preaviso-sink\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 67108864\r\n"
_EHLO_PIPELINING = _EHLO.replace(b"250-8BITMIME", b"250-PIPELINING\r\n250-CHUNKING\r\n250-8BITMIME")
_OK = b"250 2.0.0 Ok\r\n"
_GO_AHEAD = b"354 End data with <CR><LF>.<CR><LF>\r\n"
_BYE = b"221 2.0.0 Bye\r\n"
_END = b"\r\n.\r\n"


@dataclass
class Tally:
    """What the sink accepted since the last reset."""

    accepted: int = 0
    overlapped: int = 0
    """Mails whose connection brought the next mail before they were answered."""
    first: float | None = None
    last: float | None = None
    counts: dict[str, int] = field(default_factory=dict)
    first_seen: dict[str, float] = field(default_factory=dict)
    waiters: dict[str, list[asyncio.Future[float]]] = field(default_factory=dict)

    def accept(self, content: bytes) -> None:
        now = time.time()
        found = message_id_of(content)
        key = found.decode("ascii", "replace") if found else "(no Message-ID)"
        self.accepted += 1
        self.first = self.first if self.first is not None else now
        self.last = now
        seen = self.counts.get(key, 0)
        self.counts[key] = seen + 1
        if not seen:
            self.first_seen[key] = now
            for waiter in self.waiters.pop(key, []):
                if not waiter.done():
                    waiter.set_result(now)

    def stats(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "overlapped": self.overlapped,
            "distinct": len(self.counts),
            "first": self.first,
            "last": self.last,
        }

    def reset(self) -> None:
        self.accepted, self.overlapped, self.first, self.last = 0, 0, None, None
        self.counts.clear()
        self.first_seen.clear()


class SmtpSink(asyncio.Protocol):
    """One SMTP connection: lines in command mode, a byte search for the end in DATA."""

    def __init__(self, tally: Tally, *, pipelining: bool = True) -> None:
        self.tally = tally
        self.ehlo = _EHLO_PIPELINING if pipelining else _EHLO
        self.replies: list[bytes] = []
        self.buffer = bytearray()
        self.in_data = False
        self.scanned = 0  # bytes of the DATA buffer already searched for the end marker
        self.message = bytearray()  # a message coming in BDAT chunks
        self.chunk_left = 0  # bytes of the current BDAT chunk still to come
        self.last_chunk = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not isinstance: uvloop's transports do not derive from asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(_GREETING)

    def data_received(self, data: bytes) -> None:
        """Handle every whole command in the buffer, then send their replies in one write."""
        self.buffer += data
        while self.transport is not None and self._step():
            pass
        if self.replies and self.transport is not None:
            self.transport.write(b"".join(self.replies))
        self.replies.clear()

    def _step(self) -> bool:
        """Handle one complete command or message from the buffer; False if none is whole."""
        assert self.transport is not None
        reply = self.replies.append
        if self.chunk_left:  # a chunk's bytes are not commands
            take = min(len(self.buffer), self.chunk_left)
            if not take:
                return False
            self.message += self.buffer[:take]
            del self.buffer[:take]
            self.chunk_left -= take
            if not self.chunk_left:
                self._chunk_done()
            return not self.chunk_left
        if self.in_data:
            # The body's first line may be the lone dot of an empty message.
            if self.buffer.startswith(b".\r\n"):
                end, cut = 0, 3
            else:
                end = self.buffer.find(_END, max(0, self.scanned - 4))
                cut = end + len(_END)
            if end < 0:
                self.scanned = len(self.buffer)
                return False
            self.tally.accept(bytes(self.buffer[:end]))
            del self.buffer[:cut]
            self.in_data, self.scanned = False, 0
            reply(_OK)
            return True
        eol = self.buffer.find(b"\r\n")
        if eol < 0:
            return False
        line = bytes(self.buffer[:eol])
        verb = line[:4].upper()
        del self.buffer[: eol + 2]
        if verb == b"BDAT":
            words = line.split()
            if len(words) < 2 or not words[1].isdigit():
                reply(b"501 5.5.4 Syntax: BDAT size [LAST]\r\n")
                return True
            self.chunk_left = int(words[1])
            self.last_chunk = words[-1].upper() == b"LAST"
            if not self.chunk_left:
                self._chunk_done()
        elif verb == b"EHLO":
            reply(self.ehlo)
        elif verb == b"DATA":
            self.in_data = True
            reply(_GO_AHEAD)
        elif verb == b"QUIT":
            self.transport.write(b"".join(self.replies) + _BYE)
            self.replies.clear()
            self.transport.close()
            self.transport = None
        else:  # HELO, MAIL, RCPT, RSET, NOOP and anything else
            reply(_OK)
        return True

    def _chunk_done(self) -> None:
        """A BDAT chunk is in: the message is accepted with its last chunk."""
        if self.last_chunk:
            self.tally.accept(bytes(self.message))
            self.message.clear()
            if self.buffer:  # answers go at the end of the read: the next mail came first
                self.tally.overlapped += 1
        self.replies.append(_OK)


async def _control(
    tally: Tally, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """One control connection: a command per line, a JSON line per answer."""
    try:
        while line := await reader.readline():
            words = line.decode().split()
            command = words[0].upper() if words else ""
            answer: Any
            if command == "STATS":
                answer = tally.stats()
            elif command == "IDS":
                answer = {"counts": tally.counts, "first_seen": tally.first_seen}
            elif command == "RESET":
                tally.reset()
                answer = {"ok": True}
            elif command == "WAIT" and len(words) == 3:
                answer = {"at": await _wait(tally, words[1], float(words[2]))}
            else:
                answer = {"error": f"unknown command {line.decode().strip()!r}"}
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
    finally:
        writer.close()


async def _wait(tally: Tally, message_id: str, seconds: float) -> float | None:
    """When ``message_id`` first came (now or later, within ``seconds``), else None."""
    if message_id in tally.first_seen:
        return tally.first_seen[message_id]
    waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    tally.waiters.setdefault(message_id, []).append(waiter)
    try:
        return await asyncio.wait_for(waiter, seconds)
    except TimeoutError:
        return None


async def serve(
    host: str, port: int, out_dir: Path, port_file: Path | None, *, pipelining: bool = True
) -> None:
    """Run the sink until SIGTERM or SIGINT; the control port is written before the port."""
    loop = asyncio.get_running_loop()
    tally = Tally()
    server = await loop.create_server(
        lambda: SmtpSink(tally, pipelining=pipelining), host=host, port=port, backlog=256
    )
    control = await asyncio.start_server(lambda r, w: _control(tally, r, w), host=host, port=0)
    control_port: int = control.sockets[0].getsockname()[1]
    actual_port: int = server.sockets[0].getsockname()[1]
    (out_dir / CONTROL_FILE).write_text(f"{control_port}\n")
    if port_file is not None:
        tmp = port_file.with_name(f".{port_file.name}.tmp")
        tmp.write_text(f"{actual_port}\n")
        tmp.replace(port_file)
    where = f"{host}:{actual_port}, control on {host}:{control_port}"
    print(f"SMTP sink on {where} ({loops.running()} event loop)", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server, control:
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m preaviso.devtools.sink",
        description="SMTP sink that answers 250 and counts mails per Message-ID.",
    )
    server_arguments(parser, default_port=1025)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    # The worker's loop (uvloop where installed): on two cores the sink's CPU is taken
    # from whatever sends to it, so it must cost as little as the sender's own loop.
    loops.use(Settings().event_loop)
    try:
        asyncio.run(
            serve(args.host, args.port, args.out, args.port_file, pipelining=args.pipelining)
        )
    except OSError as exc:
        print(f"SMTP sink: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    return 0


class SinkControl:
    """Asks a running sink for its counts over the control port (blocking, one socket)."""

    def __init__(self, host: str, port: int) -> None:
        self._sock = socket.create_connection((host, port), timeout=600)
        self._file = self._sock.makefile("rb")

    def ask(self, command: str) -> Any:
        self._sock.sendall(command.encode() + b"\n")
        return json.loads(self._file.readline())

    def stats(self) -> dict[str, Any]:
        answer: dict[str, Any] = self.ask("STATS")
        return answer

    def counts(self) -> dict[str, int]:
        """Mails per Message-ID (without angle brackets) since the last reset."""
        counts: dict[str, int] = self.ask("IDS")["counts"]
        return counts

    def first_seen(self) -> dict[str, float]:
        first: dict[str, float] = self.ask("IDS")["first_seen"]
        return first

    def reset(self) -> None:
        self.ask("RESET")

    def wait_for(self, message_id: str, seconds: float) -> float | None:
        """Wall time the mail first arrived, waiting up to ``seconds``; None if it did not."""
        at: float | None = self.ask(f"WAIT {message_id.strip('<>')} {seconds:g}")["at"]
        return at

    def close(self) -> None:
        self._file.close()
        self._sock.close()


class SinkProcess(CatcherProcess):
    """Run the sink as a child process, like the catcher; ``control()`` asks it."""

    module = "preaviso.devtools.sink"

    def control(self) -> SinkControl:
        port = int((self.out_dir / CONTROL_FILE).read_text())
        return SinkControl(self.host, port)


if __name__ == "__main__":
    sys.exit(main())
