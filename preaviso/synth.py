"""`preaviso synth`: a large, realistic and reproducible customer directory as JSON Lines.

Lines are built as plain dicts, not pydantic models: validating a million email
addresses would make the generator 20 times slower. The contracts stay the one
definition of the wire format: a unit test checks that every line of a synthetic
directory is exactly what `preaviso.streams.codecs.encode` writes for it.
"""

from __future__ import annotations

import json
import math
import random
import unicodedata
from bisect import bisect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from itertools import accumulate
from typing import Any, BinaryIO

from preaviso.devtools import dataset
from preaviso.schemas.base import SCHEMA_VERSION

FIRST_SALE = date(2014, 1, 1).toordinal()
LAST_SALE = date(2026, 10, 31).toordinal()

REGIONS: tuple[tuple[str, float, float], ...] = (
    # (region, share of customers, share of them who read English)
    ("ES-MD", 0.16, 0.06),
    ("ES-CT", 0.18, 0.06),
    ("ES-AN", 0.17, 0.10),
    ("ES-VC", 0.11, 0.12),
    ("ES-PV", 0.05, 0.04),
    ("ES-GA", 0.06, 0.03),
    ("ES-CL", 0.05, 0.03),
    ("ES-IB", 0.03, 0.30),
    ("GB-LND", 0.12, 1.0),
    ("GB-MAN", 0.04, 1.0),
    ("GB-EDH", 0.03, 1.0),
)
SEGMENTS: tuple[tuple[str, float, float], ...] = (
    # (segment, share of customers, share of them who consent to marketing)
    ("consumer", 0.84, 0.38),
    ("business", 0.11, 0.55),
    ("premium", 0.05, 0.70),
)
CATEGORIES: tuple[tuple[str, str, float], ...] = (
    # (SKU prefix, product name in the catalogue, share of purchases)
    ("DW", "Lavavajillas", 0.12),
    ("WM", "Lavadora", 0.11),
    ("FR", "Frigorífico combi", 0.10),
    ("OV", "Horno", 0.09),
    ("HB", "Placa de inducción", 0.11),
    ("MW", "Microondas", 0.10),
    ("TD", "Secadora", 0.08),
    ("HD", "Campana extractora", 0.08),
    ("VC", "Aspiradora", 0.09),
    ("CM", "Cafetera", 0.08),
    ("AC", "Aire acondicionado", 0.04),
)
COLOURS = (("W", "blanco"), ("S", "inox"), ("B", "negro"))
DOMAINS = ("example.com", "example.org", "example.net")
MODELS_PER_CATEGORY = 90
ZIPF_EXPONENT = 0.9
"""Popularity of the n-th SKU of a category is 1/n**0.9: the demo's DW400-W, first
of the dishwashers, has about 50,000 owners in a directory of 1,000,000 customers."""
CATALOGUE_SEED = 2026
"""The catalogue is the same whatever the seed, so benchmarks can name its SKUs."""


@dataclass(frozen=True, slots=True)
class Product:
    """A SKU and the days it was on sale: its owners bought it then."""

    sku: str
    name: str
    category: str
    on_sale_from: int
    on_sale_days: int


def catalogue() -> tuple[Product, ...]:
    """Every SKU, most popular first within each category, the demo's products leading."""
    rng = random.Random(CATALOGUE_SEED)
    pinned: dict[str, list[Product]] = {}
    demo_start = date(2021, 3, 1).toordinal()
    for sku, name in dataset.PRODUCTS:
        product = Product(sku, name, sku[:2], demo_start, LAST_SALE - demo_start + 1)
        pinned.setdefault(sku[:2], []).append(product)
    taken = {sku.split("-")[0] for sku, _ in dataset.PRODUCTS}
    products: list[Product] = []
    for prefix, label, _ in CATEGORIES:
        generated: list[Product] = []
        for number in range(100, 100 + 10 * MODELS_PER_CATEGORY, 10):
            if f"{prefix}{number}" in taken:
                continue
            start = rng.randrange(FIRST_SALE, LAST_SALE - 180)
            days = min(rng.randrange(730, 2190), LAST_SALE - start + 1)
            model = f"{label} Serie {number // 100} {prefix}-{number}"
            variants = rng.choice((1, 1, 2, 3))
            for code, colour in COLOURS[:variants] if variants > 1 else ((None, None),):
                sku = f"{prefix}{number}-{code}" if code else f"{prefix}{number}"
                name = f"{model} {colour}" if colour else model
                generated.append(Product(sku, name, prefix, start, days))
        rng.shuffle(generated)
        products.extend([*pinned.get(prefix, []), *generated])
    return tuple(products)


def _cumulative(weights: Sequence[float]) -> list[float]:
    total = sum(weights)
    return [w / total for w in accumulate(weights)]


def _poisson_table(mean: float) -> list[float]:
    """Cumulative Poisson probabilities, so one uniform draw picks a count."""
    if mean <= 0:
        return [1.0]
    cumulative, p, k = [], math.exp(-mean), 0
    total = 0.0
    while total < 1 - 1e-12 and k < 10 * mean + 50:
        total += p
        cumulative.append(total)
        k += 1
        p *= mean / k
    return cumulative


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return folded.lower().replace("'", "").replace(" ", ".")


def _stamp(day: int, second: int) -> str:
    hh, mm, ss = second // 3600, second // 60 % 60, second % 60
    return f"{date.fromordinal(day).isoformat()}T{hh:02d}:{mm:02d}:{ss:02d}Z"


@dataclass(frozen=True, slots=True)
class SynthSpec:
    """What to generate: the same spec always gives the same bytes."""

    customers: int
    ownerships_per_customer: float = 3.0
    seed: int = 7


@dataclass(slots=True)
class Totals:
    """What was written, and the figures a benchmark needs to aim its announcements."""

    customers: int = 0
    ownerships: int = 0
    bytes: int = 0
    owners: dict[str, int] = field(default_factory=dict)
    regions: dict[str, int] = field(default_factory=dict)

    @property
    def lines(self) -> int:
        return self.customers + self.ownerships


class _Generator:
    """Draws customers and their purchases from one seeded random stream."""

    def __init__(self, spec: SynthSpec) -> None:
        if spec.customers < 0 or spec.ownerships_per_customer < 0:
            raise ValueError("customers and ownerships per customer must not be negative")
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.products = catalogue()
        weight = {prefix: share for prefix, _, share in CATEGORIES}
        rank: dict[str, int] = {}
        weights = []
        for p in self.products:
            rank[p.category] = rank.get(p.category, 0) + 1
            weights.append(weight[p.category] / rank[p.category] ** ZIPF_EXPONENT)
        self.sku_cdf = _cumulative(weights)
        self.region_cdf = _cumulative([share for _, share, _ in REGIONS])
        self.segment_cdf = _cumulative([share for _, share, _ in SEGMENTS])
        self.count_cdf = _poisson_table(spec.ownerships_per_customer)
        self.first = {
            "es": [n for n in dataset.FIRST if n not in dataset.FIRST_EN],
            "en": list(dataset.FIRST_EN),
        }
        self.last = {
            "es": [n for n in dataset.LAST if n not in dataset.LAST_EN],
            "en": list(dataset.LAST_EN),
        }
        self.id_width = max(7, len(str(max(spec.customers - 1, 0))))
        self.owners = [0] * len(self.products)
        self.regions = [0] * len(REGIONS)

    def _pick(self, cdf: list[float]) -> int:
        return min(bisect(cdf, self.rng.random()), len(cdf) - 1)

    def _purchases(self, cid: str) -> tuple[list[dict[str, Any]], int | None]:
        """The customer's ownerships, and the day of their first purchase."""
        rng, chosen, first = self.rng, set(), None
        for _ in range(self._pick(self.count_cdf)):
            chosen.add(self._pick(self.sku_cdf))  # a repeat purchase of a SKU is one ownership
        records = []
        for index in sorted(chosen):
            product = self.products[index]
            self.owners[index] += 1
            day = product.on_sale_from + int(rng.random() * product.on_sale_days)
            first = day if first is None else min(first, day)
            records.append(
                {
                    "event_id": f"own-{cid}-{product.sku}",
                    "schema_version": SCHEMA_VERSION,
                    "occurred_at": _stamp(day, 9 * 3600 + int(rng.random() * 12 * 3600)),
                    "source": "shop",
                    "type": "OwnershipRecorded",
                    "customer_id": cid,
                    "sku": product.sku,
                    "product_name": product.name,
                    "purchase_date": date.fromordinal(day).isoformat(),
                }
            )
        return records, first

    def _customer(self, number: int, cid: str, first_purchase: int | None) -> dict[str, Any]:
        rng = self.rng
        r = self._pick(self.region_cdf)
        self.regions[r] += 1
        region, _, english = REGIONS[r]
        locale = "en" if rng.random() < english else "es"
        segment, _, consent = SEGMENTS[self._pick(self.segment_cdf)]
        firsts, lasts = self.first[locale], self.last[locale]
        surnames = [rng.choice(lasts)] + ([rng.choice(lasts)] if locale == "es" else [])
        first = rng.choice(firsts)
        if first_purchase is None:
            joined = FIRST_SALE + int(rng.random() * (LAST_SALE - FIRST_SALE))
        else:
            joined = max(FIRST_SALE, first_purchase - int(rng.random() * 365))
        return {
            "event_id": f"cust-{cid}",
            "schema_version": SCHEMA_VERSION,
            "occurred_at": _stamp(joined, int(rng.random() * 86400)),
            "source": "crm",
            "type": "CustomerUpserted",
            "customer_id": cid,
            "email": f"{_ascii(first)}.{_ascii(surnames[0])}.{number}@{rng.choice(DOMAINS)}",
            "name": " ".join([first, *surnames]),
            "locale": locale,
            "region": region,
            "segment": segment,
            "marketing_consent": rng.random() < consent,
        }

    def records(self) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """Each customer with their ownerships, in customer id order."""
        for number in range(self.spec.customers):
            cid = f"C{number:0{self.id_width}d}"
            owned, first_purchase = self._purchases(cid)
            yield self._customer(number, cid, first_purchase), owned


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


def write(
    spec: SynthSpec,
    out: BinaryIO,
    on_progress: Callable[[int], None] | None = None,
    chunk: int = 2000,
) -> Totals:
    """Write the directory to ``out``, each customer before their ownerships, in chunks."""
    gen = _Generator(spec)
    totals = Totals()
    buffer: list[str] = []
    for customer, owned in gen.records():
        buffer.append(_line(customer))
        buffer.extend(_line(o) for o in owned)
        totals.customers += 1
        totals.ownerships += len(owned)
        if totals.customers % chunk == 0:
            totals.bytes += out.write("".join(buffer).encode())
            buffer.clear()
            if on_progress:
                on_progress(chunk)
    totals.bytes += out.write("".join(buffer).encode())
    if on_progress:
        on_progress(totals.customers % chunk)
    totals.owners = {p.sku: n for p, n in zip(gen.products, gen.owners, strict=True) if n}
    totals.regions = {r[0]: n for r, n in zip(REGIONS, gen.regions, strict=True) if n}
    return totals
