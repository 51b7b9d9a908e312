"""The "why you are receiving this" line, in the customer's language.

``Impact.reason`` stays the neutral ledger text for operators; customers read this
sentence, built from the same facts.
"""

from __future__ import annotations

from preaviso.render.dates import long_date
from preaviso.schemas.events import Locale
from preaviso.schemas.records import Impact, ImpactKind


def explain(impact: Impact, locale: Locale) -> str:
    if impact.kind is ImpactKind.DISCONTINUATION and impact.products:
        p = impact.products[0]
        bought = long_date(p.purchase_date, locale)
        if locale is Locale.ES:
            return (
                f"usted compró {p.product_name} (ref. {p.sku}) el {bought}, "
                "un modelo que deja de fabricarse."
            )
        return (
            f"you bought {p.product_name} (SKU {p.sku}) on {bought}, "
            "a model that is being discontinued."
        )
    if impact.kind is ImpactKind.POLICY_CHANGE:
        if impact.scope_region:
            if locale is Locale.ES:
                return (
                    "este cambio se aplica a los clientes de su zona "
                    f"({impact.scope_region}), y usted es uno de ellos."
                )
            return f"this change applies to customers in your region ({impact.scope_region})."
        if locale is Locale.ES:
            return "este cambio se aplica a todos nuestros clientes."
        return "this change applies to all our customers."
    return impact.reason
