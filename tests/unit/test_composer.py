"""Where notices are composed: a child process gives what the worker's own thread gives."""

from __future__ import annotations

import os
import re
import signal
from email import message_from_bytes, policy
from typing import Any

import pytest
from pydantic import SecretStr

from preaviso.agents import composer as composer_module
from preaviso.agents.composer import (
    HUNG,
    KILLED,
    ComposerUnavailableError,
    InlineComposer,
    ProcessComposer,
    composer_for,
)
from preaviso.audience import Candidate, DirectoryEntry, policy_impacts
from preaviso.compose import Composed, Job
from preaviso.devtools import dataset
from preaviso.mail.smtp_client import canonical
from preaviso.schemas.records import Notice
from preaviso.settings import Settings
from preaviso.streams.codecs import decode, encode
from tests.unit.composer_faults import (
    HANG,
    POISON,
    cannot_start,
    compose_or_die,
    compose_or_hang,
    niceness,
)

SETTINGS = Settings(
    message_id_domain="notices.example.com",
    mail_from="Avisos <avisos@example.com>",
    smtp_password="not-for-children",
)
PEOPLE, _ = dataset.directory(5)


def jobs() -> list[Job]:
    """A policy's impacts for every customer, and a broken impact in the middle."""
    change = dataset.policy_for_everyone("pol-composer")
    entries = {c.customer_id: encode(DirectoryEntry(partition=0, customer=c)) for c in PEOPLE}
    records = list(policy_impacts(change, (Candidate(c, "ES-MD", 0) for c in entries), 0))
    good = [Job(r.value, entries[r.key.decode()]) for r in records]
    return [*good[:2], Job(b"{not json", good[0].entry), *good[2:]]


def without_date(result: Composed) -> Notice:
    """The notice without what the clock or chance decide: its Date, event id and time."""
    assert result.notice is not None
    notice = decode(Notice, result.notice)
    mime = re.sub(r"Date: [^\r]*\r\n", "", notice.mime)
    return notice.model_copy(update={"mime": mime, "event_id": "-", "occurred_at": None})


@pytest.fixture
def in_child() -> Any:
    composer = ProcessComposer(SETTINGS, processes=2)
    composer.start()
    yield composer
    composer.close()


async def test_a_child_process_composes_what_the_worker_would(in_child: ProcessComposer) -> None:
    here = await InlineComposer(SETTINGS).compose(jobs())
    there = await in_child.compose(jobs())

    assert len(here) == len(there) == len(PEOPLE) + 1
    for mine, theirs in zip(here, there, strict=True):
        if mine.notice is None:
            assert theirs == mine
        else:
            assert without_date(theirs) == without_date(mine)
    for result, customer in zip(there[:2] + there[3:], PEOPLE, strict=True):
        notice = without_date(result)
        mail = message_from_bytes(notice.mime.encode(), policy=policy.default)
        assert (notice.customer_id, notice.recipient) == (customer.customer_id, customer.email)
        assert mail["Message-ID"] == f"<{notice.notice_id}@notices.example.com>"
        assert mail["From"] == "Avisos <avisos@example.com>"


async def test_a_job_that_fails_comes_back_as_its_error_and_the_others_still_compose(
    in_child: ProcessComposer,
) -> None:
    results = await in_child.compose(jobs())

    broken = results[2]
    assert broken.notice is None
    assert broken.error_type == "DecodeError"
    assert "Impact" in broken.reason
    assert all(r.notice is not None for r in results[:2] + results[3:])


async def test_a_child_killed_between_batches_is_replaced_and_nothing_is_lost(
    in_child: ProcessComposer,
) -> None:
    await in_child.compose(jobs())  # the children are up
    pool: Any = in_child._pool
    for pid in list(pool._processes):
        os.kill(pid, signal.SIGKILL)

    again = await in_child.compose(jobs())

    assert in_child._pool is not pool
    assert [r.error_type for r in again] == [r.error_type for r in await in_child.compose(jobs())]
    assert sum(r.notice is not None for r in again) == len(PEOPLE)


async def test_a_notice_that_kills_its_child_is_an_error_and_the_rest_of_the_batch_composes() -> (
    None
):
    composer = ProcessComposer(SETTINGS, processes=2, work=compose_or_die)
    composer.start()
    try:
        batch = jobs()
        batch.insert(4, Job(POISON, batch[0].entry))
        results = await composer.compose(batch)
        after = await composer.compose(jobs())  # the next batch: children as usual
    finally:
        composer.close()

    reference = await InlineComposer(SETTINGS).compose(jobs())  # composed without a child
    killed = results.pop(4)
    assert (killed.notice, killed.error_type) == (None, KILLED)
    assert "killed the composing process" in killed.reason
    for result in (results, after):
        assert [without_date(r) if r.notice else r for r in result] == [
            without_date(r) if r.notice else r for r in reference
        ]


@pytest.mark.parametrize(("nice", "lower_by"), [(None, 10), (3, 3), (0, 0)])
async def test_the_children_compose_at_a_lower_cpu_priority_than_the_worker(
    nice: int | None, lower_by: int
) -> None:
    """They compose ahead of sending: a core both want goes to the worker's loop first."""
    settings = SETTINGS if nice is None else SETTINGS.model_copy(update={"compose_nice": nice})
    composer = ProcessComposer(settings, processes=1, work=niceness)
    composer.start()
    try:
        [result] = await composer.compose(jobs()[:1])
    finally:
        composer.close()

    assert int(result.reason) == min(os.nice(0) + lower_by, 19)


async def test_a_closed_composer_composes_nothing_more() -> None:
    composer = ProcessComposer(SETTINGS, processes=1)
    composer.start()
    composer.close()

    with pytest.raises(ComposerUnavailableError, match="stopping"):
        await composer.compose(jobs())
    assert composer._pool is None


@pytest.fixture
def quick_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch of a few notices takes ~1 ms: 2.5 s is a hang, on a loaded machine too."""
    monkeypatch.setattr(composer_module, "TIMEOUT", 2.5)
    monkeypatch.setattr(composer_module, "ALONE", 2.5)


async def hanging_among_good(
    good: int, positions: list[int]
) -> tuple[list[Composed], list[Composed]]:
    """Compose the first ``good`` jobs with a hanging one inserted at each of
    ``positions``, then a batch of good jobs; both results, in a child that hangs on cue."""
    composer = ProcessComposer(SETTINGS, processes=1, work=compose_or_hang)
    composer.start()
    try:
        batch = jobs()[:good]
        for at in positions:
            batch.insert(at, Job(HANG, batch[0].entry))
        return await composer.compose(batch), await composer.compose(jobs())
    finally:
        composer.close()


@pytest.mark.usefixtures("quick_timeouts")
async def test_a_notice_that_hangs_its_child_is_an_error_and_the_rest_of_the_batch_composes() -> (
    None
):
    results, after = await hanging_among_good(3, [1])

    reference = await InlineComposer(SETTINGS).compose(jobs())
    hung = results.pop(1)
    assert (hung.notice, hung.error_type) == (None, HUNG)
    assert hung.reason == "composing this notice took over 2.5s, twice"
    for result, expected in ((results, reference[:3]), (after, reference)):
        assert [without_date(r) if r.notice else r for r in result] == [
            without_date(r) if r.notice else r for r in expected
        ]


@pytest.mark.usefixtures("quick_timeouts")
async def test_two_notices_that_hang_in_halves_of_one_batch_are_each_an_error() -> None:
    results, after = await hanging_among_good(1, [0, 2])  # one in each half

    assert [r.error_type for r in results] == [HUNG, "", HUNG]
    assert sum(r.notice is not None for r in after) == len(PEOPLE)


async def test_a_batch_that_times_out_is_composed_again_in_parts_and_nothing_is_lost(
    in_child: ProcessComposer, monkeypatch: pytest.MonkeyPatch
) -> None:
    await in_child.compose(jobs())  # the children are up
    pool = in_child._pool
    monkeypatch.setattr(composer_module, "TIMEOUT", 0.0)  # no batch is that fast; a part
    # being narrowed down still gets ALONE (6 s)

    again = await in_child.compose(jobs())

    assert in_child._pool is not pool  # the "hung" children were replaced
    assert [r.error_type for r in again] == [r.error_type for r in await in_child.compose(jobs())]
    assert sum(r.notice is not None for r in again) == len(PEOPLE)


async def test_children_that_cannot_start_dead_letter_nothing() -> None:
    composer = ProcessComposer(SETTINGS, processes=1, start=cannot_start)
    composer.start()
    try:
        with pytest.raises(ComposerUnavailableError, match="did not start"):
            await composer.compose(jobs())
        with pytest.raises(ComposerUnavailableError, match="did not start"):
            await composer.compose(jobs())  # and again, with new children: not a notice's
    finally:
        composer.close()


async def test_nothing_to_compose_needs_no_process() -> None:
    composer = ProcessComposer(SETTINGS, processes=2)
    assert await composer.compose([]) == []
    assert composer._pool is None


def test_the_settings_handed_to_the_child_carry_no_password() -> None:
    settings = SETTINGS.model_copy(update={"kafka_sasl_password": SecretStr("kafka-secret")})
    handed: Any = ProcessComposer(settings, processes=1)._settings
    assert (handed.smtp_password, handed.kafka_sasl_password) == (None, None)
    assert handed.mail_from == SETTINGS.mail_from


def test_the_setting_picks_where_notices_are_composed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREAVISO_COMPOSE_PROCESSES", "0")
    assert isinstance(composer_for(Settings()), InlineComposer)
    monkeypatch.setenv("PREAVISO_COMPOSE_PROCESSES", "2")
    assert isinstance(composer_for(Settings()), ProcessComposer)
    monkeypatch.delenv("PREAVISO_COMPOSE_PROCESSES")
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert Settings().compose_processes == 0
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert Settings().compose_processes == 1


async def test_the_stored_notice_is_the_message_as_it_is_sent() -> None:
    """The proof keeps the message's last line break (a contract strips other strings),
    and its line breaks are all CRLF: the transport sends it as it is."""
    [first, *_] = await InlineComposer(SETTINGS).compose(jobs())
    assert first.notice is not None
    mime = decode(Notice, first.notice).mime.encode("ascii")

    assert mime.endswith(b"--\r\n")
    assert canonical(mime)
