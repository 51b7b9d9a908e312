"""Notify stage: an impact plus the customer's entry becomes a rendered, ready-to-send notice."""

from __future__ import annotations

import logging
from typing import Any

import mode

from preaviso.agents import ledger
from preaviso.agents.bulk import Batch, Handler
from preaviso.agents.composer import Composer, composer_for
from preaviso.compose import Composed, ComposeError, Job
from preaviso.schemas.records import Impact
from preaviso.streams import topics as t
from preaviso.streams.app import Pipeline
from preaviso.streams.codecs import decode

log = logging.getLogger("preaviso.notify")


class UnknownCustomerError(LookupError):
    """An impact names a customer the directory does not hold (yet)."""


def stages(pipe: Pipeline) -> dict[t.TopicSpec, tuple[str, Handler]]:
    """notify, to be read in bulk (``agents/bulk.py``): a fan-out's impacts come in
    thousands, and each passed Faust's per-event hand-over before any rendering.

    The handler checks the impact against the ledger and the directory at once; the
    notice is composed with the rest of the batch (``agents/composer.py``, perhaps in
    another process), then written, and its ``issued`` mark after it (bulk._finish).
    """

    def notify(record: Any, batch: Batch) -> None:
        impact = decode(Impact, record.value)
        key = impact.customer_id.encode()
        issued = batch.table("issued", record.partition)
        if ledger.contains(issued, key, impact.notice_id):
            return  # already issued: a redelivered or repeated impact
        entry = batch.table("customers", record.partition).get(key)
        if entry is None:
            raise UnknownCustomerError(
                f"customer {impact.customer_id} is not in the directory; publish its "
                "CustomerUpserted, then replay this record from the dead-letter topic"
            )

        def composed(result: Composed, batch: Batch) -> None:
            if result.notice is None:
                raise ComposeError(result)
            if ledger.contains(issued, key, impact.notice_id):
                return  # the same impact earlier in this batch
            batch.send(t.NOTICES, key, result.notice)
            ledger.add(issued, key, impact.notice_id)

        batch.compose("notify", record, Job(record.value, entry), composed)

    return {t.IMPACTS: ("notify", notify)}


def composer(pipe: Pipeline) -> Composer:
    """Where notify composes (``PREAVISO_COMPOSE_PROCESSES``), started and closed with
    the worker. (Faust starts such services after table recovery, as the bulk loader;
    a composer also starts its children on its first batch.)"""
    chosen = composer_for(pipe.settings)
    processes = pipe.settings.compose_processes

    class ComposerService(mode.Service):
        """Starts the composer's children with the worker, closes them at its stop."""

        async def on_start(self) -> None:
            chosen.start()
            where = f"{processes} child process(es)" if processes else "the worker's thread"
            log.info("notices composed in %s", where)

        async def on_stop(self) -> None:
            chosen.close()

    pipe.app.service(ComposerService)
    return chosen
