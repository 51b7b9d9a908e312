"""The directory a benchmark publishes, behind one function so its generator can be swapped.

Today it is ``preaviso.devtools.dataset.directory`` (customers over six regions, each
owning zero to three of five SKUs). When ``preaviso synth`` lands, make ``generate``
read its JSON Lines instead: nothing else here depends on how the directory is made.
"""

from __future__ import annotations

from dataclasses import dataclass

from preaviso.devtools import dataset
from preaviso.publish import route
from preaviso.schemas.events import CustomerUpserted, OwnershipRecorded, UpstreamEvent
from preaviso.settings import Settings
from preaviso.streams.codecs import encode

Record = tuple[str, bytes, bytes]  # topic, key, value: what goes on the wire


@dataclass(frozen=True)
class Directory:
    """A generated directory, as models (for the oracle) and as the records to publish."""

    customers: list[CustomerUpserted]
    ownerships: list[OwnershipRecorded]

    def __len__(self) -> int:
        return len(self.customers) + len(self.ownerships)

    def records(self, settings: Settings) -> list[Record]:
        """Customers first, then ownerships: the order a publisher sends them."""
        events: list[UpstreamEvent] = [*self.customers, *self.ownerships]
        return [wire_record(settings, e) for e in events]


def wire_record(settings: Settings, event: UpstreamEvent) -> Record:
    """The topic, key and bytes ``preaviso publish`` would send for ``event``."""
    spec, key = route(event)
    return settings.topic(spec.name), key, encode(event)


def generate(customers: int, seed: int = 7) -> Directory:
    """``customers`` customers and their purchases, reproducible from ``seed``."""
    people, owned = dataset.directory(customers, seed=seed)
    return Directory(people, owned)
