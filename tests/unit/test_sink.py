"""The benchmarks' SMTP sink: counts what it takes, pipelined with BDAT chunks or one
command at a time with DATA."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from preaviso.devtools.sink import SinkProcess
from preaviso.mail import SmtpTransport
from preaviso.mail.smtp_client import Client

MAIL = b"Message-ID: <m-%d@example.com>\r\nSubject: x\r\n\r\n.leading dot\r\nbody\r\n"


@pytest.mark.parametrize(
    "pipelining", [True, False], ids=["pipelining-and-chunking", "one-at-a-time"]
)
async def test_the_sink_counts_each_message_id_as_it_came(tmp_path: Path, pipelining: bool) -> None:
    with SinkProcess(tmp_path, pipelining=pipelining) as sink:
        probe = Client(hostname=sink.host, port=sink.port)
        await probe.connect()
        await probe.ehlo()
        offered = [probe.supports_extension(e) for e in ("pipelining", "chunking")]
        await probe.quit()
        async with SmtpTransport(host=sink.host, port=sink.port, connections=3) as transport:
            await asyncio.gather(
                *(
                    transport.send("a@example.com", ["b@example.com"], MAIL % (i % 5))
                    for i in range(20)
                )
            )
        control = sink.control()
        try:
            counts = control.counts()
        finally:
            control.close()

    assert offered == [pipelining, pipelining]
    assert counts == {f"m-{i}@example.com": 4 for i in range(5)}
