"""A reproducible customer directory and two announcements for the demo and the tests."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

from preaviso.schemas.events import (
    CustomerUpserted,
    Locale,
    OwnershipRecorded,
    PolicyChanged,
    PolicyKind,
    PolicyScope,
    ProductDiscontinued,
)

FIRST = [
    "Ana",
    "José",
    "Lucía",
    "Martín",
    "Núria",
    "Pablo",
    "Sofía",
    "Iñigo",
    "Emma",
    "Oliver",
    "Carmen",
    "Javier",
    "Olivia",
    "Jack",
    "María José",
    "Raúl",
]
LAST = [
    "García",
    "Núñez",
    "Pérez",
    "Sánchez",
    "O'Brien",
    "Smith",
    "Fernández",
    "Muñoz",
    "Jones",
    "Ibáñez",
    "Castro",
    "Taylor",
]
FIRST_EN = ("Emma", "Oliver", "Olivia", "Jack")
"""The English first names of ``FIRST``; the others are Spanish."""
LAST_EN = ("O'Brien", "Smith", "Jones", "Taylor")
"""The English surnames of ``LAST``; the others are Spanish."""
REGIONS = ["ES-MD", "ES-CT", "ES-AN", "ES-VC", "ES-PV", "GB-LND"]
PRODUCTS = [
    ("DW400-W", "Lavavajillas Serie 4 DW-400 blanco"),
    ("DW400-S", "Lavavajillas Serie 4 DW-400 inox"),
    ("WM700", "Lavadora WM-700"),
    ("FR220", "Frigorífico combi FR-220"),
    ("OV90", "Horno OV-90"),
]
DISHWASHER_SKUS = ["DW400-W", "DW400-S"]


def directory(count: int, seed: int = 7) -> tuple[list[CustomerUpserted], list[OwnershipRecorded]]:
    """``count`` customers, each owning zero to three products."""
    rng = random.Random(seed)
    stamp = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    customers: list[CustomerUpserted] = []
    ownerships: list[OwnershipRecorded] = []
    for i in range(count):
        cid = f"C{i:07d}"
        region = rng.choice(REGIONS)
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        customers.append(
            CustomerUpserted(
                event_id=f"cust-{cid}",
                occurred_at=stamp,
                source="crm",
                customer_id=cid,
                email=f"customer{i}@example.com",
                name=name,
                locale=Locale.EN if region.startswith("GB") or rng.random() < 0.15 else Locale.ES,
                region=region,
                segment=rng.choice(["consumer", "consumer", "business"]),
                marketing_consent=rng.random() < 0.4,
            )
        )
        for sku, product in rng.sample(PRODUCTS, rng.randint(0, 3)):
            ownerships.append(
                OwnershipRecorded(
                    event_id=f"own-{cid}-{sku}",
                    occurred_at=stamp,
                    source="shop",
                    customer_id=cid,
                    sku=sku,
                    product_name=product,
                    purchase_date=date(2022, 1, 1) + timedelta(days=rng.randint(0, 1400)),
                )
            )
    return customers, ownerships


def dishwasher_discontinued(event_id: str = "disc-dw400-2026") -> ProductDiscontinued:
    return ProductDiscontinued(
        event_id=event_id,
        source="product-catalog",
        skus=DISHWASHER_SKUS,
        model_name="Lavavajillas Serie 4 DW-400",
        effective_date=date(2027, 3, 1),
        last_order_date=date(2027, 2, 15),
        spare_parts_until=date(2029, 3, 1),
        replacement_offer="15% de descuento en el nuevo DW-500 con el código DW500-AVISO.",
    )


def warranty_change(event_id: str = "policy-warranty-2027") -> PolicyChanged:
    return PolicyChanged(
        event_id=event_id,
        source="legal",
        policy_id="warranty-extension-2027",
        kind=PolicyKind.WARRANTY,
        title="Garantía ampliada a 3 años",
        scope=PolicyScope(regions=["ES-CT", "ES-AN"]),
        old_terms="Garantía de 2 años en todos los electrodomésticos.",
        new_terms="Garantía de 3 años en todos los electrodomésticos, con recogida a domicilio.",
        effective_date=date(2027, 4, 1),
        required_notice_days=30,
    )


def policy_for_everyone(event_id: str, policy_id: str | None = None) -> PolicyChanged:
    """A policy change for all customers: every customer in the directory is owed a notice."""
    return PolicyChanged(
        event_id=event_id,
        source="legal",
        policy_id=policy_id or event_id,
        kind=PolicyKind.BUSINESS_HOURS,
        title="Nuevo horario de atención",
        scope=PolicyScope(all_customers=True),
        old_terms="De lunes a viernes, de 9 a 18 h.",
        new_terms="De lunes a sábado, de 8 a 20 h.",
        effective_date=date(2027, 5, 1),
        required_notice_days=30,
    )
