"""Faults on purpose: kill, stop and restart workers while notices go out, then count.

Shared by the reliability tests (``tests/integration/test_reliability.py``) and the
soak bench (``bench/soak_reliability.py``). A ``Rig`` (``rig.py``) runs named worker processes
against one broker and one mail catcher. ``run_cycle`` publishes one change, fires
``Step`` s (kill -9, SIGTERM, SIGSTOP past the session timeout then SIGCONT, start with
the kept or an empty data dir) when a given share of the change's mails has reached the
catcher, waits for every mail, for the group's lag to return to zero and for a settle
time, and then counts, per Message-ID, the mails at the catcher and the receipts on the
``receipts`` topic.

What a change must produce (Message-ID -> customer_id) is given by the caller, from
a reference written apart from the code under test (``tests/oracle.py``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from preaviso.agents.deliver import resend_bound
from preaviso.devtools.dataset import policy_for_everyone
from preaviso.devtools.observe import CONSUMED_TOPICS, committed_offsets, read_records
from preaviso.devtools.rig import Rig
from preaviso.schemas.events import UpstreamEvent
from preaviso.settings import Settings
from preaviso.streams import topics as t

__all__ = ["CycleReport", "Step", "chaos_plan", "run_chaos", "run_cycle", "with_session_timeout"]

Op = Literal["kill", "stop", "start", "freeze"]
FREEZE_SHARE = 0.25
"""The share of chaos cycles whose fault is a freeze past the session timeout."""
Expect = Callable[[UpstreamEvent], Mapping[str, str]]

SETTLE_SECONDS = 5.0
"""After the last expected mail, how long late duplicates get to show up."""
FROZEN_PAST_SESSION = 4.0
"""A "freeze" lasts the session timeout and this much more: the group moves on without it."""


def with_session_timeout(settings: Settings, seconds: float, heartbeat: float) -> Settings:
    """``settings`` with another Kafka session timeout, if this worker version has one.

    Older workers have no such setting and run with Faust's 60 s session timeout: a
    killed worker's partitions then wait that long for their next owner.
    """
    if not hasattr(settings, "kafka_session_timeout"):
        return settings
    return settings.model_copy(
        update={"kafka_session_timeout": seconds, "kafka_heartbeat_interval": heartbeat}
    )


# -- one change, with faults ----------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """Do ``op`` to worker ``worker`` once ``at`` (0..1) of the change's mails arrived."""

    at: float
    op: Op
    worker: str
    empty_data: bool = False  # for "start": a new, empty data dir (tables from changelogs)
    pause: float = 0.0  # seconds to wait once ``at`` is reached
    seconds: float | None = None  # for "freeze": by default the session timeout + 4 s

    def __str__(self) -> str:
        what = {"kill": "kill -9", "stop": "SIGTERM", "start": "start", "freeze": "SIGSTOP"}[
            self.op
        ]
        data = ""
        if self.op == "start":
            data = " (empty data dir)" if self.empty_data else " (kept data dir)"
        pause = f" +{self.pause:g}s" if self.pause else ""
        if self.op == "freeze" and self.seconds is not None:
            data = f" for {self.seconds:g}s"
        return f"{what} {self.worker}{data} at {self.at:.0%}{pause}"


@dataclass
class Fired:
    step: Step
    delivered: int  # the change's distinct mails at the catcher when the step ran
    wall: float  # when it ran (time.time())
    first_mail_s: float | None = None  # "start": seconds to the next mail of the change


@dataclass
class CycleReport:
    """What one change produced, counted after the settle time."""

    name: str
    expected: int
    delivered: int = 0
    missing: list[str] = field(default_factory=list)  # customer ids with no mail
    lost: int = 0  # missing, and the group committed past their notice: never coming
    stuck: int = 0  # missing, their notice waits behind the group's committed offset
    duplicates: int = 0  # mails beyond the first, per expected Message-ID
    unexpected: int = 0  # mails (whole catcher) whose Message-ID no change owed
    receipts: int = 0
    receipts_missing: list[str] = field(default_factory=list)
    receipt_duplicates: int = 0
    receipts_not_sent: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    lag: dict[str, int] = field(default_factory=dict)  # left when the lag wait gave up
    crashed: list[str] = field(default_factory=list)
    fired: list[Fired] = field(default_factory=list)
    faults: int = 0
    duplicate_bound: int = 0
    seconds: float = 0.0  # publish to the end of the settle time
    all_in_s: float | None = None  # publish to the last expected mail
    timed_out: bool = False

    def problems(self) -> list[str]:
        found = []
        if self.missing:
            found.append(
                f"{len(self.missing)} of {self.expected} notices never arrived: {self.lost} "
                f"lost (the group committed past their notice), {self.stuck} stuck (notice "
                f"not committed yet), {len(self.missing) - self.lost - self.stuck} with no "
                "notice on the notices topic"
            )
        if self.duplicates > self.duplicate_bound:
            found.append(
                f"{self.duplicates} duplicate mails, more than {self.duplicate_bound} "
                f"({self.faults} fault(s) x deliver.resend_bound)"
            )
        if self.unexpected:
            found.append(f"{self.unexpected} mails that no change owed")
        if self.receipts_missing:
            found.append(f"{len(self.receipts_missing)} notices without a receipt")
        if self.receipt_duplicates > self.duplicate_bound:
            found.append(
                f"{self.receipt_duplicates} duplicate receipts, more than {self.duplicate_bound}"
            )
        if self.receipts_not_sent:
            found.append(f"{self.receipts_not_sent} receipts not 'sent'")
        if self.dead_letters:
            found.append(f"dead letters: {dict(self.dead_letters)}")
        if self.lag:
            found.append(f"stalled partitions (group lag): {self.lag}")
        if self.crashed:
            found.append(f"workers exited by themselves: {self.crashed}")
        return found

    def summary(self) -> str:
        resume = ", ".join(
            f"{f.first_mail_s:.1f}s" if f.first_mail_s is not None else "never"
            for f in self.fired
            if f.step.op == "start"
        )
        faults = "; ".join(f"{f.step} (fired at {f.delivered}/{self.expected})" for f in self.fired)
        return (
            f"{self.name}: delivered {self.delivered}/{self.expected}, "
            f"missing {len(self.missing)} (lost {self.lost}, stuck {self.stuck}), "
            f"duplicates {self.duplicates} "
            f"(receipts: {self.receipts}, missing {len(self.receipts_missing)}, "
            f"duplicates {self.receipt_duplicates}), "
            f"restart->first new mail {resume or '-'}, all in "
            f"{'never' if self.all_in_s is None else f'{self.all_in_s:.1f}s'}, "
            f"cycle {self.seconds:.1f}s | {faults or 'no faults'}"
        )

    def explain(self) -> str:
        lines = [self.summary(), *[f"  - {p}" for p in self.problems()]]
        if self.missing:
            shown = ", ".join(self.missing[:30])
            more = f" (+{len(self.missing) - 30} more)" if len(self.missing) > 30 else ""
            lines.append(f"  missing customer ids: {shown}{more}")
        if self.receipts_missing and self.receipts_missing != self.missing:
            lines.append(f"  no receipt for: {', '.join(self.receipts_missing[:30])}")
        return "\n".join(lines)


def run_cycle(
    rig: Rig,
    name: str,
    change: UpstreamEvent,
    expected: Mapping[str, str],
    steps: Sequence[Step] = (),
    *,
    timeout: float = 120.0,
    lag_timeout: float = 75.0,
    settle: float = SETTLE_SECONDS,
) -> CycleReport:
    """Publish ``change``, fire ``steps`` as its mails arrive, and count what came out."""
    if not expected:
        raise ValueError(f"{name}: the change owes no one a notice; the test proves nothing")
    rig.owed.update(expected)
    report = CycleReport(name=name, expected=len(expected))
    faults_before = rig.faults
    started, started_wall = time.monotonic(), time.time()
    rig.publish([change])
    pending = list(steps)
    deadline = started + timeout
    wanted = set(expected)
    while True:
        rig.mail.scan()
        delivered = len(wanted & rig.mail.counts().keys())
        # A step the mails outran still runs, after the last mail (its report says so).
        while pending and (
            delivered >= pending[0].at * len(expected) or delivered == len(expected)
        ):
            step = pending.pop(0)
            if step.pause:
                time.sleep(step.pause)
            report.fired.append(Fired(step, delivered, time.time()))
            if step.op == "kill":
                rig.kill(step.worker)
            elif step.op == "stop":
                rig.stop(step.worker)
            elif step.op == "freeze":
                past_session = rig.settings.kafka_session_timeout + FROZEN_PAST_SESSION
                rig.freeze(step.worker, step.seconds or past_session)
            else:
                rig.start(step.worker, empty_data=step.empty_data)
        if delivered == len(expected):
            break
        if time.monotonic() > deadline:
            report.timed_out = True
            break
        time.sleep(0.1)

    done_at = time.monotonic()
    last = rig.mail.last_arrival(wanted)
    if not report.timed_out and last is not None:
        report.all_in_s = last - started_wall
    # Nothing stuck: every partition the group reads is committed to its end. (After a
    # timeout the stall is plain already: only look again briefly.)
    report.lag = rig.wait_idle(
        CONSUMED_TOPICS, min(lag_timeout, 10) if report.timed_out else lag_timeout
    )
    # Late duplicates: a re-sent notice shows up after the original.
    time.sleep(max(0.0, settle - (time.monotonic() - done_at)))
    _count(rig, report, expected)
    report.faults = rig.faults - faults_before  # a freeze is one (deliver's fence)
    report.duplicate_bound = report.faults * resend_bound(rig.settings)
    report.crashed = rig.crashed()
    report.seconds = time.monotonic() - started
    return report


def _count(rig: Rig, report: CycleReport, expected: Mapping[str, str]) -> None:
    rig.mail.scan()
    counts = rig.mail.counts()
    report.delivered = sum(1 for m in expected if counts[m])
    report.missing = sorted(cid for m, cid in expected.items() if not counts[m])
    report.duplicates = sum(counts[m] - 1 for m in expected if counts[m] > 1)
    report.unexpected = sum(n for m, n in counts.items() if m not in rig.owed)
    for fired in report.fired:
        if fired.step.op == "start":
            first = rig.mail.first_after(fired.wall, expected)
            fired.first_mail_s = None if first is None else first - fired.wall

    if report.missing:
        _locate_missing(rig, report, expected)

    receipts = [
        r
        for _, _, r in read_records(rig.settings, t.RECEIPTS.name)
        if str(r.get("message_id", "")).strip("<>") in expected
    ]
    per_id = Counter(str(r["message_id"]).strip("<>") for r in receipts)
    report.receipts = len(receipts)
    report.receipts_missing = sorted(cid for m, cid in expected.items() if not per_id[m])
    report.receipt_duplicates = sum(n - 1 for n in per_id.values() if n > 1)
    report.receipts_not_sent = sum(1 for r in receipts if r.get("status") != "sent")

    letters = read_records(rig.settings, t.DEAD_LETTERS.name)
    report.dead_letters = Counter(
        f"{d.get('stage')}: {d.get('error_type')}" for _, _, d in letters[rig.dead_letters_seen :]
    )
    rig.dead_letters_seen = len(letters)


def _locate_missing(rig: Rig, report: CycleReport, expected: Mapping[str, str]) -> None:
    """Lost or stuck? Compare each missing notice's offset with the group's commit."""
    customers = set(report.missing)
    missing = {m for m, cid in expected.items() if cid in customers}
    topic = rig.settings.topic(t.NOTICES.name)
    committed = asyncio.run(committed_offsets(rig.settings))
    where: dict[str, tuple[int, int]] = {}
    for partition, offset, notice in read_records(rig.settings, t.NOTICES.name):
        message_id = str(notice.get("message_id", "")).strip("<>")
        if message_id in missing and message_id not in where:
            where[message_id] = (partition, offset)
    for partition, offset in where.values():
        if offset < committed.get((topic, partition), -1):
            report.lost += 1
        else:
            report.stuck += 1


# -- many cycles ----------------------------------------------------------------------


def chaos_plan(rng: random.Random, cycle: int, workers: Sequence[str] = ("a", "b")) -> list[Step]:
    """One cycle's fault at a random point: kill -9 or SIGTERM one worker, then restart it;
    or (one cycle in four) freeze it past its session timeout, after which it resumes by
    itself (deliver's fence bounds what it may send twice).

    The restart alternates between the kept data dir and an empty one (tables from
    the changelogs). It either follows the fault within a few seconds, or waits until
    later in the run, so the survivor takes the partitions over and the restarted
    worker then joins mid-run: two rebalances in one cycle.
    """
    victim = rng.choice(list(workers))
    roll = rng.random()
    at = round(rng.uniform(0.1, 0.6), 2)
    if roll < FREEZE_SHARE:
        return [Step(at, "freeze", victim)]
    op: Op = "kill" if roll < (1 + FREEZE_SHARE) / 2 else "stop"
    empty = cycle % 2 == 1
    if rng.random() < 0.5:
        restart = Step(at, "start", victim, empty_data=empty, pause=round(rng.uniform(0, 3), 1))
    else:
        restart = Step(round(rng.uniform(at + 0.1, 0.9), 2), "start", victim, empty_data=empty)
    return [Step(at, op, victim), restart]


def run_chaos(
    rig: Rig,
    expect: Expect,
    *,
    cycles: int,
    seed: int,
    on_report: Callable[[CycleReport], None] = lambda r: None,
    stop_on_problem: bool = True,
    timeout: float = 120.0,
    lag_timeout: float = 75.0,
    budget: float | None = None,
) -> list[CycleReport]:
    """``cycles`` changes for everyone, each with a fault (and a restart: ``chaos_plan``).

    The two workers ``a`` and ``b`` must be running and the directory loaded. No new
    cycle starts once ``budget`` seconds have passed: fewer reports than ``cycles``.
    """
    rng = random.Random(seed)
    reports: list[CycleReport] = []
    began = time.monotonic()
    for cycle in range(cycles):
        if budget is not None and time.monotonic() - began > budget:
            break
        change = policy_for_everyone(f"chaos-{seed}-{cycle}")
        steps = chaos_plan(rng, cycle)
        report = run_cycle(
            rig,
            f"cycle {cycle + 1}/{cycles}",
            change,
            expect(change),
            steps,
            timeout=timeout,
            lag_timeout=lag_timeout,
        )
        reports.append(report)
        on_report(report)
        if stop_on_problem and report.problems():
            break
    return reports
