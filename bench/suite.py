"""The suite: each run on a fresh topic prefix, then the figures folded, printed and written."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench import phases, report, results
from bench.directory import Directory, generate
from bench.machine import describe
from bench.plan import Plan
from bench.stack import Stack
from preaviso import loops
from preaviso.devtools.kafka import LocalKafka
from preaviso.settings import Settings

Say = Callable[[str], None]


def one_run(
    plan: Plan,
    bootstrap: str,
    root: Path,
    run: int,
    directory: Directory,
    say: Say,
    broker_pid: int | None = None,
) -> phases.RunResult:
    """Every figure once, on a new prefix, a new sink and a new worker."""
    result = phases.RunResult()
    stack = Stack(bootstrap, root / f"run-{run}", run, plan.partitions, plan.workers, broker_pid)
    first = run == 1
    try:
        say(f"run {run}: directory load ({len(directory):,} records)")
        phases.load(stack, plan, directory, result, first)
        say(_brief(result, "load."))
        for c in plan.connections:
            say(f"run {run}: policy change to {len(directory.customers):,} customers, {c} conn.")
            phases.deliver(stack, plan, directory, result, run, c)
            say(_brief(result, f"e2e.c{c}."))
            say(_brief(result, f"cpu.c{c}.") + " (µs of CPU a mail; ceiling: mails/s)")
        naive = min(plan.naive_mails, len(directory.customers))
        say(f"run {run}: naive script ({naive:,} mails)")
        phases.naive(stack, plan, directory, result, run)
        say(f"run {run}: latency ({plan.probes} small events)")
        phases.latency(stack, plan, directory, result, run)
        say(_brief(result, "latency."))
        phases.finish(stack, result)
    finally:
        stack.close()
    return result


def _brief(result: phases.RunResult, prefix: str) -> str:
    found = [(k[len(prefix) :], v) for k, v in result.figures.items() if k.startswith(prefix)]
    parts = [f"{k}={results.number(v)}" for k, v in found]
    return "  " + ", ".join(parts)


def run_suite(
    plan: Plan,
    *,
    bootstrap: str | None = None,
    tree: Path | None = None,
    command: str = "",
    work: Path | None = None,
    say: Say = print,
) -> dict[str, Any]:
    """Run every figure ``plan.runs`` times; return the results document (see docs/benchmarks.json).

    ``tree`` runs the worker from another source tree (its ``PYTHONPATH``), with this
    harness; ``bootstrap`` uses a running broker instead of starting one.
    """
    began = time.monotonic()
    here = Path(__file__).resolve().parents[1]
    measured = (tree or here).resolve()
    if tree is not None:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(measured), str(here)])
        # ``python -m`` puts the working directory first on the worker's path, before
        # PYTHONPATH: run from here, the worker imported this tree, not ``tree``.
        os.chdir(measured)
    meta = describe(measured, command)
    # Both sides on the same loop (the worker reads PREAVISO_EVENT_LOOP too): only then
    # does a ratio measure the worker, not the loop.
    meta["event_loop"] = {"baselines": loops.use(Settings().event_loop)}
    work = work or Path(tempfile.mkdtemp(prefix="preaviso-bench-"))
    say(f"work dir (logs, profiles): {work}")
    directory = generate(plan.customers, plan.seed)
    runs: list[phases.RunResult] = []
    with ExitStack() as stack:
        broker_pid = None  # a broker given with --bootstrap may be elsewhere: not measured
        if bootstrap is None:
            kafka = stack.enter_context(LocalKafka(base_dir=work))
            bootstrap, broker_pid = kafka.bootstrap, kafka.pid
        for run in range(1, plan.runs + 1):
            runs.append(one_run(plan, bootstrap, work, run, directory, say, broker_pid))
    docs = [{"figures": r.figures, "checks": r.checks} for r in runs]
    table = results.rows(plan.connections)
    meta["load_end"] = os.getloadavg()[0]
    meta["event_loop"]["worker"] = worker_loops(work)
    return {
        "meta": meta,
        "plan": plan.as_dict(),
        "directory_records": len(directory),
        "seconds": time.monotonic() - began,
        "work_dir": str(work),
        "runs": docs,
        "summary": results.summarize(docs, table),
        "checks": results.checks(docs),
        "profiles": {k: v for r in runs for k, v in r.profiles.items()},
        "sink_counts": [r.sink_counts for r in runs],  # dropped before writing: large
    }


def worker_loops(work: Path) -> str:
    """The loops the workers said they ran on (an older ``--tree`` says nothing)."""
    said = {
        m.group(1)
        for log in sorted(work.glob("run-*/worker-*.log"))
        for m in re.finditer(r"event loop: (\w+)", log.read_text(errors="replace"))
    }
    return ", ".join(sorted(said)) or "unknown (the worker did not say)"


def write(data: dict[str, Any], docs: Path, *, chart: bool) -> list[Path]:
    """docs/benchmarks.json, .md and (unless ``chart`` is False) .png; returns the paths."""
    docs.mkdir(parents=True, exist_ok=True)
    data = {k: v for k, v in data.items() if k != "sink_counts"}
    written = [docs / "benchmarks.json"]
    written[0].write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    return written + render(written[0], chart=chart)


def render(source: Path, *, chart: bool) -> list[Path]:
    """The page (and chart) from a results JSON: what ``--report-only`` does."""
    data = json.loads(source.read_text())
    page = source.with_suffix(".md")
    written = []
    picture = None
    if chart:
        from bench.chart import draw

        meta = data["meta"]
        title = (
            f"Preaviso ({meta['commit']}) against raw baselines, same run\n"
            f"{data['plan']['customers']:,} customers, {meta['cores']} cores, {meta['date']}"
        )
        written.append(draw(data["summary"], title, source.with_suffix(".png")))
        picture = written[-1].name
    page.write_text(report.markdown(data, picture, report.kept_notes(page)))
    return [page, *written]


def kept_because(data: dict[str, Any], *, asked: bool) -> str | None:
    """Why a run's work dir (logs, profiles, data dirs: ~20 MB a quick run) stays after it:
    asked for, a check failed (the logs are the evidence), or a profile's raw samples are
    in it. None: nothing in it is worth the space."""
    if asked:
        return "--keep-work"
    if any(data["checks"].values()):
        return "a check failed"
    if data["profiles"]:
        return "the profiles are in it"
    return None


def cleanup(work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
