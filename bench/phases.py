"""The Preaviso figures of one run, each taken from outside, with its baseline beside it.

Directory load: the worker is started and has read one customer (so it is up and in
its group); the rest of the directory is then published and the load is timed from
the first send until the group's lag on the directory topics is 0. Delivery: a policy
change for every customer, timed at the sink from the first to the last mail; the
same run then sends the very notices' bytes (read back from the ``notices`` topic)
with bare aiosmtplib. Fan-out: the ``impacts`` of that change, first to last by their
Kafka timestamps, against a bare producer writing the same records.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from bench import baselines, cpu, wire
from bench.directory import Directory, wire_record
from bench.plan import Plan
from bench.profile import top
from bench.stack import Stack
from preaviso.audience import Candidate, policy_impacts
from preaviso.devtools.dataset import policy_for_everyone
from preaviso.devtools.observe import read_raw
from preaviso.mail import make_message_id, sender_address
from preaviso.render import Renderer
from preaviso.schemas.events import (
    CustomerUpserted,
    OwnershipRecorded,
    PolicyChanged,
    ProductDiscontinued,
)
from preaviso.schemas.records import Impact, notice_id_for
from preaviso.streams import lag
from preaviso.streams import topics as t
from preaviso.streams.codecs import decode


@dataclass
class RunResult:
    """Flat figures (``load.preaviso``, ``e2e.c4.raw`` ...), the checks, the raw counts."""

    figures: dict[str, float] = field(default_factory=dict)
    checks: dict[str, int] = field(default_factory=dict)
    profiles: dict[str, Any] = field(default_factory=dict)
    sink_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # per delivery event


def message_id(stack: Stack, event_id: str, customer_id: str) -> str:
    """The Message-ID (no brackets) the documented contract gives this event's notice."""
    notice = notice_id_for(event_id, customer_id)
    return make_message_id(notice, stack.settings.message_id_domain).strip("<>")


def rate(count: int, first: float | None, last: float | None) -> float:
    """Items per second from the first to the last item (``count - 1`` intervals)."""
    if first is None or last is None or count < 2:
        return 0.0
    return (count - 1) / max(last - first, 1e-3)


def _profiled(stack: Stack, plan: Plan, result: RunResult, phase: str, first_run: bool) -> bool:
    if not first_run or phase not in plan.profile:
        return False
    stack.profile(stack.root / f"profile-{phase}.txt")
    return True


def _end_profile(stack: Stack, result: RunResult, phase: str) -> None:
    out = stack.end_profile()
    if out is None:
        result.profiles[phase] = {"error": "py-spy wrote nothing (ptrace not allowed?)"}
        return
    found = top(out)
    result.profiles[phase] = {
        "file": str(out),
        "samples": found.samples,
        "own": [(c.function, c.share) for c in found.own],
        "packages": [(c.function, c.share) for c in found.packages],
        "ours": [(c.function, c.share) for c in found.ours],
    }


def load(stack: Stack, plan: Plan, directory: Directory, result: RunResult, first: bool) -> None:
    """Directory load against the raw consume -> produce -> commit loop over the same records."""
    s = stack.settings
    stack.start_worker(plan.connections[0])
    records = directory.records(s)
    asyncio.run(wire.publish(s, records[:1]))
    stack.wait_lag_zero(t.DIRECTORY_TOPICS, within=120)  # up, assigned and reading
    profiling = _profiled(stack, plan, result, "load", first)
    began = time.monotonic()
    result.figures["load.publish_s"] = asyncio.run(wire.publish(s, records[1:]))
    done = stack.wait_lag_zero(t.DIRECTORY_TOPICS, within=plan.within)
    if profiling:
        _end_profile(stack, result, "load")
    result.figures["load.seconds"] = done - began
    result.figures["load.preaviso"] = (len(records) - 1) / (done - began)
    result.figures["rss.load_mb"] = stack.rss_mb()
    upstream = [s.topic(t.CUSTOMERS.name), s.topic(t.OWNERSHIPS.name)]
    group = s.topic("bench-raw-loop")
    result.figures["load.raw"] = asyncio.run(
        baselines.consume_produce_commit(s, upstream, len(records), group=group, within=plan.within)
    )


def _wait_mails(stack: Stack, want: int, plan: Plan) -> None:
    """Until the sink holds ``want`` distinct mails, or none came for ``plan.stall`` seconds."""
    seen, since = -1, time.monotonic()
    deadline = since + plan.within
    while time.monotonic() < deadline:
        stats = stack.control.stats()
        if stats["distinct"] >= want:
            return
        if stats["distinct"] != seen:
            seen, since = stats["distinct"], time.monotonic()
        elif time.monotonic() - since > plan.stall:
            return
        stack.pid()
        time.sleep(0.25)


def _of_event(stack: Stack, spec: t.TopicSpec, event_id: str) -> list[tuple[Any, dict[str, Any]]]:
    """The records of ``spec`` caused by ``event_id``, each with its decoded value."""
    found = []
    for record in asyncio.run(read_raw(stack.settings, spec.name)):
        value = json.loads(record.value)
        if value.get("cause_event_id") == event_id:
            found.append((record, value))
    return found


def _stamped_rate(records: Sequence[tuple[Any, dict[str, Any]]]) -> float:
    stamps = [r.timestamp / 1000 for r, _ in records]
    return rate(len(stamps), min(stamps, default=None), max(stamps, default=None))


def _sink_rate(stack: Stack, send: Callable[[], None]) -> tuple[float, dict[str, int]]:
    stack.control.reset()
    send()
    stats = stack.control.stats()
    return rate(stats["accepted"], stats["first"], stats["last"]), stack.control.counts()


def _sender_rate(
    stack: Stack, send: Callable[[], None], mails: int, sender: str
) -> tuple[float, dict[str, int], dict[str, float]]:
    """``_sink_rate`` of a sender running in this process, and the CPU a mail it (named
    ``sender``) and the sink spent: metered around the send alone, not the sink's reset
    nor its counts after."""
    sink = stack.processes()["sink"]
    meter = cpu.Meter(lambda: {sender: [cpu.SELF], "sink": sink})
    spent: dict[str, float] = {}

    def metered() -> None:
        meter.start()
        send()
        spent.update(meter.per(mails))

    mails_rate, counts = _sink_rate(stack, metered)
    return mails_rate, counts, spent


def deliver(
    stack: Stack, plan: Plan, directory: Directory, result: RunResult, run: int, c: int
) -> None:
    """Mails/s at ``c`` connections, next to bare aiosmtplib sending the same bytes."""
    if stack.worker is None or stack.connections != c:
        stack.start_worker(c)
    event = policy_for_everyone(f"bench{run}-all-c{c}")
    expected = {message_id(stack, event.event_id, p.customer_id) for p in directory.customers}
    stack.control.reset()
    meter = cpu.Meter(stack.processes).start()  # fan-out and notify count, as their mails
    published = time.time()
    asyncio.run(wire.publish(stack.settings, [wire_record(stack.settings, event)]))
    _wait_mails(stack, 1, plan)  # the profile starts with the mails, not with the worker
    # The rate is timed from the first mail: so is the CPU that bounds it.
    sending = cpu.Meter(stack.processes).start()
    first = stack.control.stats()["distinct"]
    profiling = _profiled(stack, plan, result, "deliver", run == 1 and c == plan.connections[-1])
    _wait_mails(stack, len(expected), plan)
    distinct = stack.control.stats()["distinct"]
    spent = meter.per(distinct)
    result.figures[f"cpu.c{c}.sending_ceiling"] = cpu.ceiling(
        sending.per(distinct - first)["total"]
    )
    if profiling:
        _end_profile(stack, result, "deliver")
    time.sleep(0.5)  # a late duplicate would show now
    stats, counts = stack.control.stats(), stack.control.counts()
    result.sink_counts[event.event_id] = counts
    result.figures[f"e2e.c{c}.preaviso"] = rate(stats["accepted"], stats["first"], stats["last"])
    result.figures[f"e2e.c{c}.first_mail_s"] = (stats["first"] or published) - published
    result.checks[f"e2e.c{c}.missing"] = len(expected - counts.keys())
    result.checks[f"e2e.c{c}.duplicates"] = sum(n - 1 for m, n in counts.items() if m in expected)
    result.checks[f"e2e.c{c}.unexpected"] = len(counts.keys() - expected)

    notices = _of_event(stack, t.NOTICES, event.event_id)
    result.figures[f"notify.c{c}"] = _stamped_rate(notices)
    sender = sender_address(stack.settings.mail_from)
    mails = [(sender, n["recipient"], n["mime"].encode("ascii")) for _, n in notices]
    host, port = stack.sink.host, stack.sink.port
    raw, raw_counts, bare = _sender_rate(
        stack, lambda: asyncio.run(baselines.smtp_send(host, port, mails, c)), len(mails), "sender"
    )
    spent |= {f"bare_{name}": us for name, us in bare.items()}
    result.figures[f"e2e.c{c}.raw"] = raw
    result.figures |= {f"cpu.c{c}.{name}": us for name, us in spent.items()}
    result.figures[f"cpu.c{c}.ceiling"] = cpu.ceiling(spent["total"])
    result.figures[f"cpu.c{c}.bare_ceiling"] = cpu.ceiling(spent["bare_total"])
    not_once = sum(1 for n in raw_counts.values() if n != 1) + len(mails) - len(raw_counts)
    result.checks[f"raw.c{c}.not_once"] = not_once
    if c == plan.connections[0]:
        impacts = _of_event(stack, t.IMPACTS, event.event_id)
        result.figures["fanout.preaviso"] = _stamped_rate(impacts)
        pairs = [(r.key, r.value) for r, _ in impacts]
        result.figures["fanout.raw"] = asyncio.run(baselines.produce_rate(stack.settings, pairs))
    if plan.compare_catcher and run == 1 and c == max(plan.connections):
        result.figures[f"catcher.c{c}.raw"] = _catcher_rate(stack.root / "catcher", mails, c)
        result.figures[f"sink.c{c}.raw_wall"] = len(mails) / _timed(
            lambda: asyncio.run(baselines.smtp_send(host, port, mails, c))
        )


def _timed(action: Callable[[], None]) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def _catcher_rate(out: Path, mails: Sequence[baselines.Mail], c: int) -> float:
    """The same raw send against the project's aiosmtpd catcher (wall time: it keeps no stats)."""
    from preaviso.devtools.catcher import CatcherProcess

    with CatcherProcess(out) as catcher:
        seconds = _timed(
            lambda: asyncio.run(baselines.smtp_send(catcher.host, catcher.port, mails, c))
        )
    return len(mails) / seconds


def naive(stack: Stack, plan: Plan, directory: Directory, result: RunResult, run: int) -> None:
    """The naive script's mails/s (an EmailMessage and a new connection per customer), and
    the CPU a mail it and the sink spend: what 8x its rate would ask of the machine. Its
    mails carry what the notices carry; the old placeholder mails are timed beside them."""
    people = directory.customers[: plan.naive_mails]
    host, port = stack.sink.host, stack.sink.port
    sender = stack.settings.mail_from
    event = policy_for_everyone(f"bench{run}-naive")
    mails = notice_contents(stack.settings.company_name, people, event)
    result.figures["naive"], _, spent = _sender_rate(
        stack, lambda: baselines.naive(host, port, mails, sender), len(people), "script"
    )
    result.figures |= {f"cpu.naive.{name}": us for name, us in spent.items()}
    placeholders = baselines.placeholder_mails(people)
    result.figures["naive.placeholder"], _, _ = _sender_rate(
        stack, lambda: baselines.naive(host, port, placeholders, sender), len(people), "script"
    )


def notice_contents(
    company_name: str, people: Sequence[CustomerUpserted], event: PolicyChanged
) -> list[baselines.NaiveMail]:
    """Each customer's notice of ``event`` as the worker words it (subject, text, HTML),
    rendered before the script is timed, as the bare sender's bytes are built before it."""
    candidates = [Candidate(p.customer_id, p.region, 0) for p in people]
    impacts = {
        i.customer_id: i
        for i in (decode(Impact, r.value) for r in policy_impacts(event, candidates, 0))
    }
    renderer = Renderer(company_name)
    mails = []
    for person in people:
        notice = renderer.render(impacts[person.customer_id], person)
        mails.append((person.name, str(person.email), notice.subject, notice.text, notice.html))
    return mails


def latency(stack: Stack, plan: Plan, directory: Directory, result: RunResult, run: int) -> None:
    """Publish -> first mail accepted, over small events (one owner each) on an idle worker."""
    s = stack.settings
    owners = [directory.customers[i % len(directory.customers)] for i in range(plan.probes)]
    probes = [
        OwnershipRecorded(
            event_id=f"probe-own-{run}-{i}", source="bench", customer_id=o.customer_id,
            sku=f"PROBE-{run}-{i}", product_name="Probe", purchase_date=date(2025, 1, 1),
        )
        for i, o in enumerate(owners)
    ]  # fmt: skip
    asyncio.run(wire.publish(s, [wire_record(s, p) for p in probes]))
    stack.wait_lag_zero(t.DIRECTORY_TOPICS, within=plan.within)
    time.sleep(1.0)  # idle
    waits = asyncio.run(_probe(stack, probes, run))
    result.checks["latency.lost"] = sum(1 for w in waits if w is None)
    got = sorted(w for w in waits if w is not None)
    if got:
        result.figures["latency.p50_s"] = got[len(got) // 2]
        result.figures["latency.p99_s"] = got[min(len(got) - 1, round(0.99 * (len(got) - 1)))]
    result.figures["latency.connections"] = stack.connections


async def _probe(stack: Stack, probes: Sequence[OwnershipRecorded], run: int) -> list[float | None]:
    s = stack.settings
    sender = wire.producer(s, enable_idempotence=True)
    await sender.start()
    waits: list[float | None] = []
    try:
        for i, owned in enumerate(probes):
            event = ProductDiscontinued(
                event_id=f"probe-{run}-{i}", source="bench", skus=[owned.sku],
                model_name="Probe", effective_date=date(2027, 1, 1),
            )  # fmt: skip
            expected = message_id(stack, event.event_id, owned.customer_id)
            sent = time.time()
            await wire.send_all(sender, [wire_record(s, event)])
            at = await asyncio.to_thread(stack.control.wait_for, expected, 30.0)
            waits.append(None if at is None else at - sent)
            await asyncio.sleep(0.3)
    finally:
        await sender.stop()
    return waits


def finish(stack: Stack, result: RunResult) -> None:
    """What the run leaves behind: memory at the end, dead letters."""
    result.figures["rss.end_mb"] = stack.rss_mb()
    result.figures["rss.peak_mb"] = max(stack.peak_mb, stack.peak_rss_mb())
    topic = stack.settings.topic(t.DEAD_LETTERS.name)
    result.checks["dead_letters"] = asyncio.run(lag.end_offsets_total(stack.settings, topic))
