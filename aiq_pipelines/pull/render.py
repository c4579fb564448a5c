"""Staged records as the pull API serves them: the canonical record, with cost, margin and local times added.

Records are read as the extract stored them (decimals as the exact strings the POS gave), not validated again: the
extract validated them. A sale is decoded by msgspec into the fields it serves only (a stored line carries a dozen
more) and encoded back from those structs, so a page of a thousand sales builds no dict per sale or line
(bench/RESULTS.md, "Pull API").
"""

from __future__ import annotations

import datetime as dt
import functools
import zoneinfo
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import msgspec
import orjson
import sqlalchemy as sa

from aiq_pipelines.pos import records
from aiq_pipelines.pos.times import as_utc, rfc3339
from aiq_pipelines.pull.reads import Shopper
from aiq_pipelines.sync.accounts import StoreScope

CENT = Decimal("0.01")


@functools.cache
def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


@functools.lru_cache(maxsize=1024)
def _stamp(value: dt.datetime) -> str:
    # The rows of one extract share their changed_at and staged_at: a page formats a handful of distinct values.
    return rfc3339(value)


class _Line(msgspec.Struct, kw_only=True, gc=False):
    """A stored line's served fields, in the order served; ``margin`` is computed, never read."""

    line_number: int
    sku: str
    product_id: str
    name: str
    category: str | None = None
    brand: str | None = None
    quantity: str
    unit_price: str
    discount: str | None = None
    unit_cost: str | None = None
    margin: str | None = None


class _StoredSale(msgspec.Struct, gc=False):
    """The fields of a stored sale (``records.Transaction`` as JSON) that a served one is made of."""

    transaction_id: str
    location_id: str
    subtotal: str
    total: str
    discount_total: str
    tax_total: str
    lines: list[_Line]
    customer_id: str | None = None
    is_return: bool = False
    is_void: bool = False
    return_of_transaction_id: str | None = None
    location_timezone: str | None = None


class _Totals(msgspec.Struct, gc=False):
    subtotal: str
    discount: str
    tax: str
    total: str


class _Sale(msgspec.Struct, gc=False):
    """A served sale (``models.Transaction``), fields in the order served."""

    transaction_id: str
    location_id: str
    customer_id: str | None
    type: str
    status: str
    return_of_transaction_id: str | None
    occurred_at: str
    occurred_at_local: str
    business_date: str
    updated_at: str
    extracted_at: str
    totals: _Totals
    lines: list[_Line]


_stored_sale = msgspec.json.Decoder(_StoredSale)
_encoder = msgspec.json.Encoder()


@functools.lru_cache(maxsize=8192)
def _margin(quantity: str, unit_price: str, cost: str, discount: str) -> str:
    # Lines repeat a product's price, cost and quantity: most margins of a page are ones already computed.
    return str(Decimal(quantity) * (Decimal(unit_price) - Decimal(cost)) - Decimal(discount))


def transaction(row: sa.Row, zone: zoneinfo.ZoneInfo) -> _Sale:
    """A staged sale: its record with each line's margin at the cost of the time of sale (``transactions`` encodes
    it)."""
    tx = _stored_sale.decode(row.record)
    for line in tx.lines:
        if not line.discount:
            line.discount = "0"
        if line.unit_cost is not None:
            line.margin = _margin(line.quantity, line.unit_price, line.unit_cost, line.discount)
    local = _zone(tx.location_timezone) if tx.location_timezone else zone
    return _Sale(
        tx.transaction_id, tx.location_id, tx.customer_id, "return" if tx.is_return else "sale",
        "voided" if tx.is_void else "completed", tx.return_of_transaction_id, rfc3339(row.transaction_at),
        as_utc(row.transaction_at).astimezone(local).isoformat(), row.business_date.isoformat(),
        _stamp(row.changed_at), _stamp(row.staged_at),
        _Totals(tx.subtotal, tx.discount_total, tx.tax_total, tx.total), tx.lines,
    )


def transactions(rows: Sequence[sa.Row], zone: zoneinfo.ZoneInfo) -> orjson.Fragment:
    """Staged sales rendered (``transaction``) as one JSON array, to be embedded as it is in a page's body."""
    return orjson.Fragment(_encoder.encode([transaction(row, zone) for row in rows]))


def _person(customer_id: str, payload: bytes, created_at: str | None, changed_at: dt.datetime | None,
            staged_at: dt.datetime) -> dict[str, Any]:
    sent = orjson.loads(payload)
    birthday = sent.get("birthday")  # AIQ's MM/DD/YYYY
    return {
        "customer_id": customer_id,
        "customer_type": sent.get("pos_type"),
        "first_name": sent.get("first_name"),
        "last_name": sent.get("last_name"),
        "email": sent.get("email"),
        "phone": sent.get("phone_number"),
        "birthday": None if birthday is None else f"{birthday[6:10]}-{birthday[0:2]}-{birthday[3:5]}",
        "gender": sent.get("gender"),
        "address1": sent.get("address1"),
        "address2": sent.get("address2"),
        "city": sent.get("city"),
        "state": sent.get("state"),
        "zip": sent.get("zip"),
        "loyalty": bool(sent.get("loyalty")),
        "created_at": created_at,
        "updated_at": None if changed_at is None else _stamp(changed_at),
        "extracted_at": _stamp(staged_at),
    }


def _created_at(record: str) -> str:
    return rfc3339(dt.datetime.fromisoformat(orjson.loads(record)["created_at"]))


def customer(row: sa.Row) -> dict[str, Any]:
    """A staged persona: what the push would send (phones and emails normalized, placeholders left out), with the
    record's creation time."""
    return _person(row.customer_id, row.payload, _created_at(row.record), row.changed_at, row.staged_at)


def shopper(found: Shopper) -> dict[str, Any]:
    """A customer a page's sales name, in their newest staged version."""
    return _person(found.customer_id, found.payload, None if found.record is None else _created_at(found.record),
                   found.changed_at, found.staged_at)


def inventory_items(row: sa.Row, scope: StoreScope, location_id: str | None) -> list[dict[str, Any]]:
    """A staged product as one item per store that stocks it, of the scope's stores only (only ``location_id``'s when
    given); empty when none of them stocks it."""
    item = scope.product(records.InventoryItem.model_validate_json(row.record))
    if item is None:
        return []
    items = []
    for stock in item.stock:
        if location_id is not None and stock.location_id != location_id:
            continue
        cost = stock.unit_cost if stock.unit_cost is not None else item.unit_cost
        margin = None if cost is None else item.unit_price - cost
        items.append({
            "product_id": item.product_id, "sku": item.sku, "name": item.name, "category": item.category,
            "brand": item.brand, "location_id": stock.location_id, "location_name": stock.location_name,
            "stock": str(stock.quantity), "unit_cost": None if cost is None else str(cost),
            "price": str(item.unit_price), "margin": None if margin is None else str(margin),
            "margin_percent": None if margin is None or item.unit_price == 0
            else str((margin / item.unit_price * 100).quantize(CENT)),
            "as_of": rfc3339(row.staged_at),
        })
    return items
