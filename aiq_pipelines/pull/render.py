"""Staged records as the pull API serves them: the canonical record, with cost, margin and local times added."""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from aiq_pipelines.pos import records
from aiq_pipelines.pos.times import rfc3339

CENT = Decimal("0.01")


def transaction(row: sa.Row, zone: zoneinfo.ZoneInfo) -> dict[str, Any]:
    """A staged sale: its record, typed, with each line's margin at the cost of the time of sale."""
    tx = records.Transaction.model_validate_json(row.record)
    return {
        "transaction_id": tx.transaction_id,
        "location_id": tx.location_id,
        "customer_id": tx.customer_id,
        "type": "return" if tx.is_return else "sale",
        "status": "voided" if tx.is_void else "completed",
        "return_of_transaction_id": tx.return_of_transaction_id,
        "occurred_at": rfc3339(tx.transaction_at),
        "occurred_at_local": tx.transaction_at.astimezone(
            zoneinfo.ZoneInfo(tx.location_timezone) if tx.location_timezone else zone).isoformat(),
        "business_date": row.business_date,
        "updated_at": rfc3339(row.changed_at),
        "extracted_at": rfc3339(row.staged_at),
        "totals": {"subtotal": tx.subtotal, "discount": tx.discount_total, "tax": tx.tax_total, "total": tx.total},
        "lines": [
            {
                "line_number": line.line_number, "sku": line.sku, "product_id": line.product_id, "name": line.name,
                "category": line.category, "brand": line.brand, "quantity": line.quantity,
                "unit_price": line.unit_price, "discount": line.discount, "unit_cost": line.unit_cost,
                "margin": None if line.unit_cost is None
                else line.quantity * (line.unit_price - line.unit_cost) - line.discount,
            }
            for line in tx.lines
        ],
    }


def customer(row: sa.Row) -> dict[str, Any]:
    """A staged persona: what the push would send (phones and emails normalized, placeholders left out), with the
    record's creation time."""
    sent = json.loads(row.payload)
    persona = records.Persona.model_validate_json(row.record)
    birthday = sent.get("birthday")
    return {
        "customer_id": persona.customer_id,
        "customer_type": sent.get("pos_type"),
        "first_name": sent.get("first_name"),
        "last_name": sent.get("last_name"),
        "email": sent.get("email"),
        "phone": sent.get("phone_number"),
        "birthday": None if birthday is None else dt.datetime.strptime(birthday, "%m/%d/%Y").date(),
        "gender": sent.get("gender"),
        "address1": sent.get("address1"),
        "address2": sent.get("address2"),
        "city": sent.get("city"),
        "state": sent.get("state"),
        "zip": sent.get("zip"),
        "loyalty": bool(sent.get("loyalty")),
        "created_at": rfc3339(persona.created_at),
        "updated_at": rfc3339(row.changed_at),
        "extracted_at": rfc3339(row.staged_at),
    }


def inventory_items(row: sa.Row, location_id: str | None) -> list[dict[str, Any]]:
    """A staged product as one item per store that stocks it (only ``location_id``'s when given)."""
    item = records.InventoryItem.model_validate_json(row.record)
    items = []
    for stock in item.stock:
        if location_id is not None and stock.location_id != location_id:
            continue
        cost = stock.unit_cost if stock.unit_cost is not None else item.unit_cost
        margin = None if cost is None else item.unit_price - cost
        items.append({
            "product_id": item.product_id, "sku": item.sku, "name": item.name, "category": item.category,
            "brand": item.brand, "location_id": stock.location_id, "location_name": stock.location_name,
            "stock": stock.quantity, "unit_cost": cost, "price": item.unit_price, "margin": margin,
            "margin_percent": None if margin is None or item.unit_price == 0
            else (margin / item.unit_price * 100).quantize(CENT),
            "as_of": rfc3339(row.staged_at),
        })
    return items
