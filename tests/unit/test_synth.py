"""`preaviso synth`: reproducible, realistic, and exactly the contracts' wire format."""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import date
from pathlib import Path

import pytest
from pydantic import TypeAdapter
from typer.testing import CliRunner

from preaviso.cli import app
from preaviso.devtools import dataset
from preaviso.schemas.events import CustomerUpserted, OwnershipRecorded, UpstreamEvent
from preaviso.streams.codecs import encode
from preaviso.synth import REGIONS, SynthSpec, Totals, catalogue, write

ADAPTER: TypeAdapter[UpstreamEvent] = TypeAdapter(UpstreamEvent)


def synth(customers: int, **options: float) -> tuple[bytes, Totals]:
    buffer = io.BytesIO()
    totals = write(SynthSpec(customers, **options), buffer)  # type: ignore[arg-type]
    return buffer.getvalue(), totals


SMALL, SMALL_TOTALS = synth(2000)
BIG, BIG_TOTALS = synth(20_000)


def test_the_same_seed_gives_the_same_bytes_and_another_seed_does_not() -> None:
    again, _ = synth(2000)
    other, _ = synth(2000, seed=8)
    assert again == SMALL
    assert other != SMALL


def test_every_line_is_exactly_what_the_contracts_encoder_writes() -> None:
    lines = SMALL.splitlines()
    assert len(lines) == SMALL_TOTALS.lines == SMALL.count(b"\n")
    for line in lines:
        assert encode(ADAPTER.validate_json(line)) == line


def test_each_customer_comes_before_their_ownerships() -> None:
    seen: set[str] = set()
    for line in SMALL.splitlines():
        event = ADAPTER.validate_json(line)
        if isinstance(event, CustomerUpserted):
            assert event.customer_id not in seen
            seen.add(event.customer_id)
        else:
            assert isinstance(event, OwnershipRecorded)
            assert event.customer_id in seen
            assert event.event_id == f"own-{event.customer_id}-{event.sku}"
    assert len(seen) == 2000


def test_purchases_are_skewed_over_skus_with_the_demo_dishwasher_on_top() -> None:
    owners = Counter(BIG_TOTALS.owners)
    (top, most), *_ = owners.most_common(1)
    assert top == "DW400-W"
    # About 50,000 owners at a million customers: 1/60 of the ownerships.
    assert 0.012 < most / BIG_TOTALS.ownerships < 0.022
    ranked = [n for _, n in owners.most_common()]
    head = sum(ranked[: len(catalogue()) // 10])
    assert head / BIG_TOTALS.ownerships > 0.35  # a tenth of the SKUs, over a third of sales
    assert ranked[-1] < most / 50  # and a long tail


def test_about_three_ownerships_per_customer_by_default() -> None:
    assert 2.8 < BIG_TOTALS.ownerships / BIG_TOTALS.customers < 3.1
    _, none = synth(100, ownerships_per_customer=0)
    assert none.ownerships == 0
    _, many = synth(1000, ownerships_per_customer=10)
    assert 9 < many.ownerships / many.customers < 10.5


def test_customers_spread_over_regions_locales_segments_and_consents() -> None:
    customers = [
        json.loads(line) for line in BIG.splitlines() if b'"type":"CustomerUpserted"' in line
    ]
    assert {c["region"] for c in customers} == {r for r, _, _ in REGIONS}
    assert set(dataset.REGIONS) <= {r for r, _, _ in REGIONS}
    assert all(c["locale"] == "en" for c in customers if c["region"].startswith("GB"))
    spanish = [c for c in customers if c["region"].startswith("ES")]
    assert 0.8 < sum(c["locale"] == "es" for c in spanish) / len(spanish) < 0.99
    assert {c["segment"] for c in customers} == {"consumer", "business", "premium"}
    consent = sum(c["marketing_consent"] for c in customers) / len(customers)
    assert 0.3 < consent < 0.55
    assert len({c["email"] for c in customers}) == len(customers)
    assert sum(BIG_TOTALS.regions.values()) == BIG_TOTALS.customers


def test_purchase_dates_spread_over_years_inside_each_products_sale_window() -> None:
    products = {p.sku: p for p in catalogue()}
    years: Counter[int] = Counter()
    for line in BIG.splitlines()[:20_000]:
        doc = json.loads(line)
        if doc["type"] == "OwnershipRecorded":
            day = date.fromisoformat(doc["purchase_date"])
            product = products[doc["sku"]]
            assert product.name == doc["product_name"]
            start = product.on_sale_from
            assert start <= day.toordinal() < start + product.on_sale_days
            years[day.year] += 1
    assert len(years) >= 8


def test_the_catalogue_leads_with_the_demo_products_and_has_unique_skus() -> None:
    skus = [p.sku for p in catalogue()]
    assert len(skus) == len(set(skus)) > 1000
    assert {sku for sku, _ in dataset.PRODUCTS} <= set(skus)
    assert skus[:2] == dataset.DISHWASHER_SKUS


def test_the_cli_writes_the_file_and_summarises_on_stderr(tmp_path: Path) -> None:
    target = tmp_path / "directory.jsonl"

    result = CliRunner().invoke(app, ["synth", "--customers", "2000", "--out", str(target)])

    assert result.exit_code == 0, result.output
    assert target.read_bytes() == SMALL
    assert f"wrote 2,000 customers and {SMALL_TOTALS.ownerships:,} ownerships" in result.stderr
    assert "most owned SKUs: DW400-W" in result.stderr


def test_the_cli_writes_to_standard_output() -> None:
    result = CliRunner().invoke(app, ["synth", "--customers", "2000", "--out", "-"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes == SMALL


def test_an_unwritable_target_is_a_clear_error(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "directory.jsonl"
    result = CliRunner().invoke(app, ["synth", "--customers", "10", "--out", str(target)])
    assert result.exit_code == 1
    assert f"cannot write {target}" in result.stderr


@pytest.mark.parametrize("option", ["--customers", "--ownerships-per-customer"])
def test_negative_sizes_are_refused(option: str) -> None:
    result = CliRunner().invoke(app, ["synth", option, "-1", "--out", "-"])
    assert result.exit_code == 2
