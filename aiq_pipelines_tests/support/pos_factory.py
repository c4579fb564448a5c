"""Hand-made POS rows for tests: receipts whose totals reconcile unless a test breaks them on purpose."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from aiq_pipelines.db.engines import engine_for
from aiq_pipelines.pos.reference import create_reference_schema

EPOCH = dt.datetime(2025, 1, 1)


class PosFactory:
    def __init__(self, url: str):
        self.url = url
        self.engine = engine_for(url)
        create_reference_schema(self.engine)
        self.add_location("STORE-01", "Muffins Denver")
        self.add_product("P1", sku="SKU-1", name="Blue Dream 3.5g", unit_price="45.00", unit_cost="20.00")
        self.add_product("P2", sku="SKU-2", name="Gummies 100mg", unit_price="18.00", unit_cost="7.50")

    def insert(self, table: str, **row: Any) -> None:
        # Timestamps as SQLite writes them itself: "YYYY-MM-DD HH:MM:SS", UTC.
        row = {k: f"{v:%Y-%m-%d %H:%M:%S}" if isinstance(v, dt.datetime) else v for k, v in row.items()}
        columns = ", ".join(row)
        params = ", ".join(f":{k}" for k in row)
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"INSERT INTO {table} ({columns}) VALUES ({params})"), row)

    def execute(self, sql: str, **params: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(sql), params)

    def add_location(self, location_id: str, name: str, timezone: str = "America/Denver") -> None:
        self.insert("locations", location_id=location_id, name=name, timezone=timezone)

    def add_product(self, product_id: str, *, sku: str, name: str, unit_price: str, unit_cost: str | None = None,
                    **extra: Any) -> None:
        self.insert("products", product_id=product_id, sku=sku, name=name, unit_price=unit_price,
                    unit_cost=unit_cost, created_at=EPOCH, last_modified_at=EPOCH, **extra)

    def add_customer(self, customer_id: str, *, modified: dt.datetime = EPOCH, **fields: Any) -> None:
        row = {"first_name": "Ada", "last_name": "Lovelace", "is_loyalty_member": False, **fields}
        self.insert("customers", customer_id=customer_id, created_at=min(EPOCH, modified), last_modified_at=modified, **row)

    def add_sale(
        self,
        transaction_id: str,
        at: dt.datetime,
        lines: list[tuple[str, str, str]] | None = None,
        *,
        customer_id: str | None = None,
        location_id: str = "STORE-01",
        tax_rate: str = "0.15",
        modified: dt.datetime | None = None,
        total_adjustment: str = "0",
        **extra: Any,
    ) -> Decimal:
        """A receipt at UTC ``at`` with lines (product_id, quantity, unit_price); returns its total."""
        lines = lines if lines is not None else [("P1", "1", "45.00")]
        net = sum((Decimal(q) * Decimal(p) for _, q, p in lines), Decimal(0))
        tax = (net * Decimal(tax_rate)).quantize(Decimal("0.01"))
        total = net + tax + Decimal(total_adjustment)
        self.insert(
            "transactions", transaction_id=transaction_id, location_id=location_id, customer_id=customer_id,
            transaction_at=at, subtotal=str(net), discount_total="0", tax_total=str(tax), total=str(total),
            last_modified_at=modified or at, **extra,
        )
        for number, (product_id, quantity, price) in enumerate(lines, start=1):
            self.insert("transaction_items", transaction_id=transaction_id, line_number=number,
                        product_id=product_id, quantity=quantity, unit_price=price)
        return total
