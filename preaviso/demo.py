"""`preaviso demo`: the whole pipeline on a local Kafka broker and a mail catcher."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from email.utils import parseaddr
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from preaviso.audience import expected_recipients
from preaviso.devtools import dataset
from preaviso.devtools.catcher import CatcherProcess, read_mails
from preaviso.devtools.kafka import LocalKafka
from preaviso.devtools.worker import WorkerProcess
from preaviso.publish import publish
from preaviso.schemas.events import PolicyChanged, ProductDiscontinued
from preaviso.settings import Settings
from preaviso.streams import topics as t
from preaviso.streams.lag import end_offsets_total, wait_idle


def caught_recipients(mail_dir: Path) -> list[str]:
    """Addresses in the To header of every caught mail (one entry per mail)."""
    return [parseaddr(str(msg["To"]))[1] for msg in read_mails(mail_dir)]


def run_demo(customers: int, out_dir: Path, console: Console) -> int:
    started = time.monotonic()
    mail_dir = out_dir / "mail"
    shutil.rmtree(mail_dir, ignore_errors=True)
    mail_dir.mkdir(parents=True)
    work = Path(tempfile.mkdtemp(prefix="preaviso-demo-"))
    console.rule("[bold]Preaviso demo")
    with console.status("Starting Kafka (the first run fetches it with Maven)…"):
        kafka = LocalKafka().start()
    try:
        console.print(f"✓ Kafka broker on {kafka.bootstrap}")
        with CatcherProcess(mail_dir) as catcher:
            host, port = catcher.host, catcher.port
            console.print(f"✓ Mail catcher on {host}:{port}, writing to {mail_dir}/")
            settings = Settings(
                kafka_bootstrap=kafka.bootstrap,
                smtp_host=host,
                smtp_port=port,
                data_dir=work / "data",
                topic_prefix="demo.",
            )
            with WorkerProcess(settings, out_dir / "worker.log"):
                console.print(f"✓ Worker started (log: {out_dir / 'worker.log'})")
                code = asyncio.run(_scenario(settings, customers, mail_dir, console))
        console.print(f"Done in {time.monotonic() - started:.1f}s.")
        return code
    finally:
        kafka.stop()
        shutil.rmtree(work, ignore_errors=True)


async def _scenario(settings: Settings, count: int, mail_dir: Path, console: Console) -> int:
    people, owned = dataset.directory(count)
    await publish(settings, [*people, *owned])
    console.print(f"✓ Published a directory of {len(people)} customers, {len(owned)} purchases")
    with console.status("Worker is loading the directory into its tables…"):
        names = [settings.topic(s.name) for s in t.DIRECTORY_TOPICS]
        await wait_idle(settings, names, within=180)
    changes: list[ProductDiscontinued | PolicyChanged] = [
        dataset.dishwasher_discontinued(),
        dataset.warranty_change(),
    ]
    by_id = {c.customer_id: c for c in people}
    expected = {c.event_id: expected_recipients(by_id, owned, c) for c in changes}
    total = sum(len(v) for v in expected.values())
    await publish(settings, changes)
    console.print("✓ Published: DW-400 dishwasher discontinued; warranty change in ES-CT, ES-AN")
    with Progress(
        TextColumn("Notices delivered"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("mail", total=total)
        deadline = time.monotonic() + 300
        while (n := _count_mail(mail_dir)) < total and time.monotonic() < deadline:
            progress.update(task, completed=n)
            await asyncio.sleep(0.3)
        progress.update(task, completed=n)
    await asyncio.sleep(1.0)  # let a stray duplicate show up before counting
    got = caught_recipients(mail_dir)
    want = sorted(str(by_id[cid].email) for ids in expected.values() for cid in ids)
    dead = await _count(settings, t.DEAD_LETTERS)
    table = Table(title="Summary", show_header=False)
    table.add_row("Events published", f"{len(people) + len(owned) + len(changes)}")
    for change in changes:
        affected = len(expected[change.event_id])
        table.add_row(f"Affected by {change.type} {change.event_id}", str(affected))
    table.add_row("Notices expected", str(total))
    table.add_row("Notices caught", str(len(got)))
    table.add_row("Dead letters", str(dead))
    table.add_row("Mails are in", f"{mail_dir}/ (.eml, open with any mail client)")
    console.print(table)
    if sorted(got) != want:
        from collections import Counter

        missing = sum((Counter(want) - Counter(got)).values())
        extra = sum((Counter(got) - Counter(want)).values())
        console.print(
            f"[red]✗ Recipients differ from the expected audience:[/] "
            f"{missing} missing, {extra} extra"
        )
        return 1
    console.print("[green]✓ Exactly the affected customers got their notices.[/]")
    return 0


def _count_mail(mail_dir: Path) -> int:
    return sum(1 for _ in mail_dir.glob("*.eml"))


async def _count(settings: Settings, spec: t.TopicSpec) -> int:
    return await end_offsets_total(settings, settings.topic(spec.name))
