"""The `preaviso` command: worker, publish, synth, demo."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from preaviso.loops import EventLoopUnavailableError
from preaviso.mail import SmtpUnreachableError
from preaviso.settings import Settings
from preaviso.streams.kafka import KafkaUnreachableError
from preaviso.streams.topics import TopicMismatchError

app = typer.Typer(
    help="Preaviso: advance notices to customers, from Kafka events to their inboxes.",
    no_args_is_help=True,
    add_completion=False,
)
err = Console(stderr=True)
out = Console()


def quiet_clients() -> None:
    # aiokafka logs transient leader elections of new topics as errors; ours are
    # retried, and a real failure surfaces as an exception with its own message.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        for e in exc.errors(include_url=False):
            if e["loc"]:
                name = "PREAVISO_" + "_".join(str(p) for p in e["loc"]).upper()
                err.print(f"[red]error:[/] setting {name}: {escape(e['msg'])}", soft_wrap=True)
            else:  # a rule across settings names them in its message
                err.print(f"[red]error:[/] settings: {escape(e['msg'])}", soft_wrap=True)
        raise typer.Exit(2) from exc


def fail(exc: BaseException) -> typer.Exit:
    err.print(f"[red]error:[/] {exc}")
    return typer.Exit(1)


@app.command()
def worker(
    loglevel: Annotated[str, typer.Option(help="crit, error, warn, info or debug.")] = "warn",
) -> None:
    """Run the worker: directory tables, audience, rendering and delivery."""
    from preaviso.worker import run_worker

    try:
        run_worker(load_settings(), loglevel=loglevel)
    except (
        KafkaUnreachableError,
        SmtpUnreachableError,
        TopicMismatchError,
        EventLoopUnavailableError,
    ) as exc:
        raise fail(exc) from exc


ShowProgress = Annotated[
    bool | None,
    typer.Option(
        "--progress/--no-progress",
        help="Show a progress bar on stderr (default: only when stderr is a terminal).",
    ),
]


@contextmanager
def _input_file(file: str) -> Iterator[Path]:
    """The file to publish; standard input is spooled to a temporary file to be read twice."""
    if file != "-":
        path = Path(file)
        if not path.is_file():
            err.print(f"[red]error:[/] {file}: no such file")
            raise typer.Exit(2)
        yield path
        return
    from preaviso.publish import spooled

    with spooled(sys.stdin.buffer) as path:
        yield path


@app.command()
def publish(
    file: Annotated[str, typer.Argument(help="JSON Lines, a JSON object or array; - for stdin.")],
    progress: ShowProgress = None,
) -> None:
    """Validate every event in FILE, then publish them all (or none if any is invalid).

    JSON Lines are streamed twice (check, then send) in flat memory; standard input
    is first copied to a temporary file.
    """
    from aiokafka.errors import KafkaError

    from preaviso.progress import progress_bar
    from preaviso.publish import Events, InputChangedError, check, records, send

    with _input_file(file) as path:
        events = Events.from_path(path)
        started = time.monotonic()
        with progress_bar("checking", path.stat().st_size, show=progress, in_bytes=True) as bar:
            checked = check(events, on_progress=bar)
        if checked.invalid:
            for e in checked.errors:
                err.print(f"{file}: {e}", markup=False, highlight=False, soft_wrap=True)
            if checked.invalid > len(checked.errors):
                err.print(f"… and {checked.invalid - len(checked.errors)} more not shown")
            err.print(
                f"[red]nothing published:[/] {checked.invalid} invalid event(s); fix them and retry"
            )
            raise typer.Exit(2)
        checked_in = time.monotonic() - started
        settings = load_settings()
        quiet_clients()
        started = time.monotonic()
        try:
            with progress_bar("publishing", checked.events, show=progress) as bar:
                counts = asyncio.run(send(settings, records(events, checked), on_sent=bar))
        except (KafkaUnreachableError, TopicMismatchError, InputChangedError) as exc:
            raise fail(exc) from exc
        except KafkaError as exc:
            err.print(
                f"[red]error:[/] publishing stopped: {escape(repr(exc))}. Some events may have "
                "been published; publishing the same file again is safe for events with an "
                "event_id.",
                soft_wrap=True,
            )
            raise typer.Exit(1) from exc
    elapsed = time.monotonic() - started
    for topic, n in sorted(counts.items()):
        out.print(f"{n:>7} → {topic}", highlight=False)
    total = sum(counts.values())
    out.print(f"published {total} event(s)", highlight=False)
    err.print(
        f"checked in {checked_in:.1f}s, published in {elapsed:.1f}s "
        f"({total / max(elapsed, 1e-9):,.0f} events/s)",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def synth(
    out_file: Annotated[
        str, typer.Option("--out", help="The JSON Lines file to write; - for standard output.")
    ],
    customers: Annotated[int, typer.Option(min=0, help="How many customers.")] = 1000,
    ownerships_per_customer: Annotated[
        float, typer.Option(min=0, help="Mean purchases per customer (Poisson).")
    ] = 3.0,
    seed: Annotated[int, typer.Option(help="Same seed, same bytes.")] = 7,
    progress: ShowProgress = None,
) -> None:
    """Write a realistic synthetic directory as JSON Lines: each customer, then their purchases."""
    from preaviso.progress import progress_bar
    from preaviso.synth import SynthSpec, write

    spec = SynthSpec(customers, ownerships_per_customer, seed)
    started = time.monotonic()
    try:
        with progress_bar("customers", customers, show=progress) as bar:
            if out_file == "-":
                totals = write(spec, sys.stdout.buffer, bar)
                sys.stdout.buffer.flush()
            else:
                with Path(out_file).open("wb") as f:
                    totals = write(spec, f, bar)
    except OSError as exc:
        err.print(
            f"[red]error:[/] cannot write {escape(out_file)}: {exc.strerror or exc}", soft_wrap=True
        )
        raise typer.Exit(1) from exc
    elapsed = time.monotonic() - started
    err.print(
        f"wrote {totals.customers:,} customers and {totals.ownerships:,} ownerships "
        f"({totals.lines:,} lines, {totals.bytes / 1e6:,.1f} MB) to {out_file} in {elapsed:.1f}s "
        f"({totals.lines / max(elapsed, 1e-9):,.0f} lines/s)",
        highlight=False,
        soft_wrap=True,
    )
    top = sorted(totals.owners.items(), key=lambda kv: -kv[1])[:5]
    regions = sorted(totals.regions.items(), key=lambda kv: -kv[1])[:5]
    for label, counts in (("most owned SKUs", top), ("largest regions", regions)):
        summary = ", ".join(f"{k} {v:,}" for k, v in counts)
        err.print(f"{label}: {summary}", highlight=False, soft_wrap=True)


@app.command()
def demo(
    customers: Annotated[int, typer.Option(help="How many customers to generate.")] = 1000,
    out_dir: Annotated[Path, typer.Option("--out", help="Where the caught mails go.")] = Path(
        "demo-output"
    ),
) -> None:
    """Run everything locally: Kafka, a mail catcher, a worker, and two real announcements."""
    from preaviso.demo import run_demo
    from preaviso.devtools import stop_on_sigterm

    stop_on_sigterm()  # the broker, the catcher and the worker stop with the demo
    load_settings()  # a bad PREAVISO_* value is reported before Kafka is started
    quiet_clients()
    raise typer.Exit(run_demo(customers=customers, out_dir=out_dir, console=out))


def main() -> None:
    app()
