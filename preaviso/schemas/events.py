"""Contracts of the events upstream systems publish."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, model_validator

from preaviso.schemas.base import Contract, Email, Event, Identifier, Line, Text


class Locale(StrEnum):
    ES = "es"
    EN = "en"


class CustomerUpserted(Event):
    """A customer was created or changed; the newest one per id wins."""

    type: Literal["CustomerUpserted"] = "CustomerUpserted"
    customer_id: Identifier
    email: Email
    name: Line
    locale: Locale = Locale.ES
    region: Identifier
    segment: Identifier = "consumer"
    marketing_consent: bool = False


class OwnershipRecorded(Event):
    """A customer bought (owns) a product identified by its SKU."""

    type: Literal["OwnershipRecorded"] = "OwnershipRecorded"
    customer_id: Identifier
    sku: Identifier
    product_name: Line
    purchase_date: date


class ProductDiscontinued(Event):
    """A model is discontinued: its owners must hear when parts and orders end."""

    type: Literal["ProductDiscontinued"] = "ProductDiscontinued"
    skus: Annotated[list[Identifier], Field(min_length=1, max_length=1000)]
    model_name: Line
    effective_date: date
    last_order_date: date | None = None
    spare_parts_until: date | None = None
    replacement_offer: Text | None = None

    @model_validator(mode="after")
    def _dates_in_order(self) -> ProductDiscontinued:
        if self.last_order_date and self.last_order_date > self.effective_date:
            raise ValueError("last_order_date must not be after effective_date")
        if len(set(self.skus)) != len(self.skus):
            raise ValueError("skus must not repeat")
        return self


class PolicyKind(StrEnum):
    WARRANTY = "warranty"
    RETURNS = "returns"
    BILLING = "billing"
    BUSINESS_HOURS = "business_hours"
    OTHER = "other"


class PolicyScope(Contract):
    """Who a policy change applies to: everyone, or the customers of some regions."""

    all_customers: bool = False
    regions: Annotated[list[Identifier], Field(max_length=500)] = []

    @model_validator(mode="after")
    def _exactly_one(self) -> PolicyScope:
        if self.all_customers == bool(self.regions):
            raise ValueError("set either all_customers=true or a non-empty list of regions")
        return self


class PolicyChanged(Event):
    """A policy changes on a date; customers in scope get the legal minimum notice."""

    type: Literal["PolicyChanged"] = "PolicyChanged"
    policy_id: Identifier
    kind: PolicyKind
    title: Line
    scope: PolicyScope
    old_terms: Text
    new_terms: Text
    effective_date: date
    required_notice_days: Annotated[int, Field(ge=0, le=3650)] = 30


UpstreamEvent = Annotated[
    CustomerUpserted | OwnershipRecorded | ProductDiscontinued | PolicyChanged,
    Field(discriminator="type"),
]
"""Any event a publisher may send, told apart by its ``type`` field."""
