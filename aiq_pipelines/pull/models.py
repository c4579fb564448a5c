"""The pull API's response bodies. Money and quantities are decimal strings (exact, as the POS holds them);
timestamps are RFC 3339 in UTC with ``Z``; a business date is the store's local date."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field


class Error(BaseModel):
    """Every refusal: what was wrong, naming the parameter (never the value given) and what it expects."""

    error: str


class Location(BaseModel):
    location_id: str
    name: str
    timezone: str = Field(description="IANA time zone that defines the store's business day.")


class Locations(BaseModel):
    data: list[Location]


class TransactionLine(BaseModel):
    line_number: int
    sku: str
    product_id: str
    name: str
    category: str | None
    brand: str | None
    quantity: Decimal = Field(description="Negative on a return.")
    unit_price: Decimal
    discount: Decimal
    unit_cost: Decimal | None = Field(description="The unit cost at the time of sale; null when the POS has none.")
    margin: Decimal | None = Field(description="quantity × (unit_price − unit_cost) − discount; null without a cost.")


class Totals(BaseModel):
    subtotal: Decimal
    discount: Decimal
    tax: Decimal
    total: Decimal


class Transaction(BaseModel):
    transaction_id: str
    location_id: str
    customer_id: str | None = Field(description="Null for an anonymous walk-in.")
    type: Literal["sale", "return"]
    status: Literal["completed", "voided"]
    return_of_transaction_id: str | None
    occurred_at: str = Field(description="When the sale was rung, UTC (RFC 3339, Z).")
    occurred_at_local: str = Field(description="The same moment in the store's time zone, with its offset.")
    business_date: dt.date
    updated_at: str = Field(description="When this version reached the sync database: the watermark's clock.")
    extracted_at: str = Field(description="When the sale's business day was last extracted from the POS.")
    totals: Totals
    lines: list[TransactionLine]


class Customer(BaseModel):
    customer_id: str
    customer_type: str | None
    first_name: str | None
    last_name: str | None
    email: str | None = Field(description="Lower case; null when the POS's is not a valid address.")
    phone: str | None = Field(description="10 US digits, normalized as for AIQ; invalid and placeholder numbers null.")
    birthday: dt.date | None
    gender: str | None
    address1: str | None
    address2: str | None
    city: str | None
    state: str | None
    zip: str | None
    loyalty: bool
    created_at: str | None = Field(description="When the customer was created in the POS; null for a customer included "
                                               "with a sale whose own record the extract has not staged.")
    updated_at: str | None = Field(description="When this version reached the sync database: the watermark's clock; "
                                               "null for a customer included with a sale as that sale's extract staged "
                                               "them.")
    extracted_at: str = Field(description="When this version was read from the POS.")


class InventoryItem(BaseModel):
    product_id: str
    sku: str
    name: str
    category: str | None
    brand: str | None
    location_id: str
    location_name: str
    stock: Decimal
    unit_cost: Decimal | None
    price: Decimal
    margin: Decimal | None = Field(description="price − unit_cost; null without a cost.")
    margin_percent: Decimal | None = Field(description="margin ÷ price × 100, 2 decimals; null without cost or price.")
    as_of: str = Field(description="When the inventory snapshot was taken.")


class Window(BaseModel):
    """The window a page belongs to, as the service applied it: half-open, [since, before)."""

    updated_since: str | None
    updated_before: str = Field(description="The upper bound, clamped to now minus the settle lag; fixed by cursor.")
    occurred_from: str | None = None
    occurred_to: str | None = None
    location_id: str | None = None


class Page(BaseModel):
    window: Window
    high_watermark: str = Field(description="Store it, and pass it as updated_since next time.")
    next_cursor: str | None = Field(description="Pass it as cursor for the next page; null on the last page.")
    held_back: int = Field(description="Records of the window in quarantine (not valid yet), so not served.")


class TransactionPage(Page):
    data: list[Transaction]
    customers: list[Customer] | None = Field(
        None, description="With include=customers: every customer this page's sales name, once, in their newest "
                          "staged version; absent otherwise.")


class CustomerPage(Page):
    data: list[Customer]


class InventoryPage(BaseModel):
    data: list[InventoryItem]
    as_of: str | None
    next_cursor: str | None
