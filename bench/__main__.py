"""``./dev bench``: run the suite, print each figure by its baseline, write docs/benchmarks.*."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from bench import report, suite
from bench.plan import MODES
from preaviso.devtools import stop_on_sigterm
from preaviso.settings import EventLoop

DOCS = Path(__file__).resolve().parents[1] / "docs"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="./dev bench",
        description="Preaviso against raw baselines, measured side by side in each run.",
    )
    size = parser.add_mutually_exclusive_group()
    for mode in ("quick", "full", "million"):
        plan = MODES[mode]
        size.add_argument(
            f"--{mode}", dest="mode", action="store_const", const=mode,
            help=f"{plan.customers:,} customers, {plan.runs} run(s)"
            + (" (the default)" if mode == "quick" else ""),
        )  # fmt: skip
    parser.set_defaults(mode="quick")
    parser.add_argument("--customers", type=int, help="override the mode's size")
    parser.add_argument("--runs", type=int, help="override the mode's number of runs")
    parser.add_argument(
        "--connections", type=lambda v: tuple(int(c) for c in v.split(",")),
        help="SMTP connections to measure, e.g. 1,4,16",
    )  # fmt: skip
    parser.add_argument(
        "--workers", type=int, help="worker processes in the group (they share the connections)"
    )
    parser.add_argument(
        "--profile", action="append", choices=("load", "deliver"),
        help="sample the worker with py-spy during this phase of the first run (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--compare-catcher", action="store_true",
        help="also time the raw sender against the aiosmtpd catcher, once",
    )  # fmt: skip
    parser.add_argument(
        "--loop", choices=[e.value for e in EventLoop],
        help="the event loop of the worker and the baselines (PREAVISO_EVENT_LOOP; auto: "
        "uvloop when installed)",
    )  # fmt: skip
    parser.add_argument("--tree", type=Path, help="run the worker from this source tree")
    parser.add_argument("--bootstrap", help="use this Kafka broker instead of starting one")
    parser.add_argument("--docs", type=Path, default=DOCS, help="where benchmarks.* go")
    parser.add_argument("--no-write", action="store_true", help="print only, write no docs")
    parser.add_argument(
        "--keep-work", action="store_true",
        help="keep the work dir (logs, data dirs); kept anyway when a check fails or a "
        "profile is taken",
    )  # fmt: skip
    parser.add_argument(
        "--report-only", action="store_true",
        help="regenerate the page and chart from DOCS/benchmarks.json, measure nothing",
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    stop_on_sigterm()  # a stopped bench stops its broker, sink and workers
    if args.report_only:
        for path in suite.render(args.docs / "benchmarks.json", chart=True):
            print(f"wrote {path}")
        return 0
    if args.loop:
        os.environ["PREAVISO_EVENT_LOOP"] = args.loop  # the worker's settings read it too
    plan = MODES[args.mode].with_options(
        customers=args.customers, runs=args.runs, connections=args.connections,
        workers=args.workers, profile=tuple(args.profile) if args.profile else None,
        compare_catcher=args.compare_catcher or None,
    )  # fmt: skip
    if plan.warning:
        print(f"NOTE: {plan.warning}", flush=True)
    command = shlex.join(["./dev", "bench", *(sys.argv[1:] if argv is None else argv)])
    data = suite.run_suite(
        plan, bootstrap=args.bootstrap, tree=args.tree, command=command,
        say=lambda line: print(line, flush=True),
    )  # fmt: skip
    print()
    print(report.console(data["summary"], data["checks"]))
    if not args.no_write:
        for path in suite.write(data, args.docs, chart=True):
            print(f"wrote {path}")
    reason = suite.kept_because(data, asked=args.keep_work)
    if reason is None:
        suite.cleanup(Path(data["work_dir"]))
    else:
        print(f"work dir kept ({reason}): {data['work_dir']}")
    return 1 if any(data["checks"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
