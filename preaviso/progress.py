"""Progress bars on stderr: shown on a terminal or when asked, silent in pipes and tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

Advance = Callable[[float], None]


def _nothing(_: float) -> None:
    pass


@contextmanager
def progress_bar(
    label: str, total: float | None, *, show: bool | None = None, in_bytes: bool = False
) -> Iterator[Advance]:
    """A function to advance a bar by some amount; a no-op when the bar is not shown.

    ``show=None`` shows the bar only when stderr is a terminal, so redirected output
    and test captures stay free of escape codes.
    """
    console = Console(stderr=True)
    if not (console.is_terminal if show is None else show):
        yield _nothing
        return
    counter: tuple[ProgressColumn, ...] = (
        (DownloadColumn(), TransferSpeedColumn()) if in_bytes else (MofNCompleteColumn(),)
    )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        *counter,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda amount: bar.advance(task, amount)
