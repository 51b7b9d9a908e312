"""The sizes a benchmark runs at: a smoke run for the tests, quick, full and the million."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Plan:
    """What one invocation measures; every figure is taken ``runs`` times."""

    mode: str
    customers: int
    runs: int = 3
    connections: tuple[int, ...] = (1, 4, 16)
    naive_mails: int = 1000  # the naive script is slow: it sends this many, timed at the sink
    probes: int = 20  # small events for the publish -> first mail latency
    partitions: int = 4
    workers: int = 1  # worker processes in the group; they share the connections
    seed: int = 7
    within: float = 1800.0  # seconds one phase (a load, a delivery) may take
    stall: float = 120.0  # seconds without a new mail that end a delivery as incomplete
    profile: tuple[str, ...] = ()  # phases sampled with py-spy in the first run
    compare_catcher: bool = False  # also time the raw sender against the aiosmtpd catcher
    warning: str = ""

    def with_options(self, **changes: Any) -> Plan:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


MODES: dict[str, Plan] = {
    "smoke": Plan(
        "smoke", 200, runs=1, connections=(1,), naive_mails=50, probes=3, within=60, stall=30
    ),
    "quick": Plan("quick", 10_000, naive_mails=1000, probes=20, within=1800),
    "full": Plan(
        "full",
        100_000,
        naive_mails=3000,
        probes=50,
        within=4 * 3600,
        stall=300,
        warning="full mode: 100,000 customers, 3 runs; about 10 min a run on 2 cores.",
    ),
    "million": Plan(
        "million",
        1_000_000,
        runs=1,
        naive_mails=3000,
        probes=50,
        within=24 * 3600,
        stall=600,
        warning=(
            "million mode: 1,000,000 customers (~3M ownerships), 1 run. Generating the "
            "directory takes minutes and GBs of memory (it is held as models for the "
            "oracle); at ~30,000 records/s the load takes a few minutes, the mails "
            "(~1,000/s) over an hour. Stop it with Ctrl-C; nothing is written until the end."
        ),
    ),
}
