"""Canonical POS records: the one place where POS rows become typed records.

A source yields flat rows (dicts keyed by the column names of the reference schema's extract queries).
``build_transaction``, ``build_persona`` and ``build_inventory_item`` turn the rows of one record into a
validated model, or raise ``RecordRejected`` with a reason that is safe to show: it names fields and rules,
never values, so no phone number or email leaks into metadata or logs.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from aiq_pipelines.db.hashing import digest
from aiq_pipelines.pos.times import as_utc

RECONCILE_TOLERANCE = Decimal("0.01")


# pydantic's Decimal refuses NaN and infinities itself ("Input should be a finite number"), from text or a float.
Money = Decimal
Quantity = Decimal
OptionalText = Annotated[str | None, AfterValidator(lambda v: v.strip() or None if isinstance(v, str) else v)]


UtcDatetime = Annotated[dt.datetime, AfterValidator(as_utc)]  # POS timestamps are UTC; naive values mean UTC


class RecordRejected(ValueError):
    """A POS record that cannot be staged. ``reason`` is safe to show in the UI (no personal data)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _Record(BaseModel):
    # A POS with integer ids or numeric phone columns (or a custom query's CAST) returns numbers for text fields.
    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=True, coerce_numbers_to_str=True)

    def content_hash(self) -> str:
        """A stable digest of the record's content, used to tell changed records from unchanged ones."""
        return digest(self.model_dump_json())


class TransactionLine(_Record):
    line_number: int
    product_id: str = Field(min_length=1)
    sku: str = Field(min_length=1)
    name: str = Field(min_length=1)
    brand: OptionalText = None
    category: OptionalText = None
    parent_category: OptionalText = None
    strain: OptionalText = None
    species: OptionalText = None
    grade: OptionalText = None
    size: OptionalText = None
    quantity: Quantity
    unit_price: Money
    discount: Money = Decimal(0)
    unit_cost: Money | None = None

    @property
    def net(self) -> Decimal:
        return self.quantity * self.unit_price - self.discount


class Transaction(_Record):
    """A receipt with its lines. Returns are their own transactions with negative quantities."""

    transaction_id: str = Field(min_length=1)
    location_id: str = Field(min_length=1)
    location_name: str = Field(min_length=1)
    location_timezone: OptionalText = None  # the store's IANA zone, its business day's; None means POS_TIMEZONE
    customer_id: OptionalText = None
    customer_type: OptionalText = None
    transaction_at: UtcDatetime
    subtotal: Money
    discount_total: Money = Decimal(0)
    tax_total: Money = Decimal(0)
    total: Money
    is_return: bool = False
    return_of_transaction_id: OptionalText = None
    is_void: bool = False
    employee_id: OptionalText = None
    last_modified_at: UtcDatetime
    lines: tuple[TransactionLine, ...]


class Persona(_Record):
    """A POS customer, AIQ's persona. Phone and email stay as typed; the AIQ mapping normalizes them."""

    customer_id: str = Field(min_length=1)
    customer_type: OptionalText = None
    first_name: OptionalText = None
    last_name: OptionalText = None
    email: OptionalText = None
    phone: OptionalText = None
    birthday: dt.date | None = None
    gender: OptionalText = None
    address1: OptionalText = None
    address2: OptionalText = None
    city: OptionalText = None
    state: OptionalText = None
    zip: OptionalText = None
    is_loyalty_member: bool = False
    created_at: UtcDatetime
    last_modified_at: UtcDatetime

    @field_validator("birthday")
    @classmethod
    def _plausible_birthday(cls, value: dt.date | None) -> dt.date | None:
        if value is not None and not (dt.date(1900, 1, 1) <= value <= dt.date.today()):
            raise ValueError("must be between 1900-01-01 and today")
        return value


class StoreStock(_Record):
    location_id: str = Field(min_length=1)
    location_name: str = Field(min_length=1)
    quantity: Quantity
    unit_cost: Money | None = None


class InventoryItem(_Record):
    """A product with its stock in every store of the account."""

    product_id: str = Field(min_length=1)
    sku: str = Field(min_length=1)
    name: str = Field(min_length=1)
    brand: OptionalText = None
    category: OptionalText = None
    parent_category: OptionalText = None
    strain: OptionalText = None
    species: OptionalText = None
    grade: OptionalText = None
    size: OptionalText = None
    barcode: OptionalText = None
    thc_percent: Decimal | None = None
    cbd_percent: Decimal | None = None
    unit_cost: Money | None = None
    unit_price: Money
    msrp: Money | None = None
    tax_rate: Decimal | None = None
    supplier_id: OptionalText = None
    supplier_name: OptionalText = None
    description: OptionalText = None
    image_url: OptionalText = None
    url: OptionalText = None
    is_saleable: bool = True
    is_archived: bool = False
    created_at: UtcDatetime
    last_modified_at: UtcDatetime
    stock: tuple[StoreStock, ...] = ()


def _reason_from(exc: ValidationError) -> str:
    """pydantic's errors without their inputs: field path and rule only."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False, include_context=False):
        where = ".".join(str(p) for p in error["loc"]) or "record"
        parts.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return "invalid value: " + "; ".join(sorted(set(parts)))


def _validate(model: type[_Record], data: Mapping[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RecordRejected(_reason_from(exc)) from None


def record_key(value: Any) -> str | None:
    """A POS key as its record spells it (``_Record`` strips text and turns numbers into text): a CHAR(n) key, which
    PostgreSQL pads with blanks, then names the same record in the quarantine, the stores looked up and an erasure as
    in staging."""
    return None if value is None else str(value).strip()


def _row(row: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    return {k.removeprefix(prefix): v for k, v in row.items() if k.startswith(prefix)}


@functools.lru_cache(maxsize=64)
def _split_columns(columns: tuple[str, ...], prefix: str) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """A query's columns split once into the record's own and its children's (prefixed), without the prefix."""
    own = tuple(c for c in columns if not c.startswith(prefix))
    children = tuple((c, c.removeprefix(prefix)) for c in columns if c.startswith(prefix))
    return own, children


def build_transaction(rows: Sequence[Mapping[str, Any]]) -> Transaction:
    """One receipt from its rows: one row per line, receipt columns repeated, line columns prefixed ``line_``.

    Record-level rules: the store and the customer must exist in the POS, every line's product must exist,
    line numbers are unique, and the lines reconcile with the receipt total within a cent.
    """
    head = rows[0]
    if not head.get("location_exists"):
        raise RecordRejected("store missing from the POS: location_id has no row in locations")
    if head.get("customer_id") not in (None, "") and not head.get("customer_exists"):
        raise RecordRejected("customer missing from the POS: customer_id has no row in customers")
    lines: list[dict[str, Any]] = []
    seen_lines: set[Any] = set()
    head_columns, line_columns = _split_columns(tuple(head), "line_")
    for row in rows:
        if row.get("line_line_number") is None and row.get("line_product_id") is None:
            continue  # a receipt without lines: LEFT JOIN yields one empty line row
        if not row.get("line_product_exists"):
            raise RecordRejected("line for an unknown product: product_id has no row in products")
        if row.get("line_line_number") in seen_lines:
            raise RecordRejected("duplicate line_number on the receipt (duplicate receipt id in the POS?)")
        seen_lines.add(row.get("line_line_number"))
        lines.append({name: row[column] for column, name in line_columns})
    if not lines:
        raise RecordRejected("receipt without lines")
    data = {column: head[column] for column in head_columns}
    data["lines"] = lines
    record: Transaction = _validate(Transaction, data)
    lines_net = sum((line.net for line in record.lines), Decimal(0))
    if abs(lines_net + record.tax_total - record.total) > RECONCILE_TOLERANCE:
        raise RecordRejected("lines do not reconcile with the receipt: sum(quantity*unit_price - discount) + tax_total != total")
    return record


def build_persona(row: Mapping[str, Any]) -> Persona:
    return _validate(Persona, _row(row))


def build_inventory_item(rows: Sequence[Mapping[str, Any]]) -> InventoryItem:
    """One product from its rows: one row per store holding stock, store columns prefixed ``stock_``."""
    product_columns, _ = _split_columns(tuple(rows[0]), "stock_")
    data = {column: rows[0][column] for column in product_columns}
    data["stock"] = [_row(r, "stock_") for r in rows if r.get("stock_location_id") is not None]
    return _validate(InventoryItem, data)
