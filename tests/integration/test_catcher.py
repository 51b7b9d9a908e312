"""The mail catcher in its own process, fed by SmtpTransport over real sockets."""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from preaviso.devtools.catcher import CatcherError, CatcherProcess
from preaviso.mail import (
    SmtpTransport,
    SmtpUnreachableError,
    build_message,
    make_message_id,
    parse_mailbox,
)
from preaviso.settings import Settings, SmtpTls

pytestmark = pytest.mark.integration

SENDER = "Preaviso <avisos@example.com>"


def notice(i: int) -> bytes:
    return build_message(
        sender=SENDER,
        recipient_name=f"José Núñez {i}",
        recipient_email=f"jose{i}@example.com",
        subject=f"Aviso {i}: fin de fabricación",
        text=f"Hola José,\n\naviso número {i}.\n",
        html=f"<p>Hola José,</p><p>aviso número {i}.</p>",
        message_id=make_message_id(f"notice-{i:03d}", "preaviso.example.com"),
        date=datetime(2025, 3, 1, 9, 30, tzinfo=UTC),
    )


async def test_twenty_notices_arrive_as_eml_files(tmp_path: Path) -> None:
    with CatcherProcess(tmp_path / "mail") as catcher:
        settings = Settings(
            smtp_host=catcher.host,
            smtp_port=catcher.port,
            smtp_tls=SmtpTls.NONE,
            smtp_connections=4,
        )
        transport = SmtpTransport.from_settings(settings)
        _, envelope_sender = parse_mailbox(SENDER)
        async with transport:
            replies = await asyncio.gather(
                *(
                    transport.send(envelope_sender, [f"jose{i}@example.com"], notice(i))
                    for i in range(20)
                )
            )
        messages = catcher.messages()
        files = catcher.files()

    assert {reply.code for reply in replies} == {250}
    assert transport.opened <= 4
    assert len(files) == 20
    assert all(path.name.endswith("@preaviso.example.com.eml") for path in files)
    assert sorted(path.read_bytes() for path in files) == sorted(notice(i) for i in range(20))
    by_id = {message["Message-ID"]: message for message in messages}
    for i in range(20):
        message = by_id[f"<notice-{i:03d}@preaviso.example.com>"]
        assert message["To"].addresses[0].addr_spec == f"jose{i}@example.com"
        assert message["To"].addresses[0].display_name == f"José Núñez {i}"
        assert message["Subject"] == f"Aviso {i}: fin de fabricación"


async def test_a_send_returns_only_once_the_file_is_written(tmp_path: Path) -> None:
    with CatcherProcess(tmp_path) as catcher:
        async with SmtpTransport(host=catcher.host, port=catcher.port) as transport:
            reply = await transport.send("avisos@example.com", ["jose1@example.com"], notice(1))
            saved = catcher.files()

    assert len(saved) == 1
    assert saved[0].name in reply.message
    assert not list(tmp_path.glob(".*.tmp"))


async def test_check_against_a_closed_port_fails_fast_naming_it() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    transport = SmtpTransport(host="127.0.0.1", port=port, connect_timeout=3.0)

    started = time.monotonic()
    with pytest.raises(SmtpUnreachableError, match=f"127.0.0.1:{port}"):
        await transport.check()

    assert time.monotonic() - started < 3.0


def test_the_catcher_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    catcher = CatcherProcess(tmp_path)
    catcher.start()

    assert catcher.stop() == 0
    assert catcher.stop() is None  # already stopped


def test_a_catcher_that_cannot_start_says_why(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(CatcherError, match="cannot listen"):
            CatcherProcess(tmp_path, port=port).start()
