"""`preaviso worker`: check Kafka and SMTP answer, create topics, then run the Faust worker."""

from __future__ import annotations

import asyncio
import logging

from preaviso.mail import SmtpTransport
from preaviso.settings import Settings
from preaviso.streams.app import create_app
from preaviso.streams.topics import ensure_topics

log = logging.getLogger("preaviso.worker")


async def preflight(settings: Settings) -> list[str]:
    """Fail in seconds, naming the address, instead of a worker that hangs retrying."""
    created = await ensure_topics(settings)
    transport = SmtpTransport.from_settings(settings)
    try:
        await transport.check()
    finally:
        await transport.aclose()
    return created


def run_worker(settings: Settings, loglevel: str = "warn") -> None:
    created = asyncio.run(preflight(settings))
    if created:
        log.info("created %d topics", len(created))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    pipe = create_app(settings)
    import faust

    worker = faust.Worker(pipe.app, loglevel=loglevel, quiet=True, override_logging=True)
    worker.execute_from_commandline()
