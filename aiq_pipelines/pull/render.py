"""Staged records as the pull API serves them: the canonical record, with cost, margin and local times added.

Records are read with orjson as the extract stored them (decimals as the exact strings the POS gave), not validated
again: the extract validated them, and a page of a thousand sales is rendered in the time pydantic takes for a few
hundred (bench/RESULTS.md, "Pull API").
"""

from __future__ import annotations

import datetime as dt
import functools
import zoneinfo
from decimal import Decimal
from typing import Any

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


def _line(line: dict[str, Any]) -> dict[str, Any]:
    cost = line.get("unit_cost")
    margin = None
    if cost is not None:
        margin = str(Decimal(line["quantity"]) * (Decimal(line["unit_price"]) - Decimal(cost))
                     - Decimal(line.get("discount") or 0))
    return {
        "line_number": line["line_number"], "sku": line["sku"], "product_id": line["product_id"], "name": line["name"],
        "category": line.get("category"), "brand": line.get("brand"), "quantity": line["quantity"],
        "unit_price": line["unit_price"], "discount": line.get("discount") or "0", "unit_cost": cost, "margin": margin,
    }


def transaction(row: sa.Row, zone: zoneinfo.ZoneInfo) -> dict[str, Any]:
    """A staged sale: its record with each line's margin at the cost of the time of sale."""
    tx = orjson.loads(row.record)
    at = as_utc(row.transaction_at)
    local = _zone(tx["location_timezone"]) if tx.get("location_timezone") else zone
    return {
        "transaction_id": tx["transaction_id"],
        "location_id": tx["location_id"],
        "customer_id": tx.get("customer_id"),
        "type": "return" if tx.get("is_return") else "sale",
        "status": "voided" if tx.get("is_void") else "completed",
        "return_of_transaction_id": tx.get("return_of_transaction_id"),
        "occurred_at": rfc3339(at),
        "occurred_at_local": at.astimezone(local).isoformat(),
        "business_date": row.business_date.isoformat(),
        "updated_at": _stamp(row.changed_at),
        "extracted_at": _stamp(row.staged_at),
        "totals": {"subtotal": tx["subtotal"], "discount": tx["discount_total"], "tax": tx["tax_total"],
                   "total": tx["total"]},
        "lines": [_line(line) for line in tx["lines"]],
    }


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
