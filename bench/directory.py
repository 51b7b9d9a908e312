"""The directory a benchmark publishes, behind one function so its generator can be swapped.

It is what ``preaviso synth`` writes (customers over eleven regions, about three
purchases each, skewed over ~1,700 SKUs), read back into the contracts: the oracle
needs models, the publisher the exact bytes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from preaviso import synth
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
    out = io.BytesIO()
    synth.write(synth.SynthSpec(customers=customers, seed=seed), out)
    people: list[CustomerUpserted] = []
    owned: list[OwnershipRecorded] = []
    for line in out.getvalue().splitlines():
        if b'"type":"CustomerUpserted"' in line:
            people.append(CustomerUpserted.model_validate_json(line))
        else:
            owned.append(OwnershipRecorded.model_validate_json(line))
    return Directory(people, owned)
